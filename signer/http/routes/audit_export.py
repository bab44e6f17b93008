"""Filtered audit export route: JSONL or CSV, streamed, for auditors and admins (the export audited).

Thin: parse the filters, have the service record the export, stream its pages.
"""

from __future__ import annotations

import re
from datetime import datetime

from aiohttp import web
from pydantic_core import PydanticCustomError

from signer.errors import InvalidRequest, Unavailable
from signer.http.contract import Query
from signer.http.models import _timestamp
from signer.http.routes.common import api, context, services
from signer.services.audit_export import CSV_COLUMNS, ExportFilter

# The export may outlast one request deadline; the handler pages with its own bounds.
LONG_POLL_PATHS = frozenset({"/v1/audit/export", "/v1/audit/export/csv"})

_WORD = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_TIME = {"type": "string", "format": "date-time"}
_TEXT = {"type": "string", "pattern": _WORD.pattern}


def _time(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return _timestamp(text)
    except PydanticCustomError:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time with an offset", code="invalid_timestamp", field=name
        ) from None


def _word(request: web.Request, name: str) -> str | None:
    text = request.query.get(name)
    if text is not None and not _WORD.match(text):
        raise InvalidRequest(f"{name} is not a valid filter value", code="invalid_field", field=name)
    return text


_OUTCOMES = ("allowed", "denied", "refused", "failed", "pending_approval", "duplicate")
_FILTERS = (
    Query("since", _TIME, "events at or after this time"),
    Query("until", _TIME, "events before this time"),
    Query("actor", _TEXT, "the acting principal's id"),
    Query("resource_type", _TEXT, "the target resource's type (key, grant, secret, ...)"),
    Query("resource_id", _TEXT, "the target resource's id"),
    Query("action", _TEXT, "the event kind (e.g. sign.transaction) or a refused call's action"),
    Query("outcome", {"type": "string", "enum": list(_OUTCOMES)}, "the outcome"),
)
_HEAD = {
    "X-Audit-Head": {
        "description": "the newest seq when the export started (and was recorded): it stops there",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _filters(request: web.Request) -> ExportFilter:
    outcome = request.query.get("outcome")
    if outcome is not None and outcome not in _OUTCOMES:
        raise InvalidRequest("outcome is not a known outcome", code="invalid_field", field="outcome")
    return ExportFilter(
        since=_time(request, "since"),
        until=_time(request, "until"),
        actor=_word(request, "actor"),
        resource_type=_word(request, "resource_type"),
        resource_id=_word(request, "resource_id"),
        action=_word(request, "action"),
        outcome=outcome,
    )


async def _stream(request: web.Request, fmt: str, content_type: str) -> web.StreamResponse:
    ctx = await context(request)
    wanted = _filters(request)
    service = services(request).audit_export
    if service is None:
        raise Unavailable("the audit export is not running", code="audit_unavailable")
    head = await service.start(ctx, wanted, fmt)
    # Sent before the middleware sees the response: the request id goes with the head.
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "X-Audit-Head": str(head),
            "X-Request-Id": request["request_id"],
        }
    )
    await response.prepare(request)
    async for chunk in service.lines(wanted, fmt, head):
        await response.write(chunk.encode("utf-8"))
    await response.write_eof()
    return response


@api.operation(
    "GET",
    "/v1/audit/export",
    summary="Export audit records as JSONL, filtered by time, actor, resource, action and outcome (audited)",
    tag="audit",
    who="auditor, admin",
    response={"type": "string", "description": "one exported record per line, as /v1/audit/events writes it"},
    media_type="application/x-ndjson",
    headers=_HEAD,
    errors=(503,),
    query=_FILTERS,
)
async def audit_export_jsonl(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "jsonl", "application/x-ndjson")


@api.operation(
    "GET",
    "/v1/audit/export/csv",
    summary="Export audit events as CSV (one row per event, a header first), with the same filters",
    tag="audit",
    who="auditor, admin",
    response={"type": "string", "description": "CSV: " + ", ".join(CSV_COLUMNS)},
    media_type="text/csv",
    headers=_HEAD,
    errors=(503,),
    query=_FILTERS,
)
async def audit_export_csv(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "csv", "text/csv; charset=utf-8")
