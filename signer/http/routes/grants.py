"""Grant routes: allow a principal or a group operations on one resource (``{"resource": {"type", "id"}}``,
or the older ``key_id`` / ``secret_id``) or a scope (or say "no access" there); list and revoke grants.

Thin: parse, call one method of the admin service, render. A grant on a key (or the revocation of one)
that a ``key_lifecycle`` rule sends to approvers answers 202 with the pending request; the same call with
its ``approval_id`` completes it once approved.
"""

from __future__ import annotations

from aiohttp import web

from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Link, Query
from signer.http.models import CreateGrantBody
from signer.http.routes.common import ID_SCHEMA, api, context, id_query, json_response, max_body, services


@api.operation(
    "POST",
    "/v1/grants",
    summary="Allow a principal or group operations on a resource or scope, or say no access there",
    tag="grants",
    who="admin",
    request=CreateGrantBody,
    response=out.Grant,
    status=201,
    other_responses={202: out.PendingApproval},
    errors=(403, 404, 409, 503),
    links={"RevokeGrant": Link("revoke_grant", {"grant_id": "$response.body#/id"})},
)
async def create_grant(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, CreateGrantBody, max_body(request))
    grant = await services(request).admin.create_grant(
        ctx,
        principal_id=body.principal_id,
        group=body.group,
        resource=body.reference(),
        key_id=body.key_id,
        secret_id=body.secret_id,
        scope=body.scope,
        operations=None if body.operations is None else list(body.operations),
        expires_at=body.expires_at,
        max_uses=body.max_uses,
        value_budgets=body.value_budgets,
        no_access=body.no_access,
        approval_id=body.approval_id,
    )
    return json_response(grant, 202 if grant.get("state") == "pending_approval" else 201)


@api.operation(
    "GET",
    "/v1/grants",
    summary="List grants",
    tag="grants",
    who="admin",
    response=out.GrantList,
    errors=(503,),
    query=(Query("principal_id", ID_SCHEMA, "only this principal's grants"),),
)
async def list_grants(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(
        {"items": await services(request).admin.list_grants(ctx, id_query(request, "principal_id"))}
    )


@api.operation(
    "DELETE",
    "/v1/grants/{grant_id}",
    summary="Revoke a grant",
    tag="grants",
    who="admin",
    response=out.GrantRevoked,
    other_responses={202: out.PendingApproval},
    errors=(403, 404, 409, 503),
    query=(Query("approval_id", ID_SCHEMA, "complete the caller's approved request for this revocation"),),
)
async def revoke_grant(request: web.Request) -> web.Response:
    ctx = await context(request)
    revoked = await services(request).admin.revoke_grant(
        ctx, request.match_info["grant_id"], approval_id=id_query(request, "approval_id")
    )
    return json_response(revoked, 202 if revoked.get("state") == "pending_approval" else 200)
