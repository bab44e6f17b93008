"""Secret routes: create, list, show, change, rotate, disable, enable, delete and fetch secrets.

Thin: parse, call one method of the secrets service, render. Only the fetch answers with values; a
secret the caller holds no grant about answers exactly like a missing one (the service decides).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from policy.names import NameKind
from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Link, Query
from signer.http.models import (
    CreateSecretBody,
    FetchSecretBody,
    SecretStateBody,
    SetSecretValueBody,
    UpdateSecretBody,
)
from signer.http.patterns import name_schema
from signer.http.routes.common import (
    ID_SCHEMA,
    api,
    context,
    id_query,
    int_query,
    json_response,
    services,
    signing_context,
)
from signer.http.routes.secret_versions import ETAG_HEADER, if_match, with_etag
from signer.http.state import SETTINGS


def _limit(request: web.Request) -> int:
    return request.app[SETTINGS].secret_body_bytes


def _owner(principal: str | None, group: str | None) -> str | None:
    if principal is not None:
        return f"principal:{principal}"
    if group is not None:
        return f"group:{group}"
    return None


def _value_fields(body: CreateSecretBody | SetSecretValueBody) -> dict[str, Any]:
    return {
        "fields": None if body.fields is None else dict(body.fields),
        "generate": None if body.generate is None else body.generate.model_dump(exclude_none=True),
    }


@api.operation(
    "POST",
    "/v1/secrets",
    summary="Create a secret (grants nobody anything; needs `create` on its folder)",
    tag="secrets",
    who="a principal with a `create` grant on the folder",
    request=CreateSecretBody,
    response=out.Secret,
    status=201,
    errors=(403, 404, 409, 503),
    links={
        "ShowSecret": Link("show_secret", {"secret_id": "$response.body#/id"}),
        "DeleteSecret": Link("delete_secret", {"secret_id": "$response.body#/id"}),
    },
)
async def create_secret(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, CreateSecretBody, _limit(request))
    secret = await services(request).secrets.create(
        ctx,
        folder=body.folder,
        name=body.name,
        owner=_owner(body.owner_principal, body.owner_group) or "",
        description=body.description,
        tags=list(body.tags),
        category=body.category,
        consumers=list(body.consumers),
        backend=body.backend,
        reference=body.reference,
        **_value_fields(body),
    )
    return json_response(secret, 201)


@api.operation(
    "GET",
    "/v1/secrets",
    summary="List the secrets the caller may `list` (metadata only)",
    tag="secrets",
    who="any principal; sees only what its grants allow",
    response=out.SecretList,
    errors=(503,),
    query=(
        Query(
            "folder",
            {"type": "string", "minLength": 1, "maxLength": 512, **name_schema(NameKind.SCOPE)},
            "only this folder and below",
        ),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)"),
        Query("after", ID_SCHEMA, "the `next` of the previous page"),
    ),
)
async def list_secrets(request: web.Request) -> web.Response:
    ctx = await context(request)
    limit = int_query(request, "limit", 100, 1, 1000)
    after = id_query(request, "after")
    folder = request.query.get("folder")
    return json_response(await services(request).secrets.list(ctx, folder, limit=limit, after=after))


@api.operation(
    "GET",
    "/v1/secrets/{secret_id}",
    summary="Show a secret's metadata and versions (never a value)",
    tag="secrets",
    who="a principal with `read_metadata` on it",
    response=out.Secret,
    errors=(403, 404, 503),
    headers=ETAG_HEADER,
)
async def show_secret(request: web.Request) -> web.Response:
    ctx = await context(request)
    return with_etag(await services(request).secrets.show(ctx, request.match_info["secret_id"]))


@api.operation(
    "PATCH",
    "/v1/secrets/{secret_id}",
    summary="Change a secret's description, tags, category, owner, consumers, pins, overlap or "
    "rotation interval (If-Match: check-and-set)",
    tag="secrets",
    who="a principal with `update` on it",
    request=UpdateSecretBody,
    response=out.Secret,
    errors=(403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def update_secret(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, UpdateSecretBody, _limit(request))
    changes: dict[str, Any] = body.model_dump(exclude_none=True, exclude={"owner_principal", "owner_group"})
    owner = _owner(body.owner_principal, body.owner_group)
    if owner is not None:
        changes["owner"] = owner
    return with_etag(
        await services(request).secrets.update(
            ctx, request.match_info["secret_id"], changes, if_match(request)
        )
    )


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/versions",
    summary="Rotate: a new version (current, or staged with `stage`), from a value, a rule or the "
    "secret's own rule (If-Match: check-and-set)",
    tag="secrets",
    who="a principal with `update` on it",
    request=SetSecretValueBody,
    response=out.Secret,
    status=201,
    errors=(403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def set_secret_value(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, SetSecretValueBody, _limit(request))
    secret = await services(request).secrets.set_value(
        ctx,
        request.match_info["secret_id"],
        **_value_fields(body),
        from_rule=bool(body.from_rule),
        stage=body.stage,
        if_match=if_match(request),
    )
    return with_etag(secret, 201)


async def _set_state(request: web.Request, state: str) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, SecretStateBody, request.app[SETTINGS].max_body_bytes)
    view = await services(request).secrets.set_state(
        ctx, request.match_info["secret_id"], state, reason=body.reason, if_match=if_match(request)
    )
    return with_etag(view)


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/disable",
    summary="Disable the whole secret: every read of every version answers 409 secret_disabled until "
    "it is enabled (audited with its impact review; review first with POST /v1/impact, action "
    "disable_secret; If-Match: check-and-set)",
    tag="secrets",
    who="a principal with `update` on it",
    request=SecretStateBody,
    response=out.Secret,
    errors=(400, 403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def disable_secret(request: web.Request) -> web.Response:
    return await _set_state(request, "disabled")


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/enable",
    summary="Enable a disabled secret: its reads answer again (audited with its impact review; "
    "If-Match: check-and-set)",
    tag="secrets",
    who="a principal with `update` on it",
    request=SecretStateBody,
    response=out.Secret,
    errors=(400, 403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def enable_secret(request: web.Request) -> web.Response:
    return await _set_state(request, "active")


@api.operation(
    "DELETE",
    "/v1/secrets/{secret_id}",
    summary="Delete a secret and every version of its value",
    tag="secrets",
    who="a principal with `delete` on it",
    response=out.SecretDeleted,
    errors=(403, 404, 503),
)
async def delete_secret(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await services(request).secrets.delete(ctx, request.match_info["secret_id"]))


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/fetch",
    summary="Fetch a secret's value: the current version or a named one, one field or all (audited)",
    tag="secrets",
    who="a service principal or admin with `read_value` on it",
    request=FetchSecretBody,
    response=out.SecretValue,
    other_responses={202: out.PendingApproval},
    errors=(400, 403, 404, 409, 422, 429, 502, 503, 504),
)
async def fetch_secret(request: web.Request) -> web.Response:
    # Like signing, a fetch may authenticate from the facts cache: the pipeline's commit re-checks the
    # token under the write lock when the facts epoch moved, before the value leaves.
    ctx = await signing_context(request)
    body = await parse_body(request, FetchSecretBody, _limit(request))
    value = await services(request).secrets.fetch(
        ctx,
        request.match_info["secret_id"],
        version=body.version,
        backend_version=body.backend_version,
        field=body.field,
        workload=body.workload,
        source=request.remote,
        approval_id=body.approval_id,
    )
    # 202: policy sends this read to approvers; nothing was read (release it later with approval_id).
    response = json_response(value, 202 if value.get("state") == "pending_approval" else 200)
    response.headers["Cache-Control"] = "no-store"
    return response
