"""Secret version routes: list a secret's versions, promote a staged one, disable, enable or destroy one.

Thin: parse (the version from the path, ``If-Match`` for check-and-set, a reason), call one method of
the secret versions service, render with the secret's ``ETag``. Never a value.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from policy.names import NameKind
from signer.errors import InvalidRequest
from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Query
from signer.http.models import SecretFolderDefaultsBody, SecretVersionStateBody
from signer.http.patterns import name_schema
from signer.http.routes.common import api, context, json_response, services
from signer.http.state import SETTINGS
from signer.services.secret_etag import IfMatch

VERSION_PATH = {"type": "integer", "minimum": 1, "maximum": 999999999}
_VERSION = re.compile(r"\A[1-9][0-9]{0,8}\Z")
ETAG_HEADER = {
    "ETag": {
        "description": 'the secret\'s revision, "r<revision>": send it back in If-Match to write only '
        "if nobody changed it since",
        "required": True,
        "schema": {"type": "string", "pattern": '^"r[0-9]+"$'},
    }
}


def if_match(request: web.Request) -> IfMatch | None:
    return IfMatch.parse(request.headers.get("If-Match"))


def with_etag(view: dict[str, Any], status: int = 200) -> web.Response:
    response = json_response(view, status)
    response.headers["ETag"] = f'"r{view["revision"]}"'
    return response


def _version(request: web.Request) -> int:
    text = request.match_info["version"]
    if not _VERSION.match(text):
        raise InvalidRequest("version is 1 to 999999999", code="invalid_version", field="version")
    return int(text)


@api.operation(
    "GET",
    "/v1/secrets/{secret_id}/versions",
    summary="List a secret's versions: who made each, when, its state and why (never a value)",
    tag="secrets",
    who="a principal with `read_metadata` on it",
    response=out.SecretVersionList,
    errors=(403, 404, 503),
    headers=ETAG_HEADER,
)
async def list_secret_versions(request: web.Request) -> web.Response:
    ctx = await context(request)
    return with_etag(await services(request).secret_versions.list(ctx, request.match_info["secret_id"]))


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/versions/{version}/promote",
    path_schemas={"version": VERSION_PATH},
    summary="Promote a staged version to current (the previous one enters its overlap)",
    tag="secrets",
    who="a principal with `update` on it; If-Match for check-and-set",
    response=out.Secret,
    errors=(400, 403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def promote_secret_version(request: web.Request) -> web.Response:
    ctx = await context(request)
    version = _version(request)
    view = await services(request).secret_versions.promote(
        ctx, request.match_info["secret_id"], version, if_match(request)
    )
    return with_etag(view)


async def _change(request: web.Request, action: str) -> web.Response:
    ctx = await context(request)
    version = _version(request)
    body = await parse_body(request, SecretVersionStateBody, request.app[SETTINGS].max_body_bytes)
    view = await services(request).secret_versions.change_state(
        ctx, request.match_info["secret_id"], version, action, reason=body.reason, if_match=if_match(request)
    )
    return with_etag(view)


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/versions/{version}/disable",
    path_schemas={"version": VERSION_PATH},
    summary="Disable a version (not the current one): fetches of it answer 409 secret_version_disabled",
    tag="secrets",
    who="a principal with `update` on it; If-Match for check-and-set",
    request=SecretVersionStateBody,
    response=out.Secret,
    errors=(400, 403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def disable_secret_version(request: web.Request) -> web.Response:
    return await _change(request, "disable")


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/versions/{version}/enable",
    path_schemas={"version": VERSION_PATH},
    summary="Re-enable a disabled version",
    tag="secrets",
    who="a principal with `update` on it; If-Match for check-and-set",
    request=SecretVersionStateBody,
    response=out.Secret,
    errors=(400, 403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def enable_secret_version(request: web.Request) -> web.Response:
    return await _change(request, "enable")


@api.operation(
    "POST",
    "/v1/secrets/{secret_id}/versions/{version}/destroy",
    path_schemas={"version": VERSION_PATH},
    summary="Destroy a version for good: its wrapped data key and sealed fields are erased (audited)",
    tag="secrets",
    who="a principal with `delete` on it; If-Match for check-and-set",
    request=SecretVersionStateBody,
    response=out.Secret,
    errors=(400, 403, 404, 409, 503),
    headers=ETAG_HEADER,
)
async def destroy_secret_version(request: web.Request) -> web.Response:
    return await _change(request, "destroy")


@api.operation(
    "GET",
    "/v1/secret-folder-defaults",
    summary="The rotation interval and overlap a secret created in a folder gets",
    tag="secrets",
    who="a principal with `list` on the folder",
    response=out.SecretFolderDefaults,
    errors=(400, 403, 503),
    query=(
        Query(
            "folder",
            {"type": "string", "minLength": 1, "maxLength": 512, **name_schema(NameKind.SCOPE)},
            "the folder",
            required=True,
        ),
    ),
)
async def show_secret_folder_defaults(request: web.Request) -> web.Response:
    ctx = await context(request)
    folder = request.query.get("folder")
    if folder is None:
        raise InvalidRequest("folder is required", code="invalid_field", field="folder")
    return json_response(await services(request).secret_versions.folder_defaults(ctx, folder))


@api.operation(
    "PUT",
    "/v1/secret-folder-defaults",
    summary="Set a folder's rotation interval and overlap for secrets created in it or below from now on",
    tag="secrets",
    who="a principal with `update` on the folder",
    request=SecretFolderDefaultsBody,
    response=out.SecretFolderDefaults,
    errors=(400, 403, 503),
)
async def set_secret_folder_defaults(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, SecretFolderDefaultsBody, request.app[SETTINGS].max_body_bytes)
    return json_response(
        await services(request).secret_versions.set_folder_defaults(
            ctx,
            body.folder,
            rotation_interval_seconds=body.rotation_interval_seconds,
            overlap_seconds=body.overlap_seconds,
        )
    )
