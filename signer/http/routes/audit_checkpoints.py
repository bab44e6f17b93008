"""Audit checkpoint routes: the audit public key, signed checkpoints, inclusion and consistency proofs.

Thin: parse the query, call the checkpoint service, render its answer.
"""

from __future__ import annotations

from aiohttp import web

from signer.errors import InvalidRequest, Unavailable
from signer.http import checkpoint_schemas as out
from signer.http.contract import Query
from signer.http.routes.common import api, context, int_query, json_response, services
from signer.services.checkpoints import CheckpointService
from signer.services.rollback import RollbackGuard

_SIZE = {"type": "integer", "minimum": 1, "maximum": 2**62}


def _checkpoints(request: web.Request) -> CheckpointService:
    found = services(request).checkpoints
    if found is None:
        raise Unavailable("audit checkpoints are not running", code="checkpoints_unavailable")
    return found


def _required(request: web.Request, name: str) -> int:
    if name not in request.query:
        raise InvalidRequest(f"{name} is required", code="invalid_field", field=name)
    return int_query(request, name, 1, 1, 2**62)


def _optional(request: web.Request, name: str) -> int | None:
    return None if name not in request.query else int_query(request, name, 1, 1, 2**62)


@api.operation(
    "GET",
    "/v1/audit/public-key",
    summary="The audit keys that sign checkpoints (Ed25519 in the token): the one in force and every "
    "key with its validity",
    tag="audit",
    who="any token",
    response=out.AuditPublicKey,
    errors=(503,),
)
async def audit_public_key(request: web.Request) -> web.Response:
    await context(request)
    return json_response(await _checkpoints(request).public_keys())


@api.operation(
    "POST",
    "/v1/audit/key/rotate",
    summary="Rotate the audit key: a new key in the token, endorsed by the old key's checkpoint (audited)",
    tag="audit",
    who="admin",
    response=out.AuditKeyRotated,
    errors=(409, 503),
)
async def audit_key_rotate(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await _checkpoints(request).rotate(ctx))


@api.operation(
    "GET",
    "/v1/audit/checkpoint",
    summary="The newest signed checkpoint of the audit log (or the one at `size`)",
    tag="audit",
    who="auditor, admin",
    response=out.AuditCheckpoint,
    errors=(404, 503),
    query=(Query("size", _SIZE, "the tree size of an earlier checkpoint"),),
)
async def audit_checkpoint(request: web.Request) -> web.Response:
    ctx = await context(request)
    size = _optional(request, "size")
    return json_response(await _checkpoints(request).get_checkpoint(ctx, size))


@api.operation(
    "GET",
    "/v1/audit/proofs/consistency",
    summary="RFC 6962 consistency proof between two tree sizes (default second: the newest checkpoint)",
    tag="audit",
    who="auditor, admin",
    response=out.AuditConsistencyProof,
    errors=(404, 503),
    query=(
        Query("first", _SIZE, "the older tree size (an auditor's checkpoint)", required=True),
        Query("second", _SIZE, "the newer tree size, at most the newest checkpoint's"),
    ),
)
async def audit_consistency_proof(request: web.Request) -> web.Response:
    ctx = await context(request)
    first = _required(request, "first")
    second = _optional(request, "second")
    return json_response(await _checkpoints(request).consistency(ctx, first, second))


@api.operation(
    "GET",
    "/v1/audit/proofs/inclusion",
    summary="RFC 6962 inclusion proof of one event in a tree size (default: the newest checkpoint)",
    tag="audit",
    who="auditor, admin",
    response=out.AuditInclusionProof,
    errors=(404, 503),
    query=(
        Query("seq", _SIZE, "the event's seq", required=True),
        Query("size", _SIZE, "the tree size, at most the newest checkpoint's"),
    ),
)
async def audit_inclusion_proof(request: web.Request) -> web.Response:
    ctx = await context(request)
    seq = _required(request, "seq")
    size = _optional(request, "size")
    return json_response(await _checkpoints(request).inclusion(ctx, seq, size))


@api.operation(
    "GET",
    "/v1/audit/checkpoints",
    summary="Signed checkpoints with size > after, and the tree's right edge at `after` (for exports)",
    tag="audit",
    who="auditor, admin",
    response=out.AuditCheckpointPage,
    errors=(503,),
    query=(
        Query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}, "tree size to start after"),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 1000)"),
    ),
)
async def audit_checkpoints(request: web.Request) -> web.Response:
    ctx = await context(request)
    after = int_query(request, "after", 0, 0, 2**62)
    limit = int_query(request, "limit", 1000, 1, 1000)
    return json_response(await _checkpoints(request).list_checkpoints(ctx, after, limit))


def _rollback(request: web.Request) -> RollbackGuard:
    found = services(request).rollback
    if found is None:
        raise Unavailable("the rollback check is not running", code="checkpoints_unavailable")
    return found


@api.operation(
    "GET",
    "/v1/audit/rollback",
    summary="Whether a rollback of the database was found at start (refusing high-risk operations)",
    tag="audit",
    who="admin, auditor",
    response=out.AuditRollbackStatus,
    errors=(503,),
)
async def audit_rollback_status(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(_rollback(request).status(ctx))


@api.operation(
    "POST",
    "/v1/audit/rollback/acknowledge",
    summary="Accept the database as it is after a rollback (audited): high-risk operations run again",
    tag="audit",
    who="admin",
    response=out.AuditRollbackAcknowledged,
    errors=(503,),
)
async def audit_rollback_acknowledge(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await _rollback(request).acknowledge(ctx))
