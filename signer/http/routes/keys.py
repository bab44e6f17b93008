"""Key routes: create, list and show keys held in the token, and move them along their lifecycle.

Thin: parse, call one method of the keys service, render. A service sees only keys granted to it, and an
ungranted key answers exactly like a missing one (the service decides; nothing here may tell them apart).
One route per lifecycle transition (``activate``, ``suspend``, ``deactivate``, ``compromise``,
``destroy``), as secret versions have; the old ``disable`` and ``enable`` are ``suspend`` and
``activate`` (asking for the state the key is already in answers the key unchanged, as they always did).
A transition policy sends to approvers answers 202 with the pending request; the same route with its
``approval_id`` completes it once approved.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Link, Query
from signer.http.models import CreateKeyBody, KeyCompromiseBody, KeyDestroyBody, KeyStateBody
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
from signer.services.key_states import KeyAction


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
        "SuspendKey": Link("suspend_key", {"key_id": "$response.body#/id"}),
        "ActivateKey": Link("activate_key", {"key_id": "$response.body#/id"}),
        "DeactivateKey": Link("deactivate_key", {"key_id": "$response.body#/id"}),
    },
)
async def create_key(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, CreateKeyBody, max_body(request))
    return json_response(
        await services(request).keys.create(
            ctx, body.curve, body.label, body.scope, list(body.tags), inactive=body.inactive
        ),
        201,
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
    summary="Disable a key (the same as suspend; kept for old clients)",
    tag="keys",
    who="admin",
    response=out.Key,
    other_responses={202: out.PendingApproval},
    errors=(403, 404, 409, 503),
)
async def disable_key(request: web.Request) -> web.Response:
    ctx = await context(request)
    return _answer(
        await services(request).keys.change_state(
            ctx, request.match_info["key_id"], KeyAction.SUSPEND, via="disable"
        )
    )


@api.operation(
    "POST",
    "/v1/keys/{key_id}/enable",
    summary="Enable a disabled key (the same as activate; kept for old clients)",
    tag="keys",
    who="admin",
    response=out.Key,
    other_responses={202: out.PendingApproval},
    errors=(403, 404, 409, 503),
)
async def enable_key(request: web.Request) -> web.Response:
    ctx = await context(request)
    return _answer(
        await services(request).keys.change_state(
            ctx, request.match_info["key_id"], KeyAction.ACTIVATE, via="enable"
        )
    )


def _answer(view: dict[str, Any]) -> web.Response:
    # 202: policy sends this transition to approvers; nothing changed (complete it with approval_id).
    return json_response(view, 202 if view.get("state") == "pending_approval" else 200)


async def _transition(request: web.Request, action: KeyAction) -> web.Response:
    ctx = await context(request)
    key_id = request.match_info["key_id"]
    keys = services(request).keys
    if action is KeyAction.COMPROMISE:
        compromise = await parse_body(request, KeyCompromiseBody, max_body(request))
        view = await keys.change_state(
            ctx,
            key_id,
            action,
            reason=compromise.reason,
            confirm=compromise.confirm,
            compromised_at=compromise.compromised_at,
            approval_id=compromise.approval_id,
        )
    elif action is KeyAction.DESTROY:
        destroy = await parse_body(request, KeyDestroyBody, max_body(request))
        view = await keys.change_state(
            ctx,
            key_id,
            action,
            reason=destroy.reason,
            confirm=destroy.confirm,
            approval_id=destroy.approval_id,
        )
    else:
        body = await parse_body(request, KeyStateBody, max_body(request))
        view = await keys.change_state(ctx, key_id, action, reason=body.reason, approval_id=body.approval_id)
    return _answer(view)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/activate",
    summary="Activate a key that is suspended or not yet active: it signs again",
    tag="keys",
    who="admin",
    request=KeyStateBody,
    response=out.Key,
    other_responses={202: out.PendingApproval},
    errors=(400, 403, 404, 409, 503),
)
async def activate_key(request: web.Request) -> web.Response:
    return await _transition(request, KeyAction.ACTIVATE)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/suspend",
    summary="Suspend an active key: it signs nothing until activated again",
    tag="keys",
    who="admin",
    request=KeyStateBody,
    response=out.Key,
    other_responses={202: out.PendingApproval},
    errors=(400, 403, 404, 409, 503),
)
async def suspend_key(request: web.Request) -> web.Response:
    return await _transition(request, KeyAction.SUSPEND)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/deactivate",
    summary="Deactivate a key for good: it never signs again; its public key stays to verify",
    tag="keys",
    who="admin",
    request=KeyStateBody,
    response=out.Key,
    other_responses={202: out.PendingApproval},
    errors=(400, 403, 404, 409, 503),
)
async def deactivate_key(request: web.Request) -> web.Response:
    return await _transition(request, KeyAction.DEACTIVATE)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/compromise",
    summary="Declare a key compromised (irreversible; confirm with its label): it never signs again",
    tag="keys",
    who="admin",
    request=KeyCompromiseBody,
    response=out.Key,
    other_responses={202: out.PendingApproval},
    errors=(400, 403, 404, 409, 503),
)
async def compromise_key(request: web.Request) -> web.Response:
    return await _transition(request, KeyAction.COMPROMISE)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/destroy",
    summary="Destroy a deactivated or compromised key's private key in the token (irreversible; "
    "confirm with its label); its record and public key stay",
    tag="keys",
    who="admin",
    request=KeyDestroyBody,
    response=out.Key,
    other_responses={202: out.PendingApproval},
    errors=(400, 403, 404, 409, 503),
)
async def destroy_key(request: web.Request) -> web.Response:
    return await _transition(request, KeyAction.DESTROY)
