"""Approval routes: list, show, vote on, cancel and collect approval requests; approvers' keys.

Thin: parse, call one method of the approvals service, render. The result route may long-poll (bounded by
the service's ``MAX_WAIT_SECONDS``), so it is listed in ``LONG_POLL_PATHS``.
"""

from __future__ import annotations

from aiohttp import web

from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Query
from signer.http.models import ApproverKeyBody, VoteBody
from signer.http.routes.common import (
    ID_SCHEMA,
    api,
    context,
    id_query,
    int_query,
    json_response,
    max_body,
    services,
)
from signer.services.approvals import MAX_WAIT_SECONDS

# Paths whose handler may wait on purpose (bounded by the handler), beyond the request deadline.
LONG_POLL_PATHS = frozenset({"/v1/approvals/{approval_id}/result"})


@api.operation(
    "GET",
    "/v1/approvals",
    summary="Approval requests the caller may see (admin: all; service: its own; approver: its groups')",
    tag="approvals",
    who="admin, approver, the requesting service",
    response=out.ApprovalList,
    errors=(503,),
    query=(
        Query("state", {"type": "string"}, "only requests in this state"),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
        Query("after", ID_SCHEMA, "the last id of the previous page"),
    ),
)
async def list_approvals(request: web.Request) -> web.Response:
    ctx = await context(request)
    limit = int_query(request, "limit", 100, 1, 1000)
    items = await services(request).approvals.list_requests(
        ctx, state=request.query.get("state"), limit=limit, after=id_query(request, "after")
    )
    return json_response({"items": items})


@api.operation(
    "GET",
    "/v1/approvals/{approval_id}",
    summary="Show an approval request decoded, with its votes (404 when the caller may not see it)",
    tag="approvals",
    who="admin, approver in one of its groups, the requesting service",
    response=out.Approval,
    errors=(404, 503),
)
async def show_approval(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await services(request).approvals.show(ctx, request.match_info["approval_id"]))


@api.operation(
    "POST",
    "/v1/approvals/{approval_id}/approve",
    summary="Approve the payload with this digest (0x and any hex case accepted; 409 approval_mismatch "
    "for any other digest; 403 for a voter who could not count)",
    tag="approvals",
    who="approver in one of the request's groups (never the requester)",
    request=VoteBody,
    response=out.Approval,
    errors=(400, 403, 404, 409, 422, 503),
)
async def approve(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, VoteBody, max_body(request))
    return json_response(
        await services(request).approvals.approve(
            ctx, request.match_info["approval_id"], body.digest, signature=body.signature
        )
    )


@api.operation(
    "POST",
    "/v1/approvals/{approval_id}/reject",
    summary="Reject the payload with this digest (counted or refused, like an approval)",
    tag="approvals",
    who="approver in one of the request's groups",
    request=VoteBody,
    response=out.Approval,
    errors=(400, 403, 404, 409, 422, 503),
)
async def reject(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, VoteBody, max_body(request))
    return json_response(
        await services(request).approvals.reject(
            ctx, request.match_info["approval_id"], body.digest, signature=body.signature
        )
    )


@api.operation(
    "POST",
    "/v1/approvals/{approval_id}/cancel",
    summary="Cancel a pending request",
    tag="approvals",
    who="the requesting service, admin",
    response=out.Approval,
    errors=(404, 409, 503),
)
async def cancel_approval(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await services(request).approvals.cancel(ctx, request.match_info["approval_id"]))


@api.operation(
    "GET",
    "/v1/approvals/{approval_id}/result",
    summary="The signature once approved (handed out once); for a secret read only the state (the "
    "requester releases it with POST /v1/secrets/{id}/fetch and approval_id); ?wait=N long-polls up to "
    "60 s; 202 while open",
    tag="approvals",
    who="the requesting service",
    response=out.ApprovalResult,
    other_responses={202: out.ApprovalResult},
    errors=(404, 409, 503),
    query=(Query("wait", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS}, "seconds to wait"),),
)
async def approval_result(request: web.Request) -> web.Response:
    ctx = await context(request)
    wait = int_query(request, "wait", 0, 0, MAX_WAIT_SECONDS)
    approvals = services(request).approvals
    status, body = await approvals.result(ctx, request.match_info["approval_id"], wait=wait)
    return json_response(body, status)


@api.operation(
    "PUT",
    "/v1/approvers/me/key",
    summary="Register (or replace) the caller's public key for signed approvals",
    tag="approvals",
    who="approver",
    request=ApproverKeyBody,
    response=out.ApproverKey,
    errors=(503,),
)
async def register_approver_key(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, ApproverKeyBody, max_body(request))
    return json_response(await services(request).approvals.register_key(ctx, body.scheme, body.public_key))
