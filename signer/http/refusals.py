"""Refused admin calls are audited here, once for every operation: no handler has to remember.

``signer.http.contract`` wraps every registered operation; when one of the operations this module
audits raises a refusal (any 4xx but 401 and 429) after the caller was authenticated, one
``request.refused`` event is recorded in its own small transaction (``AuditLogService.record_refusal``)
and the refusal then reaches the caller unchanged. The event names the caller, the operation
(``action``, its operation id), the target resource (its type from the route, its id from the path when
that is a plain id and the refusal is not about the input) and the error's code and status: never the
refused input (no body, no query, no message). Unauthenticated requests (401) name no actor and are only
counted in the metrics; 429 is a load signal, not a decision, and auditing it would let a flood write
the log. Operations whose service records its own refusals (with the decision and its reasons) and
read-only ones are left out: ``SERVICE_AUDITED`` and ``READ_ONLY``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from aiohttp import web

from signer.audit import ErrorRef, EventTarget
from signer.errors import SignerError
from signer.http.state import CALLER, SERVICES

log = logging.getLogger("signer.http")

# Signing and secret fetches record every refusal with its decision (the pipeline); approvals record
# refused votes (approval.vote_refused).
SERVICE_AUDITED = frozenset(
    {
        "sign_transaction",
        "sign_message",
        "sign_typed_data",
        "sign_digest",
        "sign_authorization",
        "approve",
        "reject",
        "fetch_secret",
    }
)
# POSTs that change nothing.
READ_ONLY = frozenset({"dry_run"})

_NOT_AUDITED_STATUSES = frozenset({401, 429})
# A refusal with one of these may be about the path itself: its ids are not written.
_INPUT_STATUSES = frozenset({400, 413, 415, 422})
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PARAM = re.compile(r"\{([^}]+)\}")
# A resource named by its owner's id (a group's webhook is /groups/{group}/webhook).
_SUB_RESOURCES = frozenset({"webhook"})
_COLLECTIONS = {
    "principals": "principal",
    "tokens": "token",
    "keys": "key",
    "grants": "grant",
    "approvals": "approval",
    "approvers": "approver",
    "groups": "group",
    "members": "group_member",
    "policies": "policy",
    "policy-attachments": "policy_attachment",
    "secrets": "secret",
    "versions": "secret",
}


def audits_refusals(method: str, auth: str, operation_id: str) -> bool:
    """Is a refusal of this operation audited here? Authenticated, state-changing, not self-audited."""
    return (
        auth == "bearer"
        and method.upper() not in ("GET", "HEAD")
        and operation_id not in SERVICE_AUDITED
        and operation_id not in READ_ONLY
    )


def target(path: str, match_info: Mapping[str, str], status: int) -> EventTarget:
    """The resource a route acts on: the collection before its last path parameter (or its last
    collection), with that parameter's value as id when it is a plain id and may be written."""
    segments = [s for s in path.split("/") if s and s != "v1"]
    kind, param = None, None
    for index, segment in enumerate(segments):
        found = _PARAM.fullmatch(segment)
        if found and index > 0:
            kind, param = segments[index - 1], found.group(1)
            following = segments[index + 1] if index + 1 < len(segments) else None
            if following in _SUB_RESOURCES:
                kind = following
    if kind is None:
        kind = next((s for s in reversed(segments) if s in _COLLECTIONS), segments[0] if segments else "")
    value = match_info.get(param) if param is not None else None
    if value is not None and (status in _INPUT_STATUSES or not _PLAIN_ID.fullmatch(value)):
        value = None
    return EventTarget(_COLLECTIONS.get(kind, kind.replace("-", "_")), value)


async def record_refusal(request: web.Request, operation_id: str, path: str, exc: SignerError) -> None:
    """Audit ``exc`` refusing ``operation_id`` if it is a refusal of an authenticated caller.

    A failure to write the event is logged and swallowed: the refusal changed nothing, and the caller
    must still hear why it was refused.
    """
    ctx = request.get(CALLER)
    if ctx is None or not 400 <= exc.status < 500 or exc.status in _NOT_AUDITED_STATUSES:
        return
    resource = target(path, request.match_info, exc.status)
    try:
        await request.app[SERVICES].audit.record_refusal(
            ctx, action=operation_id, resource=resource, error=ErrorRef(exc.code, exc.status)
        )
    except SignerError as failure:
        log.warning(
            "a refusal could not be audited",
            extra={"request_id": ctx.request_id, "code": failure.code, "action": operation_id},
        )
