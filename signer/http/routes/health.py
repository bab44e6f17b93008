"""Health and operations routes: liveness, readiness and the Prometheus metrics.

Owns the unauthenticated probes (``/healthz``, ``/readyz``) and ``/metrics``, whose access rule (open on
loopback when so configured, else the metrics token or an admin/auditor token) lives here. Must never
reveal a token, or say more than which dependency is down.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from signer.http import schemas as out
from signer.http.routes.common import api, context, json_response, services
from signer.http.state import METRICS, METRICS_ACCESS, is_loopback
from signer.identity import Role
from signer.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from signer.services.context import require_role


@api.operation("GET", "/healthz", summary="Liveness", tag="health", auth="none", response=out.Health)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@api.operation(
    "GET",
    "/readyz",
    summary="Readiness: 200 when the HSM and the database answer; 503 names which one is down",
    tag="health",
    auth="none",
    response=out.Readiness,
    other_responses={503: out.Readiness},
)
async def readyz(request: web.Request) -> web.Response:
    checks = await services(request).health.check()
    ready = all(state == "up" for state in checks.values())
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


@api.operation(
    "GET",
    "/metrics",
    summary="Prometheus metrics (text format)",
    tag="operations",
    auth="metrics",
    who="loopback callers when the service listens on loopback (metrics_public_on_loopback); "
    "otherwise the metrics token, or an admin or auditor access token",
    response={"type": "string"},
    media_type="text/plain",
    errors=(503,),
)
async def metrics_endpoint(request: web.Request) -> web.Response:
    access = request.app[METRICS_ACCESS]
    if not (access.open_on_loopback and is_loopback(request.remote)):
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not (access.token is not None and presented and _same(presented, access.token.reveal())):
            require_role(await context(request), Role.ADMIN, Role.AUDITOR)
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def _same(presented: str, expected: str) -> bool:
    # Fixed-length digests: the comparison time says nothing about the token.
    return hmac.compare_digest(
        hashlib.sha256(presented.encode("utf-8", "replace")).digest(),
        hashlib.sha256(expected.encode("utf-8")).digest(),
    )
