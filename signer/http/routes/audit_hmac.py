"""Audit HMAC route: the HMAC an audit event holds in place of a value, for an auditor to search by.

Thin: parse the body, call the audit HMAC service, render. The value is never echoed, logged or kept.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from signer.errors import Unavailable
from signer.http.body import parse_body
from signer.http.models import Strict
from signer.http.routes.common import api, context, json_response, max_body, services
from signer.http.schemas import View


class AuditHmacBody(Strict):
    field: Literal["idempotency_key"] = Field(description="the audit field the value would be written as")
    value: str = Field(min_length=1, max_length=4096, description="the value to look for (never stored)")


class AuditHmacAnswer(View):
    field: str
    hmac: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA256 under the install's audit field key"
    )
    event_field: str = Field(description="the event field that holds it, e.g. idempotency_key_hmac")


@api.operation(
    "POST",
    "/v1/audit/hmac",
    summary="The HMAC an audit event holds for a value (search the log without the log storing it)",
    tag="audit",
    who="auditor, admin",
    request=AuditHmacBody,
    response=AuditHmacAnswer,
    errors=(429, 503),
)
async def audit_hmac(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, AuditHmacBody, max_body(request))
    service = services(request).audit_hmac
    if service is None:
        raise Unavailable("the audit field key is not loaded", code="audit_hmac_unavailable")
    return json_response(await service.compute(ctx, body.field, body.value))
