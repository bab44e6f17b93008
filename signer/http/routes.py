"""The API's routes: each handler parses, calls one service method and renders JSON.

Authentication happens here (``bearer`` turns the Authorization header into a request context through the
auth service); everything else, including role checks, is the services' job. Every route is declared
through ``api.operation`` (``signer.http.contract``), which adds the aiohttp route together with its
contract: request model, response model, statuses and auth. ``/openapi.json`` and ``/docs`` are generated
from that registry.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from signer.errors import InvalidRequest
from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Api, Link, Query, openapi, render_html
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
    WebhookRotateBody,
)
from signer.http.state import CALLER, METRICS, METRICS_ACCESS, SERVICES, SETTINGS, Services, is_loopback
from signer.identity import Role
from signer.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from signer.services.approvals import MAX_WAIT_SECONDS
from signer.services.context import RequestContext, require_role
from signer.services.idempotency import Idempotency

api = Api(
    "signer",
    "1",
    "Self-hosted transaction signing: keys inside a PKCS#11 token, grants, and a hash-chained audit log.",
)
routes = api.routes

# Paths whose handler may wait on purpose (bounded by the handler), beyond the request deadline.
LONG_POLL_ROUTES = frozenset({"/v1/approvals/{approval_id}/result"})

_ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _signed(result: dict[str, Any]) -> web.Response:
    """200 with the signature, or 202 when the request waits for approvers (nothing was signed)."""
    if result.get("state") == "pending_approval":
        return _json(result, 202)
    return _json(result)


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _max_body(request: web.Request) -> int:
    return request.app[SETTINGS].max_body_bytes


async def _context(request: web.Request) -> RequestContext:
    ctx = await _services(request).auth.authenticate(
        request.headers.get("Authorization"), request["request_id"]
    )
    request["principal"] = ctx.caller.principal_id  # for the access log: the id, never the token
    request[CALLER] = ctx
    return ctx


async def _signing_context(request: web.Request) -> RequestContext:
    # Signing may authenticate from the facts cache: its commit re-checks the token under the write lock.
    ctx = await _services(request).auth.authenticate(
        request.headers.get("Authorization"), request["request_id"], cached=True
    )
    request["principal"] = ctx.caller.principal_id
    request[CALLER] = ctx
    return ctx


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InvalidRequest(f"{name} must be a non-negative integer", code="invalid_field", field=name)
    value = int(text)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", code="invalid_field", field=name)
    return value


_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _id_query(request: web.Request, name: str) -> str | None:
    text = request.query.get(name)
    if text is not None and not _ID_RE.match(text):
        raise InvalidRequest(f"{name} is not a valid id", code="invalid_field", field=name)
    return text


# -- health ---------------------------------------------------------------------------------------


@api.operation("GET", "/healthz", summary="Liveness", tag="health", auth="none", response=out.Health)
async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


@api.operation(
    "GET",
    "/readyz",
    summary="Readiness: 200 when the HSM and the database answer; 503 names which one is down",
    tag="health",
    auth="none",
    response=out.Readiness,
    other_responses={503: out.Readiness},
)
async def readyz(request: web.Request) -> web.Response:
    checks = await _services(request).health.check()
    ready = all(state == "up" for state in checks.values())
    return _json({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


# -- identity -------------------------------------------------------------------------------------


@api.operation(
    "POST",
    "/v1/auth/refresh",
    summary="Exchange a refresh token for a new access + refresh pair (a replayed one revokes its family)",
    tag="identity",
    auth="none",
    who="holder of a refresh token",
    request=RefreshBody,
    response=out.Credentials,
    errors=(401, 503),
)
async def refresh(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshBody, _max_body(request))
    return _json(await _services(request).auth.refresh(body.refresh_token, request["request_id"]))


@api.operation(
    "GET",
    "/v1/whoami",
    summary="The caller",
    tag="identity",
    who="any token",
    response=out.Whoami,
    errors=(503,),
)
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


@api.operation(
    "POST",
    "/v1/principals",
    summary="Create a principal with its first credentials",
    tag="identity",
    who="admin",
    request=CreatePrincipalBody,
    response=out.PrincipalCreated,
    status=201,
    errors=(409, 503),
    links={
        "SetPrincipalState": Link("set_principal_state", {"principal_id": "$response.body#/principal/id"}),
        "IssueTokens": Link("issue_tokens", {"principal_id": "$response.body#/principal/id"}),
    },
)
async def create_principal(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, CreatePrincipalBody, _max_body(request))
    return _json(await _services(request).admin.create_principal(ctx, body.name, body.role), 201)


@api.operation(
    "GET",
    "/v1/principals",
    summary="List principals",
    tag="identity",
    who="admin",
    response=out.PrincipalList,
    errors=(503,),
)
async def list_principals(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json({"items": await _services(request).admin.list_principals(ctx)})


@api.operation(
    "POST",
    "/v1/principals/{principal_id}/state",
    summary="Disable or enable a principal (its tokens stop working at once)",
    tag="identity",
    who="admin",
    request=PrincipalStateBody,
    response=out.Principal,
    errors=(404, 409, 503),
)
async def set_principal_state(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, PrincipalStateBody, _max_body(request))
    return _json(
        await _services(request).admin.set_principal_disabled(
            ctx, request.match_info["principal_id"], body.disabled
        )
    )


@api.operation(
    "POST",
    "/v1/principals/{principal_id}/tokens",
    summary="Issue new credentials for a principal",
    tag="identity",
    who="admin",
    response=out.Credentials,
    status=201,
    errors=(404, 409, 503),
    links={"RevokeToken": Link("revoke_token", {"token_id": "$response.body#/access_token_id"})},
)
async def issue_tokens(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(
        await _services(request).auth.issue_for_principal(ctx, request.match_info["principal_id"]), 201
    )


@api.operation(
    "DELETE",
    "/v1/tokens/{token_id}",
    summary="Revoke a token",
    tag="identity",
    who="admin, or the token's owner",
    response=out.TokenRevoked,
    errors=(404, 503),
)
async def revoke_token(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).auth.revoke(ctx, request.match_info["token_id"]))


# -- keys -----------------------------------------------------------------------------------------


@api.operation(
    "POST",
    "/v1/keys",
    summary="Create a key inside the token",
    tag="keys",
    who="admin",
    request=CreateKeyBody,
    response=out.Key,
    status=201,
    errors=(409, 503),
    links={
        "ShowKey": Link("show_key", {"key_id": "$response.body#/id"}),
        "DisableKey": Link("disable_key", {"key_id": "$response.body#/id"}),
        "EnableKey": Link("enable_key", {"key_id": "$response.body#/id"}),
    },
)
async def create_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, CreateKeyBody, _max_body(request))
    return _json(
        await _services(request).keys.create(ctx, body.curve, body.label, body.scope, list(body.tags)), 201
    )


@api.operation(
    "GET",
    "/v1/keys",
    summary="List keys (services see only keys granted to them)",
    tag="keys",
    who="admin, service",
    response=out.KeyList,
    errors=(503,),
    query=(
        Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)"),
        Query("after", _ID_SCHEMA, "the `next` of the previous page"),
    ),
)
async def list_keys(request: web.Request) -> web.Response:
    ctx = await _context(request)
    limit = _int_query(request, "limit", 100, 1, 1000)
    after = _id_query(request, "after")
    return _json(await _services(request).keys.list_keys(ctx, limit=limit, after=after))


@api.operation(
    "GET",
    "/v1/keys/{key_id}",
    summary="Show a key: public key, address, state and the token's attributes",
    tag="keys",
    who="admin, service with a grant on the key",
    response=out.Key,
    errors=(404, 503),
)
async def show_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).keys.get(ctx, request.match_info["key_id"]))


@api.operation(
    "POST",
    "/v1/keys/{key_id}/disable",
    summary="Disable a key: it signs nothing until enabled",
    tag="keys",
    who="admin",
    response=out.Key,
    errors=(404, 503),
)
async def disable_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).keys.set_state(ctx, request.match_info["key_id"], "disabled"))


@api.operation(
    "POST",
    "/v1/keys/{key_id}/enable",
    summary="Enable a disabled key",
    tag="keys",
    who="admin",
    response=out.Key,
    errors=(404, 503),
)
async def enable_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).keys.set_state(ctx, request.match_info["key_id"], "active"))


# -- grants ---------------------------------------------------------------------------------------


@api.operation(
    "POST",
    "/v1/grants",
    summary="Allow a principal operations on a key",
    tag="grants",
    who="admin",
    request=CreateGrantBody,
    response=out.Grant,
    status=201,
    errors=(404, 409, 503),
    links={"RevokeGrant": Link("revoke_grant", {"grant_id": "$response.body#/id"})},
)
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


@api.operation(
    "GET",
    "/v1/grants",
    summary="List grants",
    tag="grants",
    who="admin",
    response=out.GrantList,
    errors=(503,),
    query=(Query("principal_id", _ID_SCHEMA, "only this principal's grants"),),
)
async def list_grants(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(
        {"items": await _services(request).admin.list_grants(ctx, _id_query(request, "principal_id"))}
    )


@api.operation(
    "DELETE",
    "/v1/grants/{grant_id}",
    summary="Revoke a grant",
    tag="grants",
    who="admin",
    response=out.GrantRevoked,
    errors=(404, 409, 503),
)
async def revoke_grant(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).admin.revoke_grant(ctx, request.match_info["grant_id"]))


_SIGN_ERRORS = (404, 409, 422, 429, 503)

# -- signing --------------------------------------------------------------------------------------


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/transaction",
    summary="Sign an EVM transaction (fields or unsigned serialised hex)",
    tag="signing",
    who="service with the sign_transaction grant",
    request=SignTransactionBody,
    response=out.TransactionSignature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_transaction(request: web.Request) -> web.Response:
    ctx = await _signing_context(request)
    body = await parse_body(request, SignTransactionBody, _max_body(request))
    result = await _services(request).signing.sign_transaction(
        ctx, request.match_info["key_id"], body.transaction, body.raw, _idempotency(request, body)
    )
    return _signed(result)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/message",
    summary="Sign a message: EIP-191 (secp256k1), ECDSA over SHA-256 (P-256) or Ed25519",
    tag="signing",
    who="service with the sign_message grant",
    request=SignMessageBody,
    response=out.EthSignature | out.P256Signature | out.Ed25519Signature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_message(request: web.Request) -> web.Response:
    ctx = await _signing_context(request)
    body = await parse_body(request, SignMessageBody, _max_body(request))
    message = _decode_message(body.message, body.encoding)
    result = await _services(request).signing.sign_message(
        ctx, request.match_info["key_id"], message, _idempotency(request, body)
    )
    return _signed(result)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/typed-data",
    summary="Sign EIP-712 typed data (v4)",
    tag="signing",
    who="service with the sign_typed_data grant",
    request=SignTypedDataBody,
    response=out.EthSignature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_typed_data(request: web.Request) -> web.Response:
    ctx = await _signing_context(request)
    body = await parse_body(request, SignTypedDataBody, _max_body(request))
    result = await _services(request).signing.sign_typed_data(
        ctx, request.match_info["key_id"], body.typed_data, _idempotency(request, body)
    )
    return _signed(result)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/digest",
    summary="Sign a raw 32-byte digest (blind signing, audited as such)",
    tag="signing",
    who="service with the sign_raw grant",
    request=SignDigestBody,
    response=out.EthSignature | out.P256Signature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
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


@api.operation(
    "GET",
    "/v1/audit/events",
    summary="Export the hash-chained audit log as JSONL (X-Audit-Head: newest seq when read)",
    tag="audit",
    who="auditor, admin",
    response={"type": "string", "description": "one canonical JSON audit event per line"},
    media_type="application/x-ndjson",
    headers={
        "X-Audit-Head": {
            "description": "the newest seq when the page was read: page until `after` reaches it",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    },
    errors=(503,),
    query=(
        Query("after", {"type": "integer", "minimum": 0}, "return events with seq > after (default 0)"),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "page size (default 1000)"),
    ),
)
async def audit_events(request: web.Request) -> web.StreamResponse:
    ctx = await _context(request)
    after = _int_query(request, "after", 0, 0, 2**62)
    limit = _int_query(request, "limit", 1000, 1, 10_000)
    lines, head = await _services(request).audit.export(ctx, after=after, limit=limit)
    return web.Response(
        text="".join(lines), content_type="application/x-ndjson", headers={"X-Audit-Head": str(head)}
    )


# -- the contract itself --------------------------------------------------------------------------

# Pages served to browsers: nothing may load from elsewhere, run script, or be framed.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _document() -> tuple[str, str]:
    """The OpenAPI document (JSON) and its HTML rendering, built once from the registry."""
    document = openapi(api)
    return json.dumps(document, indent=1), render_html(document)


@api.operation(
    "GET",
    "/openapi.json",
    summary="This OpenAPI 3.1 document",
    tag="contract",
    auth="none",
    response={"type": "object"},
)
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(text=_document()[0], content_type="application/json", headers=_PAGE_HEADERS)


@api.operation(
    "GET",
    "/docs",
    summary="API reference rendered from /openapi.json (self-contained HTML)",
    tag="contract",
    auth="none",
    response={"type": "string"},
    media_type="text/html",
)
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_document()[1], content_type="text/html", headers=_PAGE_HEADERS)


# -- operations -----------------------------------------------------------------------------------


@api.operation(
    "GET",
    "/metrics",
    summary="Prometheus metrics (text format)",
    tag="operations",
    auth="metrics",
    who="loopback callers when the service listens on loopback (metrics_public_on_loopback); "
    "otherwise the metrics token, or an admin or auditor access token",
    response={"type": "string"},
    media_type="text/plain",
    errors=(503,),
)
async def metrics_endpoint(request: web.Request) -> web.Response:
    access = request.app[METRICS_ACCESS]
    if not (access.open_on_loopback and is_loopback(request.remote)):
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not (access.token is not None and presented and _same(presented, access.token.reveal())):
            require_role(await _context(request), Role.ADMIN, Role.AUDITOR)
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def _same(presented: str, expected: str) -> bool:
    # Fixed-length digests: the comparison time says nothing about the token.
    return hmac.compare_digest(
        hashlib.sha256(presented.encode("utf-8", "replace")).digest(),
        hashlib.sha256(expected.encode("utf-8")).digest(),
    )


# -- approvals ------------------------------------------------------------------------------------


@api.operation(
    "GET",
    "/v1/approvals",
    summary="Approval requests the caller may see (admin: all; service: its own; approver: its groups')",
    tag="approvals",
    who="admin, approver, the requesting service",
    response=out.ApprovalList,
    errors=(503,),
    query=(
        Query("state", {"type": "string"}, "only requests in this state"),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
        Query("after", _ID_SCHEMA, "the last id of the previous page"),
    ),
)
async def list_approvals(request: web.Request) -> web.Response:
    ctx = await _context(request)
    limit = _int_query(request, "limit", 100, 1, 1000)
    items = await _services(request).approvals.list_requests(
        ctx, state=request.query.get("state"), limit=limit, after=_id_query(request, "after")
    )
    return _json({"items": items})


@api.operation(
    "GET",
    "/v1/approvals/{approval_id}",
    summary="Show an approval request decoded, with its votes (404 when the caller may not see it)",
    tag="approvals",
    who="admin, approver in one of its groups, the requesting service",
    response=out.Approval,
    errors=(404, 503),
)
async def show_approval(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).approvals.show(ctx, request.match_info["approval_id"]))


@api.operation(
    "POST",
    "/v1/approvals/{approval_id}/approve",
    summary="Approve the payload with this digest (0x and any hex case accepted; 409 approval_mismatch "
    "for any other digest; 403 for a voter who could not count)",
    tag="approvals",
    who="approver in one of the request's groups (never the requester)",
    request=VoteBody,
    response=out.Approval,
    errors=(400, 403, 404, 409, 422, 503),
)
async def approve(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, VoteBody, _max_body(request))
    return _json(
        await _services(request).approvals.approve(
            ctx, request.match_info["approval_id"], body.digest, signature=body.signature
        )
    )


@api.operation(
    "POST",
    "/v1/approvals/{approval_id}/reject",
    summary="Reject the payload with this digest (counted or refused, like an approval)",
    tag="approvals",
    who="approver in one of the request's groups",
    request=VoteBody,
    response=out.Approval,
    errors=(400, 403, 404, 409, 422, 503),
)
async def reject(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, VoteBody, _max_body(request))
    return _json(
        await _services(request).approvals.reject(
            ctx, request.match_info["approval_id"], body.digest, signature=body.signature
        )
    )


@api.operation(
    "POST",
    "/v1/approvals/{approval_id}/cancel",
    summary="Cancel a pending request",
    tag="approvals",
    who="the requesting service, admin",
    response=out.Approval,
    errors=(404, 409, 503),
)
async def cancel_approval(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).approvals.cancel(ctx, request.match_info["approval_id"]))


@api.operation(
    "GET",
    "/v1/approvals/{approval_id}/result",
    summary="The signature once approved (handed out once); ?wait=N long-polls up to 60 s; 202 while open",
    tag="approvals",
    who="the requesting service",
    response=out.ApprovalResult,
    other_responses={202: out.ApprovalResult},
    errors=(404, 409, 503),
    query=(Query("wait", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS}, "seconds to wait"),),
)
async def approval_result(request: web.Request) -> web.Response:
    ctx = await _context(request)
    wait = _int_query(request, "wait", 0, 0, MAX_WAIT_SECONDS)
    approvals = _services(request).approvals
    status, body = await approvals.result(ctx, request.match_info["approval_id"], wait=wait)
    return _json(body, status)


@api.operation(
    "PUT",
    "/v1/approvers/me/key",
    summary="Register (or replace) the caller's public key for signed approvals",
    tag="approvals",
    who="approver",
    request=ApproverKeyBody,
    response=out.ApproverKey,
    errors=(503,),
)
async def register_approver_key(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, ApproverKeyBody, _max_body(request))
    return _json(await _services(request).approvals.register_key(ctx, body.scheme, body.public_key))


@api.operation(
    "PUT",
    "/v1/groups/{group}/webhook",
    summary="Set the approver group's webhook; the answer carries its HMAC key",
    tag="approvals",
    who="admin",
    request=WebhookBody,
    response=out.Webhook,
    errors=(503,),
)
async def set_group_webhook(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, WebhookBody, _max_body(request))
    return _json(await _services(request).webhooks.set_webhook(ctx, request.match_info["group"], body.url))


@api.operation(
    "POST",
    "/v1/groups/{group}/webhook/rotate-secret",
    summary="Rotate the webhook's HMAC key; both signatures are sent during the overlap",
    tag="approvals",
    who="admin",
    request=WebhookRotateBody,
    response=out.WebhookSecretRotated,
    errors=(404, 503),
)
async def rotate_group_webhook_secret(request: web.Request) -> web.Response:
    ctx = await _context(request)
    overlap = None
    if request.body_exists:
        overlap = (await parse_body(request, WebhookRotateBody, _max_body(request))).overlap_seconds
    webhooks = _services(request).webhooks
    return _json(await webhooks.rotate_secret(ctx, request.match_info["group"], overlap))


@api.operation(
    "DELETE",
    "/v1/groups/{group}/webhook",
    summary="Remove the approver group's webhook",
    tag="approvals",
    who="admin",
    response=out.WebhookDeleted,
    errors=(404, 503),
)
async def delete_group_webhook(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).webhooks.delete_webhook(ctx, request.match_info["group"]))
