"""What every route module shares: the one ``Api`` registry and the helpers a thin handler needs.

Owns authentication at the edge (``context`` turns the Authorization header into a request context
through the auth service), the paging query parsers, the JSON response and a message's text
encoding (the sign route and the policy dry run both take one). Everything else, role checks
included, is the services' job. Must never hold a resource's handlers: those live in one module per
resource, registered in ``signer.http.routes``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import orjson
from aiohttp import web

from policy.names import MAX_IDENTIFIER, NameKind
from signer.errors import InvalidRequest
from signer.http.contract import Api
from signer.http.patterns import BASE64_PATTERN, HEX_PATTERN, name_schema
from signer.http.state import CALLER, SERVICES, SETTINGS, Services
from signer.http.tls import peer_certificate
from signer.services.context import RequestContext

api = Api(
    "signer",
    "1",
    "Self-hosted transaction signing: keys inside a PKCS#11 token, grants, and a hash-chained audit log.",
)
routes = api.routes

# The id pattern of query parameters; path parameters get the same one from ``signer.http.contract``.
ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
# A group name in a path: the groups' name rule (up to four code points a character before NFKC).
GROUP_PATH = {
    "type": "string",
    "minLength": 1,
    "maxLength": 4 * MAX_IDENTIFIER,
    **name_schema(NameKind.IDENTIFIER),
}
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# \Z, not $: the document's patterns are ECMA-262, where $ does not match before a final newline.
_HEX = re.compile(HEX_PATTERN.removesuffix("$") + r"\Z")
_BASE64 = re.compile(BASE64_PATTERN.removesuffix("$") + r"\Z")


# orjson writes the same JSON document as ``json.dumps`` (compact, and UTF-8 where the standard library
# escapes to ASCII) in a twentieth of the time; what it would write differently or not at all (integers
# beyond 64 bits, non-string keys, dataclasses and datetimes, which the standard library refuses) goes
# the standard way, so a response that encoded before encodes the same and one that failed still fails.
_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def json_response(data: Any, status: int = 200) -> web.Response:
    try:
        body = orjson.dumps(data, option=_ORJSON_STRICT)
    except TypeError:
        body = json.dumps(data).encode()
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def max_body(request: web.Request) -> int:
    return request.app[SETTINGS].max_body_bytes


async def _authenticate(request: web.Request, *, cached: bool) -> RequestContext:
    """The bearer token when an Authorization header is present (it wins), else a verified TLS client
    certificate registered to a principal, else 401."""
    header = request.headers.get("Authorization")
    auth = services(request).auth
    if header is None:
        der = peer_certificate(request.transport)
        if der is not None:
            return await auth.authenticate_certificate(der, request["request_id"], cached=cached)
    return await auth.authenticate(header, request["request_id"], cached=cached)


async def context(request: web.Request) -> RequestContext:
    ctx = await _authenticate(request, cached=False)
    request["principal"] = ctx.caller.principal_id  # for the access log: the id, never the token
    request[CALLER] = ctx
    return ctx


async def signing_context(request: web.Request) -> RequestContext:
    # Signing may authenticate from the facts cache: its commit re-checks the token under the write lock.
    ctx = await _authenticate(request, cached=True)
    ctx = RequestContext(ctx.request_id, ctx.caller, ctx.epoch, request.remote)
    request["principal"] = ctx.caller.principal_id
    request[CALLER] = ctx
    return ctx


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InvalidRequest(f"{name} must be a non-negative integer", code="invalid_field", field=name)
    value = int(text)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", code="invalid_field", field=name)
    return value


def id_query(request: web.Request, name: str) -> str | None:
    text = request.query.get(name)
    if text is not None and not _ID_RE.match(text):
        raise InvalidRequest(f"{name} is not a valid id", code="invalid_field", field=name)
    return text


def decode_message(message: str, encoding: str) -> bytes:
    """The message's bytes. Hex and base64 are checked against the patterns the OpenAPI document states
    (``signer.http.models``): hex digits in pairs after an optional ``0x``; RFC 4648 base64, padded."""
    if encoding == "utf8":
        return message.encode("utf-8")
    if encoding == "hex":
        if not _HEX.match(message):
            raise InvalidRequest("message is not valid hex", code="invalid_hex", field="message")
        return bytes.fromhex(message[2:] if message[:2] in ("0x", "0X") else message)
    if not _BASE64.match(message):
        raise InvalidRequest("message is not valid base64", code="invalid_base64", field="message")
    return base64.b64decode(message, validate=True)
