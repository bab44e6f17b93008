"""Webhook routes: an approver group's webhook (set, rotate its HMAC key, delete), and the alerts the
alerts webhook has not taken yet.

Thin: parse, call one method of the webhooks service, render. The HMAC key appears only in the answers
that exist to hand it out (set, rotate).
"""

from __future__ import annotations

from aiohttp import web

from signer.http import schemas as out
from signer.http.body import parse_body
from signer.http.contract import Query
from signer.http.models import WebhookBody, WebhookRotateBody
from signer.http.routes.common import GROUP_PATH, api, context, int_query, json_response, max_body, services


@api.operation(
    "PUT",
    "/v1/groups/{group}/webhook",
    path_schemas={"group": GROUP_PATH},
    summary="Set the approver group's webhook; the answer carries its HMAC key",
    tag="approvals",
    who="admin",
    request=WebhookBody,
    response=out.Webhook,
    errors=(503,),
)
async def set_group_webhook(request: web.Request) -> web.Response:
    ctx = await context(request)
    body = await parse_body(request, WebhookBody, max_body(request))
    return json_response(
        await services(request).webhooks.set_webhook(ctx, request.match_info["group"], body.url)
    )


@api.operation(
    "POST",
    "/v1/groups/{group}/webhook/rotate-secret",
    path_schemas={"group": GROUP_PATH},
    summary="Rotate the webhook's HMAC key; both signatures are sent during the overlap",
    tag="approvals",
    who="admin",
    request=WebhookRotateBody,
    response=out.WebhookSecretRotated,
    errors=(404, 503),
)
async def rotate_group_webhook_secret(request: web.Request) -> web.Response:
    ctx = await context(request)
    overlap = None
    if request.body_exists:
        overlap = (await parse_body(request, WebhookRotateBody, max_body(request))).overlap_seconds
    webhooks = services(request).webhooks
    return json_response(await webhooks.rotate_secret(ctx, request.match_info["group"], overlap))


@api.operation(
    "DELETE",
    "/v1/groups/{group}/webhook",
    path_schemas={"group": GROUP_PATH},
    summary="Remove the approver group's webhook",
    tag="approvals",
    who="admin",
    response=out.WebhookDeleted,
    errors=(404, 503),
)
async def delete_group_webhook(request: web.Request) -> web.Response:
    ctx = await context(request)
    return json_response(await services(request).webhooks.delete_webhook(ctx, request.match_info["group"]))


@api.operation(
    "GET",
    "/v1/alerts",
    summary="Unusual-access alerts not delivered to the alerts webhook (retrying, or given up)",
    tag="approvals",
    who="admin, auditor",
    response=out.UndeliveredAlerts,
    errors=(503,),
    query=(Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "alerts shown (default 100)"),),
)
async def undelivered_alerts(request: web.Request) -> web.Response:
    ctx = await context(request)
    limit = int_query(request, "limit", 100, 1, 1000)
    return json_response(await services(request).webhooks.undelivered_alerts(ctx, limit))
