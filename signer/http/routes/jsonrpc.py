"""The Ethereum JSON-RPC endpoint (``POST /v1/rpc``) for client libraries: web3.py, ethers, viem.

Thin: authenticate with the bearer token like every sign route, read the JSON body, hand it to the
JSON-RPC service, render its answer (200, or 204 when a batch held only notifications). A body that is
not JSON, or JSON that is neither an object nor an array, is a 400 problem document that also carries
JSON-RPC's error (-32700, -32600). Which methods exist and how errors map is the service's business
(``signer.services.jsonrpc``). Must never sign or judge anything itself.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import RootModel

from signer.errors import InvalidRequest, Unavailable
from signer.http.body import loads_strict, read_bytes
from signer.http.routes.common import api, json_response, max_body, services, signing_context
from signer.services.jsonrpc import INVALID_BODY_ANSWER, PARSE_ERROR_ANSWER


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
    except InvalidRequest as exc:
        # A problem document that is also JSON-RPC's answer (-32700), for clients that read either.
        raise InvalidRequest(exc.message, code=exc.code, **PARSE_ERROR_ANSWER) from None
    if not isinstance(document, dict | list):
        raise InvalidRequest(
            "a JSON-RPC body is an object or an array", code="invalid_jsonrpc_body", **INVALID_BODY_ANSWER
        )
    service = services(request).jsonrpc
    if service is None:
        raise Unavailable("JSON-RPC is not set up", code="jsonrpc_unavailable")
    answer = await service.handle(ctx, document)
    if answer is None:
        return web.Response(status=204)
    return json_response(answer)
