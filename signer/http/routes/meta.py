"""The contract's own routes: ``/openapi.json`` and ``/docs``, generated once from the route registry.

Owns the security headers of the pages served to browsers. Must never be built per request, and never
load anything from elsewhere (no script, no external resource).
"""

from __future__ import annotations

import functools
import json

from aiohttp import web

from signer.http.contract import openapi, render_html
from signer.http.routes.common import api

# Pages served to browsers: nothing may load from elsewhere, run script, or be framed.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _document() -> tuple[str, str]:
    """The OpenAPI document (JSON) and its HTML rendering, built once from the registry."""
    document = openapi(api)
    return json.dumps(document, indent=1), render_html(document)


@api.operation(
    "GET",
    "/openapi.json",
    summary="This OpenAPI 3.1 document",
    tag="contract",
    auth="none",
    response={"type": "object"},
)
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(text=_document()[0], content_type="application/json", headers=_PAGE_HEADERS)


@api.operation(
    "GET",
    "/docs",
    summary="API reference rendered from /openapi.json (self-contained HTML)",
    tag="contract",
    auth="none",
    response={"type": "string"},
    media_type="text/html",
)
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_document()[1], content_type="text/html", headers=_PAGE_HEADERS)
