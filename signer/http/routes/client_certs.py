"""Client-certificate routes: register a TLS client certificate for a service principal, list a
principal's certificates, revoke one (``/v1/principals/{principal_id}/client-certificates``, admin).

Thin: parse, call one method of the client-certificate service, render. A request that arrives over TLS
with a verified, registered certificate and no Authorization header runs as that principal
(``routes.common``). Must never echo the PEM it was sent.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from signer.http.body import parse_body
from signer.http.models import Strict
from signer.http.routes.common import api, context, json_response, max_body, services
from signer.http.schemas import View
from signer.services.client_certs import ClientCertService


class RegisterClientCertBody(Strict):
    certificate: str = Field(min_length=1, max_length=65536, description="One PEM-encoded X.509 certificate.")
    ttl_seconds: int | None = Field(
        default=None, ge=1, le=10 * 365 * 24 * 3600, description="End the mapping before notAfter."
    )


class ClientCertificate(View):
    fingerprint: str
    principal_id: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class ClientCertificateRegistered(ClientCertificate):
    subject: str
    not_after: str


class ClientCertificateList(View):
    items: list[ClientCertificate]


class ClientCertificateRevoked(View):
    fingerprint: str
    principal_id: str
    revoked: bool


def _service(request: web.Request) -> ClientCertService:
    service = services(request).client_certs
    assert service is not None
    return service


@api.operation(
    "POST",
    "/v1/principals/{principal_id}/client-certificates",
    summary="Register a TLS client certificate for a service principal (by its SHA-256 fingerprint)",
    tag="identity",
    who="admin",
    request=RegisterClientCertBody,
    response=ClientCertificateRegistered,
    status=201,
    errors=(400, 404, 409, 503),
)
async def register_client_certificate(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, RegisterClientCertBody, max_body(request))
    answer = await _service(request).register(
        ctx, request.match_info["principal_id"], body.certificate, body.ttl_seconds
    )
    return json_response(answer, 201)


@api.operation(
    "GET",
    "/v1/principals/{principal_id}/client-certificates",
    summary="A principal's registered client certificates (revoked and expired ones included)",
    tag="identity",
    who="admin",
    response=ClientCertificateList,
    errors=(404, 503),
)
async def list_client_certificates(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await _service(request).list(ctx, request.match_info["principal_id"]))


@api.operation(
    "DELETE",
    "/v1/principals/{principal_id}/client-certificates/{fingerprint}",
    summary="Revoke a client certificate's mapping: the very next request with it is refused",
    tag="identity",
    who="admin",
    response=ClientCertificateRevoked,
    errors=(404, 503),
)
async def revoke_client_certificate(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(
        await _service(request).revoke(
            ctx, request.match_info["principal_id"], request.match_info["fingerprint"]
        )
    )
