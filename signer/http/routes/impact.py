"""Impact review, usage and operator checklist routes: ask what an action would change before doing
it, read who used what and when, and read what needs an operator's attention.

Thin: parse, call one method of the impact, usage or checklist service, render. Admins and auditors.
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from signer.http import impact_schemas as out
from signer.http.body import parse_body
from signer.http.contract import Query
from signer.http.routes.common import api, context, int_query, json_response, max_body, services

T = TypeVar("T")


def _need(service: T | None) -> T:
    # Built by signer.app with every other service; None only in an app assembled without them.
    if service is None:
        raise web.HTTPNotFound()
    return service


_DAYS = {"type": "integer", "minimum": 0, "maximum": 3660}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}


@api.operation(
    "POST",
    "/v1/impact",
    summary="Impact review (a dry run): who loses or keeps access, what was used, what fails",
    tag="impact",
    who="admin, auditor",
    request=out.ImpactBody,
    response=out.ImpactReport,
    errors=(404, 503),
)
async def impact_review(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, out.ImpactBody, max_body(request))
    report = await _need(services(request).impact).review(ctx, body.action, body.id, body.days)
    return json_response(report)


@api.operation(
    "GET",
    "/v1/checklist",
    summary="The operator checklist: what is wrong, why it matters, what to do",
    tag="impact",
    who="admin, auditor",
    response=out.Checklist,
    errors=(503,),
    query=(
        Query("days", _DAYS, "leave alone secrets, grants and principals younger than this (default 30)"),
        Query("limit", _LIMIT, "entries shown per item (default 100); counts are of all"),
        Query(
            "rotated_days", _DAYS, "a secret with one version older than this is never rotated (default 90)"
        ),
    ),
)
async def checklist(request: web.Request) -> web.Response:
    ctx = await context(request)
    days = int_query(request, "days", 30, 0, 3660)
    limit = int_query(request, "limit", 100, 1, 1000)
    rotated = int_query(request, "rotated_days", 90, 0, 3660)
    service = _need(services(request).checklist)
    return json_response(await service.checklist(ctx, days=days, limit=limit, rotated_days=rotated))


@api.operation(
    "GET",
    "/v1/usage",
    summary="Secrets never fetched or not fetched in N days, and grants never used",
    tag="impact",
    who="admin, auditor",
    response=out.UsageReport,
    errors=(503,),
    query=(
        Query("days", _DAYS, "not fetched in this many days (default 30)"),
        Query("limit", _LIMIT, "entries shown per list (default 100); counts are of all"),
    ),
)
async def usage_report(request: web.Request) -> web.Response:
    ctx = await context(request)
    days = int_query(request, "days", 30, 0, 3660)
    limit = int_query(request, "limit", 100, 1, 1000)
    return json_response(await _need(services(request).usage).report(ctx, days, limit))


@api.operation(
    "GET",
    "/v1/usage/secrets/{secret_id}",
    summary="One secret's fetches: last fetched, per principal and workload, per day, through which grants",
    tag="impact",
    who="admin, auditor",
    response=out.SecretUsage,
    errors=(404, 503),
    query=(Query("days", _DAYS, "the window: the last N days (default 30)"),),
)
async def secret_usage(request: web.Request) -> web.Response:
    ctx = await context(request)
    days = int_query(request, "days", 30, 0, 3660)
    return json_response(
        await _need(services(request).usage).secret(ctx, request.match_info["secret_id"], days)
    )


@api.operation(
    "GET",
    "/v1/usage/grants/{grant_id}",
    summary="When a grant was last used, by whom, on what",
    tag="impact",
    who="admin, auditor",
    response=out.GrantUsage,
    errors=(404, 503),
)
async def grant_usage(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await _need(services(request).usage).grant(ctx, request.match_info["grant_id"]))
