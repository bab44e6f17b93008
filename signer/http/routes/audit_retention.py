"""Audit retention routes: stream an archive of the oldest events (with their checkpoints), and prune
what an archive holds.

Thin: parse, call the retention service, stream or render. Admin only.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from signer.errors import Unavailable
from signer.http.body import parse_body
from signer.http.contract import Query
from signer.http.models import Strict
from signer.http.routes.audit_export import _time
from signer.http.routes.common import api, context, int_query, json_response, max_body, services
from signer.http.schemas import View
from signer.services.audit_retention import AuditRetention

# An archive may outlast one request deadline; the service pages with its own bounds.
LONG_POLL_PATHS = frozenset({"/v1/audit/archive"})


class PruneBody(Strict):
    before_seq: int = Field(
        ge=2, le=2**62, description="prune events before this seq (through the archive's end)"
    )
    archive_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the archive file (hex)")


class PruneAnswer(View):
    pruned_through: int = Field(ge=0)
    events_deleted: int = Field(ge=0)
    archive_digest: str


def _retention(request: web.Request) -> AuditRetention:
    found = services(request).audit_retention
    if found is None:
        raise Unavailable("audit retention is not running", code="checkpoints_unavailable")
    return found


@api.operation(
    "GET",
    "/v1/audit/archive",
    summary="Archive the oldest events through the last signed checkpoint before a seq and time (recorded)",
    tag="audit",
    who="admin",
    response={
        "type": "string",
        "description": "an export `signer audit verify` reads: events and checkpoints",
    },
    media_type="application/x-ndjson",
    headers={
        "X-Archive-First": {
            "description": "the first seq archived",
            "required": True,
            "schema": {"type": "string"},
        },
        "X-Archive-Through": {
            "description": "the last seq archived (a checkpoint's size)",
            "required": True,
            "schema": {"type": "string"},
        },
    },
    errors=(409, 503),
    query=(
        Query(
            "before_seq",
            {"type": "integer", "minimum": 2, "maximum": 2**62},
            "archive events before this seq",
        ),
        Query(
            "before", {"type": "string", "format": "date-time"}, "archive events recorded before this time"
        ),
    ),
)
async def audit_archive(request: web.Request) -> web.StreamResponse:
    ctx = await context(request)
    before_seq = None if "before_seq" not in request.query else int_query(request, "before_seq", 2, 2, 2**62)
    retention = _retention(request)
    plan = await retention.plan(ctx, before_seq, _time(request, "before"))
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson",
            "X-Archive-First": str(plan.first_seq),
            "X-Archive-Through": str(plan.through),
            "X-Request-Id": request["request_id"],
        }
    )
    await response.prepare(request)
    async for chunk in retention.archive(ctx, plan):
        await response.write(chunk)
    await response.write_eof()
    return response


@api.operation(
    "POST",
    "/v1/audit/prune",
    summary="Delete the events an archive holds (its digest names it); what remains still verifies",
    tag="audit",
    who="admin",
    request=PruneBody,
    response=PruneAnswer,
    errors=(404, 409, 503),
)
async def audit_prune(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, PruneBody, max_body(request))
    return json_response(await _retention(request).prune(ctx, body.before_seq, body.archive_digest))


class LedgerPruneAnswer(View):
    rows_deleted: int = Field(ge=0)
    before: str = Field(description="rows of policy limits whose window started before this were deleted")


@api.operation(
    "POST",
    "/v1/ledger/prune",
    summary="Delete usage ledger rows older than every limit window (grant budgets are kept; audited)",
    tag="audit",
    who="admin",
    response=LedgerPruneAnswer,
    errors=(503,),
)
async def ledger_prune(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await _retention(request).prune_ledger(ctx))
