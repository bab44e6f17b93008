"""Routes for groups, policy documents, attachments, dry runs and shadow reports (admin and auditor).

Thin like ``routes``: parse, call one service method, render. A policy document is the request body
itself, as JSON (``application/json``) or YAML (``application/yaml``), parsed strictly by ``policy``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from policy import PolicyDocumentError, parse_policy_document, parse_policy_json
from signer.errors import InvalidRequest
from signer.http.body import loads_yaml_strict, parse_body, read_bytes
from signer.http.models import AttachPolicyBody, DryRunBody
from signer.http.routes import _context, _decode_message, _max_body, _services

policy_routes = web.RouteTableDef()

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


# -- groups ---------------------------------------------------------------------------------------


@policy_routes.get("/v1/groups")
async def list_groups(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json({"items": await _services(request).policies.list_groups(ctx)})


@policy_routes.get("/v1/groups/{group}")
async def get_group(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).policies.get_group(ctx, request.match_info["group"]))


@policy_routes.put("/v1/groups/{group}/members/{principal_id}")
async def add_member(request: web.Request) -> web.Response:
    ctx = await _context(request)
    m = request.match_info
    return _json(await _services(request).policies.add_member(ctx, m["group"], m["principal_id"]))


@policy_routes.delete("/v1/groups/{group}/members/{principal_id}")
async def remove_member(request: web.Request) -> web.Response:
    ctx = await _context(request)
    m = request.match_info
    return _json(await _services(request).policies.remove_member(ctx, m["group"], m["principal_id"]))


# -- policies -------------------------------------------------------------------------------------


@policy_routes.post("/v1/policies")
async def create_policy(request: web.Request) -> web.Response:
    ctx = await _context(request)
    raw = await read_bytes(request, _max_body(request))
    try:
        if request.content_type in YAML_TYPES:
            document = parse_policy_document(loads_yaml_strict(raw))
        elif request.content_type == "application/json":
            document = parse_policy_json(raw)
        else:
            raise InvalidRequest(
                "send the document as application/json or application/yaml", code="unsupported_media_type"
            )
    except PolicyDocumentError as exc:
        raise InvalidRequest(exc.message, code="invalid_policy", field=exc.path or None) from None
    return _json(await _services(request).policies.create_version(ctx, document), 201)


@policy_routes.get("/v1/policies")
async def list_policies(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json({"items": await _services(request).policies.list_policies(ctx)})


@policy_routes.get("/v1/policies/{policy_id}")
async def get_policy(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).policies.get_policy(ctx, request.match_info["policy_id"]))


@policy_routes.post("/v1/policies/{policy_id}/attachments")
async def attach_policy(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, AttachPolicyBody, _max_body(request))
    result = await _services(request).policies.attach(
        ctx,
        request.match_info["policy_id"],
        body.version,
        scope=body.scope,
        key_id=body.key_id,
        mode=body.mode,
    )
    return _json(result, 201)


@policy_routes.get("/v1/policy-attachments")
async def list_attachments(request: web.Request) -> web.Response:
    ctx = await _context(request)
    include = request.query.get("include_detached", "false")
    if include not in ("true", "false"):
        raise InvalidRequest("include_detached is true or false", code="invalid_field")
    items = await _services(request).policies.list_attachments(ctx, include_detached=include == "true")
    return _json({"items": items})


@policy_routes.delete("/v1/policy-attachments/{attachment_id}")
async def detach_policy(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).policies.detach(ctx, request.match_info["attachment_id"]))


@policy_routes.get("/v1/policy-attachments/{attachment_id}/shadow-report")
async def shadow_report(request: web.Request) -> web.Response:
    ctx = await _context(request)
    return _json(await _services(request).policies.shadow_report(ctx, request.match_info["attachment_id"]))


@policy_routes.post("/v1/policy/dry-run")
async def dry_run(request: web.Request) -> web.Response:
    ctx = await _context(request)
    body = await parse_body(request, DryRunBody, _max_body(request))
    payload: dict[str, Any] = {
        "transaction": body.transaction,
        "raw": body.raw,
        "typed_data": body.typed_data,
        "digest": body.digest,
    }
    if body.message is not None:
        payload["message"] = _decode_message(body.message, body.encoding)
    candidate = None
    if body.candidate is not None:
        c = body.candidate
        if (c.scope is None) == (c.key_id is None):
            raise InvalidRequest(
                "a candidate attaches to exactly one of scope or key_id", code="invalid_attachment"
            )
        candidate = (c.policy_id, c.version, c.scope, c.key_id)
    result = await _services(request).signing.dry_run(
        ctx, body.key_id, body.operation, payload, principal_id=body.principal_id, candidate=candidate
    )
    return _json(result)
