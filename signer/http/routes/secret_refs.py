"""Resolving secret references: many references, and a scope's readable secrets, in one call.

Thin: parse, call the resolver, render with ``Cache-Control: no-store``. The resolver fetches each secret
through the same pipeline as ``POST /v1/secrets/{id}/fetch`` (each fetch audited on its own), answers
all or nothing, and a reference the caller cannot see answers like a missing one.
"""

from __future__ import annotations

from aiohttp import web

from signer.http.body import parse_body
from signer.http.routes.common import api, context, json_response, services
from signer.http.secret_ref_models import ResolvedSecrets, ResolveSecretsBody
from signer.http.state import SETTINGS


@api.operation(
    "POST",
    "/v1/secrets/resolve",
    summary="Resolve many secret references (and a scope's readable secrets) to their values, all or none",
    tag="secrets",
    who="a service principal or admin with `read_value` on each (and `list` for a scope's)",
    request=ResolveSecretsBody,
    response=ResolvedSecrets,
    errors=(403, 404, 409, 422, 429, 502, 503, 504),
)
async def resolve_secrets(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, ResolveSecretsBody, request.app[SETTINGS].secret_body_bytes)
    resolved = await services(request).secret_refs.resolve(
        ctx,
        list(body.references),
        workspace=body.workspace,
        scope=body.scope,
        workload=body.workload,
        source=request.remote,
    )
    response = json_response(resolved)
    response.headers["Cache-Control"] = "no-store"
    return response
