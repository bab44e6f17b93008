"""Audit route: export the hash-chained audit log as JSONL, one page at a time.

Thin: parse the paging parameters, call the audit service, stream its lines. Must never rewrite an
event: the lines are the canonical text the chain hashes.
"""

from __future__ import annotations

from aiohttp import web

from signer.http.contract import Query
from signer.http.routes.common import api, context, int_query, services


@api.operation(
    "GET",
    "/v1/audit/events",
    summary="Export the hash-chained audit log as JSONL (X-Audit-Head: newest seq when read)",
    tag="audit",
    who="auditor, admin",
    response={"type": "string", "description": "one canonical JSON audit event per line"},
    media_type="application/x-ndjson",
    headers={
        "X-Audit-Head": {
            "description": "the newest seq when the page was read: page until `after` reaches it",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    },
    errors=(503,),
    query=(
        Query(
            "after",
            {"type": "integer", "minimum": 0, "maximum": 2**62},
            "return events with seq > after (default 0)",
        ),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "page size (default 1000)"),
    ),
)
async def audit_events(request: web.Request) -> web.StreamResponse:
    ctx = await context(request)
    after = int_query(request, "after", 0, 0, 2**62)
    limit = int_query(request, "limit", 1000, 1, 10_000)
    lines, head = await services(request).audit.export(ctx, after=after, limit=limit)
    return web.Response(
        text="".join(lines), content_type="application/x-ndjson", headers={"X-Audit-Head": str(head)}
    )
