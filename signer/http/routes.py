"""The API's routes: each handler parses, calls one service method and renders JSON.

Authentication happens here (``bearer`` turns the Authorization header into a request context through the
auth service); everything else, including role checks, is the services' job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from signer.errors import InvalidRequest
from signer.http.body import parse_body
from signer.http.models import (
    ApproverKeyBody,
    CreateGrantBody,
    CreateKeyBody,
    CreatePrincipalBody,
    PrincipalStateBody,
    RefreshBody,
    SignDigestBody,
    SignMessageBody,
    SignTransactionBody,
    SignTypedDataBody,
    VoteBody,
    WebhookBody,
)
from signer.http.state import SERVICES, SETTINGS, Services
from signer.services.approvals import MAX_WAIT_SECONDS
from signer.services.context import RequestContext
from signer.services.signing import Idempotency

routes = web.RouteTableDef()

# Routes whose handler may wait on purpose (bounded by the handler), beyond the request deadline.
LONG_POLL_ROUTES = frozenset({"approval_result"})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _max_body(request: web.Request) -> int:
    return request.app[SETTINGS].max_body_bytes


async def _context(request: web.Request) -> RequestContext:
    return await _services(request).auth.authenticate(
        request.headers.get("Authorization"), request["request_id"]
    )


async def _signing_context(request: web.Request) -> RequestContext:
    # Signing may authenticate from the facts cache: its commit re-checks the token under the write lock.
    return await _services(request).auth.authenticate(
        request.headers.get("Authorization"), request["request_id"], cached=True
    )


# -- health ---------------------------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks = await _services(request).health.check()
    ready = all(state == "up" for state in checks.values())
    return _json({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


# -- identity -------------------------------------------------------------------------------------


@routes.post("/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshBody, _max_body(request))
    return _json(await _services(request).auth.refresh(body.refresh_token, request["request_id"]))


@routes.get("/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    ctx = await _context(request)
    caller = ctx.caller
    return _json(
        {
            "principal_id": caller.principal_id,
            "name": caller.name,
            "role": caller.role.value,
            "token_id": caller.token_id,
        }
    )


@routes.post("/v1/principals")
async def create_principal(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, CreatePrincipalBody, _max_body(request))
    return _json(await _services(request).admin.create_principal(ctx, body.name, body.role), 201)


@routes.get("/v1/principals")
async def list_principals(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json({"items": await _services(request).admin.list_principals(ctx)})


@routes.post("/v1/principals/{principal_id}/state")
async def set_principal_state(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, PrincipalStateBody, _max_body(request))
    return _json(
        await _services(request).admin.set_principal_disabled(
            ctx, request.match_info["principal_id"], body.disabled
        )
    )


@routes.post("/v1/principals/{principal_id}/tokens")
async def issue_tokens(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(
        await _services(request).auth.issue_for_principal(ctx, request.match_info["principal_id"]), 201
    )


@routes.delete("/v1/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).auth.revoke(ctx, request.match_info["token_id"]))


# -- keys -----------------------------------------------------------------------------------------


@routes.post("/v1/keys")
async def create_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, CreateKeyBody, _max_body(request))
    return _json(
        await _services(request).keys.create(ctx, body.curve, body.label, body.scope, list(body.tags)), 201
    )


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    ctx = await _context(request)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("limit must be an integer", code="invalid_field", field="limit") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be between 1 and 1000", code="invalid_field", field="limit")
    return _json(await _services(request).keys.list_keys(ctx, limit=limit, after=request.query.get("after")))


@routes.get("/v1/keys/{key_id}")
async def show_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).keys.get(ctx, request.match_info["key_id"]))


@routes.post("/v1/keys/{key_id}/disable")
async def disable_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).keys.set_state(ctx, request.match_info["key_id"], "disabled"))


@routes.post("/v1/keys/{key_id}/enable")
async def enable_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).keys.set_state(ctx, request.match_info["key_id"], "active"))


# -- grants ---------------------------------------------------------------------------------------


@routes.post("/v1/grants")
async def create_grant(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, CreateGrantBody, _max_body(request))
    grant = await _services(request).admin.create_grant(
        ctx,
        principal_id=body.principal_id,
        group=body.group,
        key_id=body.key_id,
        scope=body.scope,
        operations=list(body.operations),
        expires_at=body.expires_at,
        max_uses=body.max_uses,
        value_budgets=body.value_budgets,
    )
    return _json(grant, 201)


@routes.get("/v1/grants")
async def list_grants(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(
        {"items": await _services(request).admin.list_grants(ctx, request.query.get("principal_id"))}
    )


@routes.delete("/v1/grants/{grant_id}")
async def revoke_grant(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).admin.revoke_grant(ctx, request.match_info["grant_id"]))


# -- signing --------------------------------------------------------------------------------------


@routes.post("/v1/keys/{key_id}/sign/transaction")
async def sign_transaction(request: web.Request) -> web.Response:
    ctx = await _signing_context(request)
    body = await parse_body(request, SignTransactionBody, _max_body(request))
    result = await _services(request).signing.sign_transaction(
        ctx, request.match_info["key_id"], body.transaction, body.raw, _idempotency(request, body)
    )
    return _signed(result)


@routes.post("/v1/keys/{key_id}/sign/message")
async def sign_message(request: web.Request) -> web.Response:
    ctx = await _signing_context(request)
    body = await parse_body(request, SignMessageBody, _max_body(request))
    message = _decode_message(body.message, body.encoding)
    result = await _services(request).signing.sign_message(
        ctx, request.match_info["key_id"], message, _idempotency(request, body)
    )
    return _signed(result)


@routes.post("/v1/keys/{key_id}/sign/typed-data")
async def sign_typed_data(request: web.Request) -> web.Response:
    ctx = await _signing_context(request)
    body = await parse_body(request, SignTypedDataBody, _max_body(request))
    result = await _services(request).signing.sign_typed_data(
        ctx, request.match_info["key_id"], body.typed_data, _idempotency(request, body)
    )
    return _signed(result)


@routes.post("/v1/keys/{key_id}/sign/digest")
async def sign_digest(request: web.Request) -> web.Response:
    ctx = await _signing_context(request)
    body = await parse_body(request, SignDigestBody, _max_body(request))
    result = await _services(request).signing.sign_digest(
        ctx, request.match_info["key_id"], body.digest, _idempotency(request, body)
    )
    return _signed(result)


_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _idempotency(request: web.Request, body: BaseModel) -> Idempotency | None:
    """The ``Idempotency-Key`` header and the digest of what it names (route and body, canonical)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "Idempotency-Key is 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'",
            code="invalid_idempotency_key",
        )
    named = {"path": request.path, "body": body.model_dump(mode="json")}
    digest = hashlib.sha256(json.dumps(named, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Idempotency(key, digest)


def _decode_message(message: str, encoding: str) -> bytes:
    if encoding == "utf8":
        return message.encode("utf-8")
    if encoding == "hex":
        text = message[2:] if message[:2] in ("0x", "0X") else message
        try:
            return bytes.fromhex(text) if len(text) % 2 == 0 else bytes.fromhex("x")
        except ValueError:
            raise InvalidRequest("message is not valid hex", code="invalid_hex", field="message") from None
    try:
        return base64.b64decode(message, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("message is not valid base64", code="invalid_base64", field="message") from None


# -- audit ----------------------------------------------------------------------------------------


@routes.get("/v1/audit/events")
async def audit_events(request: web.Request) -> web.StreamResponse:
    ctx = await _context(request)
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        raise InvalidRequest("after and limit must be integers", code="invalid_field") from None
    lines, head = await _services(request).audit.export(ctx, after=after, limit=limit)
    return web.Response(
        text="".join(lines), content_type="application/x-ndjson", headers={"X-Audit-Head": str(head)}
    )


def _signed(result: dict[str, Any]) -> web.Response:
    """200 with the signature, or 202 when the request waits for approvers (nothing was signed)."""
    if result.get("state") == "pending_approval":
        return _json(result, 202)
    return _json(result)


# -- approvals ------------------------------------------------------------------------------------


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", code="invalid_field", field=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", code="invalid_field", field=name)
    return value


@routes.get("/v1/approvals")
async def list_approvals(request: web.Request) -> web.Response:
    ctx = await _context(request)
    limit = _int_query(request, "limit", 100, 1, 1000)
    items = await _services(request).approvals.list_requests(
        ctx, state=request.query.get("state"), limit=limit, after=request.query.get("after")
    )
    return _json({"items": items})


@routes.get("/v1/approvals/{approval_id}")
async def show_approval(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).approvals.show(ctx, request.match_info["approval_id"]))


@routes.post("/v1/approvals/{approval_id}/approve")
async def approve(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, VoteBody, _max_body(request))
    return _json(
        await _services(request).approvals.approve(
            ctx, request.match_info["approval_id"], body.digest, signature=body.signature
        )
    )


@routes.post("/v1/approvals/{approval_id}/reject")
async def reject(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, VoteBody, _max_body(request))
    return _json(
        await _services(request).approvals.reject(
            ctx, request.match_info["approval_id"], body.digest, signature=body.signature
        )
    )


@routes.post("/v1/approvals/{approval_id}/cancel")
async def cancel_approval(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).approvals.cancel(ctx, request.match_info["approval_id"]))


@routes.get("/v1/approvals/{approval_id}/result", name="approval_result")
async def approval_result(request: web.Request) -> web.Response:
    ctx = await _context(request)
    wait = _int_query(request, "wait", 0, 0, MAX_WAIT_SECONDS)
    status, body = await _services(request).approvals.result(
        ctx, request.match_info["approval_id"], wait=wait
    )
    return _json(body, status)


@routes.put("/v1/approvers/me/key")
async def register_approver_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, ApproverKeyBody, _max_body(request))
    return _json(await _services(request).approvals.register_key(ctx, body.scheme, body.public_key))


@routes.put("/v1/groups/{group}/webhook")
async def set_group_webhook(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, WebhookBody, _max_body(request))
    return _json(await _services(request).webhooks.set_webhook(ctx, request.match_info["group"], body.url))


@routes.delete("/v1/groups/{group}/webhook")
async def delete_group_webhook(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).webhooks.delete_webhook(ctx, request.match_info["group"]))
