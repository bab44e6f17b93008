"""Policy routes: policy documents and versions, attachments, shadow reports and the dry run.

Thin: parse, call one method of the policies or signing service, render. A policy document is the request
body itself, as JSON (``application/json``) or YAML (``application/yaml``), parsed strictly by ``policy``
(its shape in the OpenAPI document is generated from the same parser's tables, see ``signer.http.models``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from policy import PolicyDocumentError, parse_policy_document, parse_policy_json
from signer.errors import InvalidRequest
from signer.http import schemas as out
from signer.http.body import loads_yaml_strict, parse_body, read_bytes
from signer.http.contract import Query
from signer.http.models import AttachPolicyBody, DryRunBody, PolicyDocumentBody
from signer.http.routes.common import api, context, decode_message, json_response, max_body, services
from signer.services.policies import attachment_place, document_error

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


@api.operation(
    "POST",
    "/v1/policies",
    summary="Store the next version of a policy document (JSON, or YAML with Content-Type: application/yaml)",
    tag="policies",
    who="admin",
    request=PolicyDocumentBody,
    response=out.PolicyVersion,
    status=201,
    errors=(409,),
)
async def create_policy(request: web.Request) -> web.Response:
    ctx = await context(request)
    raw = await read_bytes(request, max_body(request))
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
        raise document_error(exc) from None
    return json_response(await services(request).policies.create_version(ctx, document), 201)


@api.operation(
    "GET",
    "/v1/policies",
    summary="The latest version of each policy",
    tag="policies",
    who="admin, auditor",
    response=out.PolicyList,
)
async def list_policies(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response({"items": await services(request).policies.list_policies(ctx)})


@api.operation(
    "GET",
    "/v1/policies/{policy_id}",
    summary="Every version of one policy, with documents and digests",
    tag="policies",
    who="admin, auditor",
    response=out.PolicyVersions,
    errors=(404,),
)
async def get_policy(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await services(request).policies.get_policy(ctx, request.match_info["policy_id"]))


@api.operation(
    "POST",
    "/v1/policies/{policy_id}/attachments",
    summary="Put a policy version in force (live) or beside it (shadow) at a scope or on one resource",
    tag="policies",
    who="admin",
    request=AttachPolicyBody,
    response=out.Attachment,
    status=201,
    errors=(404,),
)
async def attach_policy(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, AttachPolicyBody, max_body(request))
    result = await services(request).policies.attach(
        ctx,
        request.match_info["policy_id"],
        body.version,
        scope=body.scope,
        key_id=body.key_id,
        resource=body.reference(),
        mode=body.mode,
    )
    return json_response(result, 201)


@api.operation(
    "GET",
    "/v1/policy-attachments",
    summary="Policy attachments in force (or all, with include_detached)",
    tag="policies",
    who="admin, auditor",
    response=out.AttachmentList,
    query=(Query("include_detached", {"type": "string", "enum": ["true", "false"]}, "also detached ones"),),
)
async def list_attachments(request: web.Request) -> web.Response:
    ctx = await context(request)
    include = request.query.get("include_detached", "false")
    if include not in ("true", "false"):
        raise InvalidRequest("include_detached is true or false", code="invalid_field")
    items = await services(request).policies.list_attachments(ctx, include_detached=include == "true")
    return json_response({"items": items})


@api.operation(
    "DELETE",
    "/v1/policy-attachments/{attachment_id}",
    summary="Detach a policy",
    tag="policies",
    who="admin",
    response=out.Detached,
    errors=(404,),
)
async def detach_policy(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await services(request).policies.detach(ctx, request.match_info["attachment_id"]))


@api.operation(
    "GET",
    "/v1/policy-attachments/{attachment_id}/shadow-report",
    summary="What a shadow policy would have decided on real traffic",
    tag="policies",
    who="admin, auditor",
    response=out.ShadowReport,
    errors=(404,),
)
async def shadow_report(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(
        await services(request).policies.shadow_report(ctx, request.match_info["attachment_id"])
    )


@api.operation(
    "POST",
    "/v1/policy/dry-run",
    summary="Judge a sign request against the live policy (or a candidate) without signing or counting",
    tag="policies",
    who="admin (any principal), service (itself)",
    request=DryRunBody,
    response=out.DryRun,
    errors=(404, 422),
)
async def dry_run(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, DryRunBody, max_body(request))
    payload: dict[str, Any] = {
        "transaction": body.transaction,
        "raw": body.raw,
        "typed_data": body.typed_data,
        "digest": body.digest,
        "authorization": body.authorization,
    }
    if body.message is not None:
        payload["message"] = decode_message(body.message, body.encoding)
    candidate = None
    if body.candidate is not None:
        c = body.candidate
        scope, resource = attachment_place(c.scope, c.key_id, c.reference())
        candidate = (c.policy_id, c.version, scope, resource)
    result = await services(request).signing.dry_run(
        ctx, body.key_id, body.operation, payload, principal_id=body.principal_id, candidate=candidate
    )
    return json_response(result)
