"""The Ethereum JSON-RPC endpoint (``POST /v1/rpc``) for client libraries: web3.py, ethers, viem.

Thin: authenticate with the bearer token like every sign route, read the JSON body (a body that is not
JSON answers JSON-RPC's -32700), hand it to the JSON-RPC service, render its answer (200, or 204 when a
batch held only notifications). Which methods exist and how errors map is the service's business
(``signer.services.jsonrpc``). Must never sign or judge anything itself.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import RootModel

from signer.errors import InvalidRequest, Unavailable
from signer.http.body import loads_strict, read_bytes
from signer.http.routes.common import api, json_response, max_body, services, signing_context
from signer.services.jsonrpc import parse_error


class JsonRpcBody(RootModel[dict[str, Any] | list[Any]]):
    """A JSON-RPC 2.0 call (``{"jsonrpc": "2.0", "id", "method", "params"}``) or a batch of them."""


class JsonRpcAnswer(RootModel[dict[str, Any] | list[Any]]):
    """A JSON-RPC 2.0 response (``result`` or ``error``: ``code``, ``message``, ``data``) or a batch."""


@api.operation(
    "POST",
    "/v1/rpc",
    summary="Ethereum JSON-RPC: eth_accounts, eth_signTransaction, eth_sign, personal_sign, "
    "eth_signTypedData(_v4), health_status; batches",
    tag="signing",
    who="service with grants on the keys it names by address",
    request=JsonRpcBody,
    response=JsonRpcAnswer,
    other_responses={204: None},
)
async def json_rpc(request: web.Request) -> web.Response:
    ctx = await signing_context(request)
    if request.content_type != "application/json":
        raise InvalidRequest(
            "send a JSON body with Content-Type: application/json", code="unsupported_media_type"
        )
    raw = await read_bytes(request, max_body(request))
    try:
        document = loads_strict(raw)
    except InvalidRequest:
        return json_response(parse_error())
    if not isinstance(document, dict | list):
        raise InvalidRequest("a JSON-RPC body is an object or an array", code="invalid_jsonrpc_body")
    service = services(request).jsonrpc
    if service is None:
        raise Unavailable("JSON-RPC is not set up", code="jsonrpc_unavailable")
    answer = await service.handle(ctx, document)
    if answer is None:
        return web.Response(status=204)
    return json_response(answer)
