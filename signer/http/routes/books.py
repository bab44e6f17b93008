"""Books routes: the address book, the token book and registered functions, which the console shows
beside what a request carries. Admins write; admins, approvers and auditors read.

Thin: parse, call one method of the books service, render.
"""

from __future__ import annotations

from aiohttp import web

from signer.http import books_schemas as out
from signer.http.body import parse_body
from signer.http.contract import Query
from signer.http.routes.common import api, context, json_response, max_body, services
from signer.services.books import BookService

_ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
_CHAIN = {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"}
_SELECTOR = {"type": "string", "pattern": "^0x[0-9a-fA-F]{8}$"}


def _books(request: web.Request) -> BookService:
    books = services(request).books
    if books is None:  # built by signer.app with every other service
        raise web.HTTPNotFound()
    return books


def _chain(request: web.Request) -> int:
    text = request.match_info["chain_id"]
    return int(text) if text.isdigit() and len(text) < 19 else 0  # 0: refused by the service


@api.operation(
    "GET",
    "/v1/books/addresses",
    summary="The address book",
    tag="books",
    who="admin, approver, auditor",
    response=out.AddressList,
)
async def list_addresses(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response({"items": await _books(request).list_addresses(ctx)})


@api.operation(
    "PUT",
    "/v1/books/addresses/{address}",
    path_schemas={"address": _ADDRESS},
    summary="Name an address (its label and a note), replacing any entry",
    tag="books",
    who="admin",
    request=out.AddressBody,
    response=out.AddressEntry,
)
async def put_address(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, out.AddressBody, max_body(request))
    entry = await _books(request).put_address(ctx, request.match_info["address"], body.label, body.note)
    return json_response(entry)


@api.operation(
    "DELETE",
    "/v1/books/addresses/{address}",
    path_schemas={"address": _ADDRESS},
    summary="Remove an address book entry",
    tag="books",
    who="admin",
    response=out.Removed,
    errors=(400, 404),
)
async def remove_address(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await _books(request).remove_address(ctx, request.match_info["address"]))


@api.operation(
    "GET",
    "/v1/books/tokens",
    summary="The token book",
    tag="books",
    who="admin, approver, auditor",
    response=out.TokenList,
)
async def list_tokens(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response({"items": await _books(request).list_tokens(ctx)})


@api.operation(
    "PUT",
    "/v1/books/tokens/{chain_id}/{contract}",
    path_schemas={"chain_id": _CHAIN, "contract": _ADDRESS},
    summary="Name a token contract on a chain (symbol, decimals), replacing any entry",
    tag="books",
    who="admin",
    request=out.TokenBody,
    response=out.TokenEntry,
)
async def put_token(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, out.TokenBody, max_body(request))
    entry = await _books(request).put_token(
        ctx, _chain(request), request.match_info["contract"], body.symbol, body.decimals
    )
    return json_response(entry)


@api.operation(
    "DELETE",
    "/v1/books/tokens/{chain_id}/{contract}",
    path_schemas={"chain_id": _CHAIN, "contract": _ADDRESS},
    summary="Remove a token book entry",
    tag="books",
    who="admin",
    response=out.Removed,
    errors=(400, 404),
)
async def remove_token(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(
        await _books(request).remove_token(ctx, _chain(request), request.match_info["contract"])
    )


@api.operation(
    "GET",
    "/v1/books/functions",
    summary="Registered functions (selector, signature, contract)",
    tag="books",
    who="admin, approver, auditor",
    response=out.FunctionList,
)
async def list_functions(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response({"items": await _books(request).list_functions(ctx)})


@api.operation(
    "POST",
    "/v1/books/functions",
    summary="Register a function signature, or a contract ABI's functions",
    tag="books",
    who="admin",
    request=out.FunctionBody,
    response=out.FunctionList,
)
async def register_functions(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, out.FunctionBody, max_body(request))
    items = await _books(request).register(
        ctx, signature=body.signature, abi=body.abi, contract=body.contract
    )
    return json_response({"items": items})


@api.operation(
    "DELETE",
    "/v1/books/functions/{selector}",
    path_schemas={"selector": _SELECTOR},
    summary="Remove a registered function",
    tag="books",
    who="admin",
    response=out.Removed,
    errors=(400, 404),
    query=(Query("contract", _ADDRESS, "the contract it was registered for (absent: every contract)"),),
)
async def remove_function(request: web.Request) -> web.Response:
    ctx = await context(request)
    contract = request.query.get("contract")
    return json_response(await _books(request).remove_function(ctx, request.match_info["selector"], contract))
