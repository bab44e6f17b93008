"""Key routes: create, list, show, disable and enable keys held in the token.

Thin: parse, call one method of the keys service, render. A service sees only keys granted to it, and an
ungranted key answers exactly like a missing one (the service decides; nothing here may tell them apart).
"""

from __future__ import annotations

from aiohttp import web

from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Link, Query
from signer.http.models import CreateKeyBody
from signer.http.routes.common import (
    ID_SCHEMA,
    api,
    context,
    id_query,
    int_query,
    json_response,
    max_body,
    services,
)


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
    ctx = await context(request)
    body = await parse_body(request, CreateKeyBody, max_body(request))
    return json_response(
        await services(request).keys.create(ctx, body.curve, body.label, body.scope, list(body.tags)), 201
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
        Query("after", ID_SCHEMA, "the `next` of the previous page"),
    ),
)
async def list_keys(request: web.Request) -> web.Response:
    ctx = await context(request)
    limit = int_query(request, "limit", 100, 1, 1000)
    after = id_query(request, "after")
    return json_response(await services(request).keys.list_keys(ctx, limit=limit, after=after))


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
    ctx = await context(request)
    return json_response(await services(request).keys.get(ctx, request.match_info["key_id"]))


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
    ctx = await context(request)
    return json_response(
        await services(request).keys.set_state(ctx, request.match_info["key_id"], "disabled")
    )


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
    ctx = await context(request)
    return json_response(await services(request).keys.set_state(ctx, request.match_info["key_id"], "active"))
