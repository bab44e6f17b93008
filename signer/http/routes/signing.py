"""Signing routes: transactions, messages, typed data, EIP-7702 authorisations and digests, with the
``Idempotency-Key`` header.

Thin: parse, call one method of the signing service, render (200 with the signature, 202 when approvers
must decide first). Owns the digest an idempotency key names. Must never sign or judge anything itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from signer.errors import InvalidRequest
from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.models import (
    SignAuthorizationBody,
    SignDigestBody,
    SignMessageBody,
    SignTransactionBody,
    SignTypedDataBody,
)
from signer.http.routes.common import api, decode_message, json_response, max_body, services, signing_context
from signer.services.idempotency import Idempotency


def _signed(result: dict[str, Any]) -> web.Response:
    """200 with the signature, or 202 when the request waits for approvers (nothing was signed)."""
    if result.get("state") == "pending_approval":
        return json_response(result, 202)
    return json_response(result)


_SIGN_ERRORS = (404, 409, 422, 429, 503)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/transaction",
    summary="Sign an EVM transaction (fields or unsigned serialised hex)",
    tag="signing",
    who="service with the sign_transaction grant",
    request=SignTransactionBody,
    response=out.TransactionSignature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_transaction(request: web.Request) -> web.Response:
    ctx = await signing_context(request)
    body = await parse_body(request, SignTransactionBody, max_body(request))
    result = await services(request).signing.sign_transaction(
        ctx, request.match_info["key_id"], body.transaction, body.raw, _idempotency(request, body)
    )
    return _signed(result)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/message",
    summary="Sign a message: EIP-191 (secp256k1), ECDSA over SHA-256 (P-256) or Ed25519",
    tag="signing",
    who="service with the sign_message grant",
    request=SignMessageBody,
    response=out.EthSignature | out.P256Signature | out.Ed25519Signature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_message(request: web.Request) -> web.Response:
    ctx = await signing_context(request)
    body = await parse_body(request, SignMessageBody, max_body(request))
    message = decode_message(body.message, body.encoding)
    result = await services(request).signing.sign_message(
        ctx, request.match_info["key_id"], message, _idempotency(request, body)
    )
    return _signed(result)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/typed-data",
    summary="Sign EIP-712 typed data (v4)",
    tag="signing",
    who="service with the sign_typed_data grant",
    request=SignTypedDataBody,
    response=out.EthSignature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_typed_data(request: web.Request) -> web.Response:
    ctx = await signing_context(request)
    body = await parse_body(request, SignTypedDataBody, max_body(request))
    result = await services(request).signing.sign_typed_data(
        ctx, request.match_info["key_id"], body.typed_data, _idempotency(request, body)
    )
    return _signed(result)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/digest",
    summary="Sign a raw 32-byte digest (blind signing, audited as such)",
    tag="signing",
    who="service with the sign_raw grant",
    request=SignDigestBody,
    response=out.EthSignature | out.P256Signature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_digest(request: web.Request) -> web.Response:
    ctx = await signing_context(request)
    body = await parse_body(request, SignDigestBody, max_body(request))
    result = await services(request).signing.sign_digest(
        ctx, request.match_info["key_id"], body.digest, _idempotency(request, body)
    )
    return _signed(result)


@api.operation(
    "POST",
    "/v1/keys/{key_id}/sign/authorization",
    summary="Sign an EIP-7702 authorisation (chain id, delegate, nonce), judged by the delegate allowlist",
    tag="signing",
    who="service with the sign_authorization grant",
    request=SignAuthorizationBody,
    response=out.AuthorizationSignature,
    errors=_SIGN_ERRORS,
    other_responses={202: out.PendingApproval},
)
async def sign_authorization(request: web.Request) -> web.Response:
    ctx = await signing_context(request)
    body = await parse_body(request, SignAuthorizationBody, max_body(request))
    fields = {"chainId": body.chain_id, "address": body.delegate, "nonce": body.nonce}
    result = await services(request).signing.sign_authorization(
        ctx, request.match_info["key_id"], fields, _idempotency(request, body)
    )
    return _signed(result)


_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _idempotency(request: web.Request, body: BaseModel) -> Idempotency | None:
    """The ``Idempotency-Key`` header and the digest of what it names (route and body, canonical)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "Idempotency-Key is 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'",
            code="invalid_idempotency_key",
        )
    named = {"path": request.path, "body": body.model_dump(mode="json")}
    digest = hashlib.sha256(json.dumps(named, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Idempotency(key, digest)
