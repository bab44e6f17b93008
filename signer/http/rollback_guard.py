"""The rollback guard: while an audit rollback found at start is unacknowledged
(``signer.services.rollback``), the high-risk routes answer 503 ``rollback_detected`` before their
handler runs; everything else (reads, the acknowledgement itself, health) goes on."""

from __future__ import annotations

from aiohttp import web

from signer.http.state import SERVICES

# (method, route) pairs refused while a rollback is unacknowledged: signing (directly or by the approval
# that completes a quorum), secret reads, and changes of who may do what.
HIGH_RISK: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/v1/keys/{key_id}/sign/transaction"),
        ("POST", "/v1/keys/{key_id}/sign/message"),
        ("POST", "/v1/keys/{key_id}/sign/typed-data"),
        ("POST", "/v1/keys/{key_id}/sign/digest"),
        ("POST", "/v1/keys/{key_id}/sign/authorization"),
        ("POST", "/v1/rpc"),  # eth_sign* and eth_signTransaction (its reads are refused too while latched)
        ("POST", "/v1/kms"),  # the KMS Sign API
        ("POST", "/v1/approvals/{approval_id}/approve"),
        ("POST", "/v1/secrets/{secret_id}/fetch"),
        ("POST", "/v1/secrets/resolve"),
        ("POST", "/v1/grants"),
        ("DELETE", "/v1/grants/{grant_id}"),
        ("PUT", "/v1/groups/{group}/members/{principal_id}"),
        ("DELETE", "/v1/groups/{group}/members/{principal_id}"),
    }
)


def refuse_if_latched(request: web.Request, method: str, route: str | None) -> None:
    """503 ``rollback_detected`` for a high-risk ``(method, route)`` while a rollback is unacknowledged.

    Called by the request middleware (``signer.app``) before the handler, as a middleware of its own
    did: a check, not a frame around every request."""
    if route is not None and (method, route) in HIGH_RISK:
        guard = request.app[SERVICES].rollback if SERVICES in request.app else None
        if guard is not None:
            guard.refuse_if_latched()
