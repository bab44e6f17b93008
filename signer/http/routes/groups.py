"""Group routes: list groups, show one, add and remove members.

Thin: call one method of the policies service (which owns groups), render.
"""

from __future__ import annotations

from aiohttp import web

from signer.http import schemas as out
from signer.http.routes.common import GROUP_PATH, api, context, json_response, services


@api.operation(
    "GET",
    "/v1/groups",
    summary="List groups and their members",
    tag="groups",
    who="admin, auditor",
    response=out.GroupList,
)
async def list_groups(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response({"items": await services(request).policies.list_groups(ctx)})


@api.operation(
    "GET",
    "/v1/groups/{group}",
    path_schemas={"group": GROUP_PATH},
    summary="A group's members",
    tag="groups",
    who="admin, auditor",
    response=out.Group,
)
async def get_group(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await services(request).policies.get_group(ctx, request.match_info["group"]))


@api.operation(
    "PUT",
    "/v1/groups/{group}/members/{principal_id}",
    path_schemas={"group": GROUP_PATH},
    summary="Add a principal to a group",
    tag="groups",
    who="admin",
    response=out.MembershipChange,
    errors=(404,),
)
async def add_member(request: web.Request) -> web.Response:
    ctx = await context(request)
    m = request.match_info
    return json_response(await services(request).policies.add_member(ctx, m["group"], m["principal_id"]))


@api.operation(
    "DELETE",
    "/v1/groups/{group}/members/{principal_id}",
    path_schemas={"group": GROUP_PATH},
    summary="Remove a principal from a group",
    tag="groups",
    who="admin",
    response=out.MembershipChange,
    errors=(404,),
)
async def remove_member(request: web.Request) -> web.Response:
    ctx = await context(request)
    m = request.match_info
    return json_response(await services(request).policies.remove_member(ctx, m["group"], m["principal_id"]))
