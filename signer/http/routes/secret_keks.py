"""KEK rotation routes: start rotating a scope's key-encryption key, read its progress, destroy a
retired KEK.

Thin: take the scope (and KEK id) from the path, call the rotation service, render its answer.
"""

from __future__ import annotations

from aiohttp import web

from policy.names import NameKind
from signer.errors import Unavailable
from signer.http import kek_schemas as out
from signer.http.patterns import name_schema
from signer.http.routes.common import api, context, json_response, services
from signer.services.kek_rotation import KekRotations

_SCOPE_PATH = {"type": "string", "minLength": 1, "maxLength": 64, **name_schema(NameKind.IDENTIFIER)}
_KEK_PATH = {"type": "string", "pattern": "^([0-9a-f]{2}){1,64}$"}


def _rotations(request: web.Request) -> KekRotations:
    found = services(request).kek_rotations
    if found is None:
        raise Unavailable("KEK rotation is not running", code="kek_rotation_unavailable")
    return found


@api.operation(
    "POST",
    "/v1/secrets/keks/{scope}/rotate",
    path_schemas={"scope": _SCOPE_PATH},
    summary="Rotate a scope's KEK: a new KEK in the token, every version's data key rewrapped under it",
    tag="secrets",
    who="admin",
    status=202,
    response=out.KekRotation,
    errors=(400, 403, 503),
)
async def rotate_kek(request: web.Request) -> web.Response:
    ctx = await context(request)
    view, _ = await _rotations(request).start(ctx, request.match_info["scope"])
    return json_response(view, status=202)


@api.operation(
    "GET",
    "/v1/secrets/keks/{scope}/rotation",
    path_schemas={"scope": _SCOPE_PATH},
    summary="The progress of a scope's latest KEK rotation",
    tag="secrets",
    who="admin, auditor",
    response=out.KekRotation,
    errors=(400, 403, 404, 503),
)
async def kek_rotation(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await _rotations(request).status(ctx, request.match_info["scope"]))


@api.operation(
    "DELETE",
    "/v1/secrets/keks/{scope}/retired/{kek_id}",
    path_schemas={"scope": _SCOPE_PATH, "kek_id": _KEK_PATH},
    summary="Destroy a KEK a finished rotation retired (refused while anything is wrapped under it)",
    tag="secrets",
    who="admin",
    response=out.KekDestroyed,
    errors=(400, 403, 404, 409, 503),
)
async def destroy_retired_kek(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(
        await _rotations(request).destroy_retired(
            ctx, request.match_info["scope"], request.match_info["kek_id"]
        )
    )
