"""The AWS KMS endpoint (``POST /v1/kms``) for tools that speak only KMS, and the admin route that issues
its SigV4 credentials (``POST /v1/principals/{principal_id}/kms-credentials``).

Thin: read the body (SigV4 signs its hash), authenticate the signature through the KMS service, pick
the operation from ``X-Amz-Target`` (``TrentService.<Operation>``), hand the parsed body to the service
and render its answer as ``application/x-amz-json-1.1``. An error is the usual problem document that
also carries what botocore reads (``__type``, ``message``). Must never sign or judge anything itself.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, RootModel

from signer.errors import InvalidRequest, SignerError, Unavailable
from signer.http.body import loads_strict, parse_body, read_bytes
from signer.http.models import Strict
from signer.http.routes.common import api, context, json_response, max_body, services
from signer.http.schemas import View
from signer.http.state import CALLER
from signer.services.kms import TARGETS, KmsService, kms_error_type

AMZ_JSON = "application/x-amz-json-1.1"
_TARGET_PREFIX = "TrentService."


class KmsRequest(RootModel[dict[str, Any]]):
    """A KMS request body (``KeyId``, ``Message``, ``MessageType``, ``SigningAlgorithm``, ...), signed
    with SigV4 and named by ``X-Amz-Target: TrentService.Sign`` (or GetPublicKey, DescribeKey, ListKeys)."""


class KmsAnswer(RootModel[dict[str, Any]]):
    """The operation's answer as AWS KMS writes it."""


class IssueKmsCredentialBody(Strict):
    ttl_seconds: int | None = Field(default=None, ge=0, le=10 * 365 * 24 * 3600)


class KmsCredential(View):
    principal_id: str
    access_key_id: str
    secret_access_key: str
    expires_at: str | None
    revoke: str


def _kms(request: web.Request) -> KmsService:
    service = services(request).kms
    if service is None:
        raise Unavailable("the KMS API is not set up", code="kms_unavailable")
    return service


def _headers(request: web.Request) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


@api.operation(
    "POST",
    "/v1/kms",
    summary="AWS KMS (JSON 1.1, SigV4): Sign, GetPublicKey, DescribeKey, ListKeys on the caller's keys",
    tag="signing",
    auth="none",
    who="a principal's KMS credential (SigV4); Sign needs the sign_raw grant and a raw_digest rule",
    request=KmsRequest,
    response=KmsAnswer,
    media_type=AMZ_JSON,
    errors=(401, 403, 404, 409, 422, 429, 503),
)
async def kms(request: web.Request) -> web.Response:
    try:
        raw = await read_bytes(request, max_body(request))
        service = _kms(request)
        ctx, region = await service.authenticate(
            request.headers.get("Authorization"),
            request["request_id"],
            method=request.method,
            path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=_headers(request),
            body=raw,
        )
        request["principal"] = ctx.caller.principal_id
        request[CALLER] = ctx
        target = request.headers.get("X-Amz-Target", "")
        operation = target.removeprefix(_TARGET_PREFIX)
        if not target.startswith(_TARGET_PREFIX) or operation not in TARGETS:
            raise InvalidRequest(
                "X-Amz-Target names no KMS operation served here", code="unsupported_kms_operation"
            )
        document = loads_strict(raw)
        if not isinstance(document, dict):
            raise InvalidRequest("a KMS request body is a JSON object", code="invalid_kms_body")
        answer = await service.handle(ctx, operation, document, region)
    except SignerError as exc:
        exc.extra.setdefault("__type", kms_error_type(exc))
        exc.extra.setdefault("message", exc.message)
        raise
    response = json_response(answer)
    response.content_type = AMZ_JSON
    return response


@api.operation(
    "POST",
    "/v1/principals/{principal_id}/kms-credentials",
    summary="Issue a KMS (SigV4) credential to a service principal; the secret is shown once",
    tag="identity",
    who="admin",
    request=IssueKmsCredentialBody,
    response=KmsCredential,
    status=201,
    errors=(404, 409, 503),
)
async def issue_kms_credential(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, IssueKmsCredentialBody, max_body(request))
    return json_response(
        await _kms(request).issue(ctx, request.match_info["principal_id"], body.ttl_seconds), 201
    )
