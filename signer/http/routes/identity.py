"""Identity routes: refresh tokens, ``whoami``, principals and their access tokens.

Thin: parse, call one method of the auth or admin service, render. Must never echo a token except in the
credentials a create, issue or refresh answer exists to hand out.
"""

from __future__ import annotations

from aiohttp import web

from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Link
from signer.http.models import CreatePrincipalBody, PrincipalStateBody, RefreshBody
from signer.http.routes.common import api, context, json_response, max_body, services


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
    body = await parse_body(request, RefreshBody, max_body(request))
    return json_response(await services(request).auth.refresh(body.refresh_token, request["request_id"]))


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
    ctx = await context(request)
    caller = ctx.caller
    return json_response(
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
    ctx = await context(request)
    body = await parse_body(request, CreatePrincipalBody, max_body(request))
    return json_response(await services(request).admin.create_principal(ctx, body.name, body.role), 201)


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
    ctx = await context(request)
    return json_response({"items": await services(request).admin.list_principals(ctx)})


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
    ctx = await context(request)
    body = await parse_body(request, PrincipalStateBody, max_body(request))
    return json_response(
        await services(request).admin.set_principal_disabled(
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
    ctx = await context(request)
    return json_response(
        await services(request).auth.issue_for_principal(ctx, request.match_info["principal_id"]), 201
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
    ctx = await context(request)
    return json_response(await services(request).auth.revoke(ctx, request.match_info["token_id"]))
