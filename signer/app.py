"""The composition root: ``create_app(settings)`` picks the concrete store and HSM and wires the services.

Resources live in one cleanup context, opened in order (database, HSM, inventory check, self-test) and
closed in reverse; a failure while opening (wrong PIN, missing token, a key that could leave the token,
a failed self-test) aborts start-up with ``ConfigurationError`` and the process exits non-zero. Nothing
here falls back to a software key or to running unaudited.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Final

from aiohttp import web

from signer import metrics
from signer.clock import utcnow
from signer.config import Settings, host_name
from signer.errors import DeadlineExceeded, SignerError
from signer.hsm import Hsm
from signer.http.console import console_routes
from signer.http.console_operator import operator_routes
from signer.http.console_rotation import rotation_routes
from signer.http.deadline import Deadline
from signer.http.errors import log_unhandled, problem, problem_for_error, problem_for_http
from signer.http.eth_upstream import EthUpstream
from signer.http.rollback_guard import refuse_if_latched
from signer.http.route_order import hot_first
from signer.http.routes import LONG_POLL_ROUTES, routes
from signer.http.server import serve
from signer.http.state import (
    METRICS,
    METRICS_ACCESS,
    SERVICES,
    SETTINGS,
    MetricsAccess,
    Services,
    is_loopback,
)
from signer.http.tls import TlsReloader, server_context
from signer.http.webhook_transport import AiohttpTransport
from signer.logs import access
from signer.services.admin import AdminService
from signer.services.anomalies import AnomalyDetector, Thresholds
from signer.services.approval_desk import ApprovalDesk
from signer.services.approvals import MAX_WAIT_SECONDS, ApprovalsService
from signer.services.audit_export import AuditExportService
from signer.services.audit_hmac import AuditHmac
from signer.services.audit_log import AuditLogService
from signer.services.audit_retention import AuditRetention
from signer.services.audit_sinks import SinkDelivery, build_sink
from signer.services.auth import AuthService
from signer.services.books import BookService
from signer.services.checklist import ChecklistService
from signer.services.checklist import Thresholds as ChecklistThresholds
from signer.services.checkpoints import CheckpointPolicy, CheckpointService
from signer.services.client_certs import ClientCertService
from signer.services.console_sessions import ConsoleSessions
from signer.services.destinations import DestinationPolicy
from signer.services.facts import FactsCache
from signer.services.health import HealthService
from signer.services.impact import ImpactService
from signer.services.jsonrpc import JsonRpcService, NonceGates
from signer.services.kek_rotation import KekRotations
from signer.services.keys import KeyService
from signer.services.kms import KmsService
from signer.services.operator_views import OperatorViews
from signer.services.pending import PendingRequests
from signer.services.pipeline import DecisionPipeline
from signer.services.policies import PolicyService
from signer.services.rollback import ANCHOR_NAME, AnchorFile, RollbackGuard, TokenAnchor
from signer.services.secret_backends import build_backends
from signer.services.secret_kind import Sealer, sealed_backend
from signer.services.secret_resolve import SecretResolver
from signer.services.secret_versions import SecretVersionsService
from signer.services.secrets import SecretsService
from signer.services.signing import SigningService
from signer.services.startup import self_test
from signer.services.usage import UsageRecorder, UsageService
from signer.services.webhooks import ALERTS, WebhookService
from signer.store import open_store

log = logging.getLogger("signer.app")
access_log = logging.getLogger("signer.access")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _RequestIds:
    """Fresh request ids: 16 hex digits of the OS's CSPRNG each, read for 512 ids at a time.

    ``secrets.token_hex(8)`` per request was one getrandom call per request, and CPython releases the
    GIL around it: under load the loop then waited for the PKCS#11 or database thread to hand the GIL
    back (about 22 µs of the loop's time per request in a profile). One read of 4 KiB now serves 512
    requests. Every id is still
    independent CSPRNG output (no counter, nothing derivable from an earlier id), and ids are not
    secrets: they go out in the response and the access line. ``list.pop`` is atomic, so two loops in
    one process never get the same id; a forked child drops the ids it inherited, so two workers never
    hand out the same ones.
    """

    _BATCH = 512

    def __init__(self) -> None:
        self._ids: list[str] = []
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._ids = []

    def __call__(self) -> str:
        try:
            return self._ids.pop()
        except IndexError:
            block = os.urandom(8 * self._BATCH).hex()
            ids = [block[i : i + 16] for i in range(0, len(block), 16)]
            self._ids = ids
            return ids.pop()


_new_request_id = _RequestIds()
# Headers a request carries at most once: which of two a proxy in front used cannot be known.
SINGLE_HEADERS: Final = ("Authorization", "Idempotency-Key", "X-Request-Id", "Cookie")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def use_softhsm_conf(settings: Settings) -> None:
    """Point SoftHSM at the data directory's configuration unless the environment already chose one."""
    conf = settings.resolved_softhsm_conf
    if conf.exists():
        os.environ.setdefault("SOFTHSM2_CONF", str(conf))


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, limits, deadline, error mapping, metrics and the access line: one middleware.

    This is what three nested middlewares did (request context outside the error mapping outside the
    limits), folded into one frame per request; the order of those steps is unchanged.
    """
    supplied = request.headers.get("X-Request-Id", "")
    request_id = request["request_id"] = supplied if _REQUEST_ID_RE.match(supplied) else _new_request_id()
    started = time.perf_counter()
    try:
        response = await _limited(request, handler, request_id)
    except SignerError as exc:
        response = problem_for_error(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem_for_http(exc, request_id)
    except web.RequestPayloadError:
        # Bad chunking or compression met while reading the body; its message would quote the bytes.
        response = problem(400, "malformed_body", "the request body could not be read", request_id)
    except Exception:  # noqa: BLE001 - logged in full (with its traceback) by log_unhandled
        log_unhandled(request_id)
        response = problem(500, "internal_error", "internal error", request_id)
    response.headers["X-Request-Id"] = request_id
    seconds = time.perf_counter() - started
    resource = request.match_info.route.resource
    # The route template, never the raw path: ids stay out of labels and a scan cannot grow them.
    route = resource.canonical if resource is not None else "unmatched"
    metrics.observe_request(route, request.method, response.status, seconds)
    access(
        access_log,
        "request",
        time.time(),
        request_id=request_id,
        principal=request.get("principal"),
        method=request.method,
        route=route,
        status=response.status,
        duration_ms=round(seconds * 1000, 2),
    )
    return response


async def _limited(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    # request.host is the absolute-form target's host when the request line has one, else the Host
    # header; a request without a Host header names nothing we answer to.
    if settings.allowed_hosts and (
        "Host" not in request.headers or host_name(request.host) not in settings.allowed_hosts
    ):
        # DNS rebinding and misrouted traffic: answer only to the names we are known by.
        return problem(
            400,
            "host_not_allowed",
            "the Host header is not one this service answers to",
            request_id,
        )
    headers = request.headers
    for name in SINGLE_HEADERS:
        if len(headers.getall(name, ())) > 1:
            # Two credentials or two idempotency keys: a proxy in front may act on the other one.
            return problem(
                400,
                "duplicate_header",
                "a header that may appear only once appears more than once",
                request_id,
            )
    # Refuse an announced oversize body before reading a byte of it.
    limit = settings.max_body_bytes
    if request.path.startswith("/v1/secrets"):
        limit = settings.secret_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return problem(413, "body_too_large", f"request body is larger than {limit} bytes", request_id)
    deadline = settings.request_deadline_seconds
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    if route in LONG_POLL_ROUTES:
        # A long-poll waits on purpose (its handler bounds the wait); the deadline covers the rest.
        deadline += MAX_WAIT_SECONDS
    # Signing, secret reads and grant changes wait while an audit rollback is unacknowledged.
    refuse_if_latched(request, request.method, route)
    try:
        # One timer per loop for every request's deadline (signer.http.deadline), not one per request.
        async with Deadline(deadline):
            return await handler(request)
    except TimeoutError:
        # Whatever was in flight is abandoned: a signature made after this point is never sent.
        raise DeadlineExceeded("the request did not complete in time", code="request_timeout") from None


async def _response_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Version banners help nobody but an attacker picking an exploit.
    response.headers.pop("Server", None)
    # Tokens, secrets and CSRF values travel in responses: no cache (browser or proxy) may keep any of
    # them. Every response, so no route can forget; a page that may be cached says so itself.
    response.headers.setdefault("Cache-Control", "no-store")


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    use_softhsm_conf(settings)
    token_key = settings.token_key()
    pin = settings.pin()
    app[METRICS_ACCESS] = MetricsAccess(
        open_on_loopback=settings.metrics_public_on_loopback and is_loopback(settings.host),
        token=settings.metrics_token(),
    )
    gauges = metrics.Metrics()
    store = await open_store(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout_seconds,
        # Below the request deadline, so a caller waiting for the lock hears 503, not 504.
        lock_timeout=min(settings.db_lock_timeout_seconds, settings.request_deadline_seconds / 2),
        batch_max=settings.audit_batch_max,
    )
    try:
        hsm = Hsm(
            settings.hsm_module,
            settings.hsm_token_label,
            pin,
            deadline_seconds=settings.hsm_deadline_seconds,
            queue_size=settings.hsm_queue_size,
        )
        await hsm.start()
        store.batch_observer = gauges.audit_commit
        store.failure_observer = gauges.audit_write_failed
        hsm.call_observer = gauges.hsm_call
        gauges.watch_store(store.pool_status, lambda: store.queue_depth)
        gauges.watch_hsm(lambda: hsm.queue_depth, lambda: hsm.available)

        async def backlog() -> tuple[int, int, int, float]:
            now = utcnow()
            async with store.read() as reader:
                approvals, outbox = await reader.approvals.backlog(now)
                alerts, oldest = await reader.outbox.channel_backlog(ALERTS, now)
            waited = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
            return approvals, outbox, alerts, waited

        gauges.watch_backlog(backlog)
        app[METRICS] = gauges
        await gauges.start()
        try:
            facts = FactsCache()
            auth = AuthService(
                store,
                facts,
                token_key,
                access_ttl=settings.access_token_ttl_seconds,
                refresh_ttl=settings.refresh_token_ttl_seconds,
                refresh_grace=settings.refresh_reuse_grace_seconds,
                clock=utcnow,
            )
            # Before anything else touches the token: no key that could leave it, and no drift.
            await KeyService(store, hsm, facts, clock=utcnow).check_token_inventory()
            await self_test(hsm)
            anchor = AnchorFile(settings.audit_anchor_file or settings.data_dir / ANCHOR_NAME)
            token_anchor = TokenAnchor(hsm)
            audit_hmac = AuditHmac(store, hsm, clock=utcnow)
            await audit_hmac.start()
            checkpoints = CheckpointService(
                store,
                hsm,
                CheckpointPolicy(
                    origin=settings.audit_checkpoint_origin,
                    every_events=settings.audit_checkpoint_every_events,
                    interval_seconds=settings.audit_checkpoint_interval_seconds,
                ),
                clock=utcnow,
                on_checkpoint=anchor.advance,
                after_checkpoint=token_anchor.advance,
            )
            current_key = await checkpoints.start()
            rollback = RollbackGuard(
                store,
                anchor,
                [current_key, *await checkpoints.token_keys()],
                clock=utcnow,
                token_anchor=token_anchor,
            )
            await rollback.check()
            if settings.audit_checkpoints:
                store.batch_observer = _both(gauges.audit_commit, checkpoints.committed)
            destinations = DestinationPolicy.parse(settings.webhook_allowed_destinations)
            transport = AiohttpTransport(destinations)
            webhooks = WebhookService(
                store,
                auth,
                transport,
                destinations=destinations,
                secret_overlap=timedelta(seconds=settings.webhook_secret_overlap_seconds),
                outbox_retention=timedelta(days=settings.webhook_outbox_retention_days),
                clock=utcnow,
            )
            # Pending requests sit below both the pipeline (which opens and closes them) and the
            # approvals service (which counts votes and runs approved ones through the pipeline).
            pending = PendingRequests(clock=utcnow, webhooks=webhooks)
            # Key transitions that policy sends to approvers open and close pending requests too.
            keys = KeyService(store, hsm, facts, clock=utcnow, pending=pending)
            usage = UsageRecorder(store, clock=utcnow, interval=settings.usage_flush_seconds)
            # Alerts go through the webhook outbox (retried until delivered or expired).
            if settings.alerts_webhook_url is not None:
                webhooks.add_channel(
                    ALERTS,
                    secret=(
                        None
                        if settings.alerts_webhook_secret_file is None
                        else settings.alerts_webhook_secret_file.read_bytes().strip()
                    ),
                    expiry=timedelta(seconds=settings.alerts_webhook_expiry_seconds),
                )
            anomalies = (
                AnomalyDetector(
                    store,
                    Thresholds.from_settings(settings),
                    clock=utcnow,
                    interval=settings.usage_flush_seconds,
                    refresh=settings.anomaly_refresh_seconds,
                    alerts_url=settings.alerts_webhook_url,
                    webhooks=webhooks,
                )
                if settings.anomaly_detection
                else None
            )
            pipeline = DecisionPipeline(
                store, hsm, facts, auth, pending, utcnow, audit_hmac.field, usage=usage, anomalies=anomalies
            )
            signing = SigningService(pipeline)
            # A duplicate answers 409 (retry) before its own deadline; a claim outlives any request.
            signing.idempotency.wait_seconds = settings.request_deadline_seconds * 0.8
            signing.idempotency.claim_seconds = max(
                30.0, 4 * (settings.request_deadline_seconds + settings.hsm_deadline_seconds)
            )
            sealer = Sealer(hsm)
            # Secrets held by reference are read through the backends the settings configure.
            secrets = SecretsService(
                store,
                pipeline,
                sealer,
                max_value_bytes=settings.secret_max_value_bytes,
                clock=utcnow,
                backends=build_backends(
                    settings.secret_backends,
                    sealed_backend(store, sealer, lambda: pipeline.facts_cache.epoch),
                ),
            )
            # KEK rotations: an unfinished one (a killed server's) resumes now, beside the requests.
            kek_rotations = KekRotations(
                store,
                hsm,
                clock=utcnow,
                destroy_grace=timedelta(seconds=settings.kek_destroy_grace_seconds),
            )
            # Overlaps that ended and rotations that fell due: swept by every worker (check-and-set).
            secret_versions = SecretVersionsService(
                store,
                secrets,
                clock=utcnow,
                webhooks=webhooks,
                sweep_seconds=settings.secret_sweep_interval_seconds,
            )
            health = HealthService(store, hsm)
            audit_log = AuditLogService(store, clock=utcnow)
            # The workers of this machine take turns per sender address (eth_sendTransaction).
            nonce_gates = NonceGates(
                settings.data_dir / "nonce-locks", timeout=settings.request_deadline_seconds
            )
            upstream = (
                EthUpstream(settings.eth_upstream_url, timeout=settings.request_deadline_seconds / 2)
                if settings.eth_upstream_url
                else None
            )
            approvals = ApprovalsService(store, pipeline, pending, clock=utcnow, webhooks=webhooks)
            policies = PolicyService(store, clock=utcnow)
            impact = ImpactService(store, usage, clock=utcnow)
            admin = AdminService(store, auth, clock=utcnow, pending=pending)
            admin.impact = impact.compact
            secrets.impact = impact.compact
            resolver = SecretResolver(store, secrets, clock=utcnow)
            resolver.usage = usage
            checklist = ChecklistService(
                store,
                usage,
                clock=utcnow,
                interval=settings.checklist_interval_seconds,
                thresholds=ChecklistThresholds(
                    large_group=settings.checklist_large_group_members,
                    wide_folder=settings.checklist_wide_folder_secrets,
                ),
            )
            app[SERVICES] = Services(
                auth=auth,
                admin=admin,
                keys=keys,
                signing=signing,
                health=health,
                audit=audit_log,
                checkpoints=checkpoints,
                rollback=rollback,
                audit_export=AuditExportService(store, clock=utcnow),
                approvals=approvals,
                policies=policies,
                audit_hmac=audit_hmac,
                audit_retention=AuditRetention(store, checkpoints, clock=utcnow),
                webhooks=webhooks,
                console_sessions=ConsoleSessions(
                    store,
                    auth,
                    idle=timedelta(seconds=settings.console_session_idle_seconds),
                    max_age=timedelta(seconds=settings.console_session_max_seconds),
                    clock=utcnow,
                ),
                secrets=secrets,
                secret_refs=resolver,
                secret_versions=secret_versions,
                impact=impact,
                usage=UsageService(store, usage, clock=utcnow),
                checklist=checklist,
                books=BookService(store, clock=utcnow),
                jsonrpc=JsonRpcService(keys, signing, health, upstream, audit_log, nonce_gates),
                approval_desk=ApprovalDesk(store, approvals, clock=utcnow),
                operator_views=OperatorViews(keys, admin, policies, audit_log, checkpoints),
                kek_rotations=kek_rotations,
                kms=KmsService(
                    store,
                    auth,
                    hsm,
                    keys,
                    signing,
                    credential_ttl=settings.kms_credential_ttl_seconds,
                    clock=utcnow,
                ),
                client_certs=ClientCertService(store, clock=utcnow),
            )
            await kek_rotations.resume()
            # Webhook delivery runs beside the requests and never inside one.
            dispatcher = asyncio.get_running_loop().create_task(webhooks.run(), name="signer-webhooks")
            sweeper = asyncio.get_running_loop().create_task(
                secret_versions.run(), name="signer-secret-sweep"
            )
            checkpointer = (
                asyncio.get_running_loop().create_task(checkpoints.run(), name="signer-checkpoints")
                if settings.audit_checkpoints
                else None
            )
            # External audit sinks read the committed log beside the requests (one process per sink).
            sinks = [
                SinkDelivery(store, build_sink(c, transport), alert_seconds=settings.audit_sink_alert_seconds)
                for c in settings.audit_sinks
            ]
            sink_tasks = [
                asyncio.get_running_loop().create_task(d.run(), name=f"signer-audit-sink-{d.sink.name}")
                for d in sinks
            ]
            # Usage counts are written in batches, and the checklist gauges computed, off the requests.
            usage.start()
            checklist.start()
            if anomalies is not None:
                anomalies.start()
            # Start-up objects live for the whole process: keep the collector from rescanning them
            # (measured: shorter GC pauses and ~40 us less CPU per request under load).
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                for task in (dispatcher, checkpointer, sweeper, *sink_tasks):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await kek_rotations.close()
                for delivery in sinks:
                    await delivery.close()
                await checklist.close()
                await usage.close()
                if anomalies is not None:
                    await anomalies.close()
                await transport.close()
                await secrets.close()
                if upstream is not None:
                    await upstream.close()
                nonce_gates.close()
        finally:
            await gauges.close()
            await hsm.close()
    finally:
        await store.close()


def _both(
    first: Callable[[float, int], None], second: Callable[[float, int], None]
) -> Callable[[float, int], None]:
    def observe(seconds: float, units: int) -> None:
        first(seconds, units)
        second(seconds, units)

    return observe


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_context],
        client_max_size=max(settings.max_body_bytes, settings.secret_body_bytes),
    )
    app[SETTINGS] = settings
    app.on_response_prepare.append(_response_headers)
    app.cleanup_ctx.append(_resources)
    app.add_routes(hot_first(routes))
    app.add_routes(console_routes)
    app.add_routes(operator_routes)
    app.add_routes(rotation_routes)
    return app


def new_event_loop(prefer_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (measured: less CPU per request in the loop and the
    transports), else asyncio's own; both serve the same bytes."""
    if prefer_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# A signing request waits ~100 ms with 64 others in flight, so the default first generation (700) is
# collected while their state is alive, promotes it and rescans it in the older generations: measured
# 30-60 us of collector time per request. A young collection's pause grows with the threshold, though
# (it traverses what the young generation holds; almost all of it is alive and is promoted): at 20,000
# one pause of 4.5-8 ms per worker every ~30 s, the longest step of the event loop at 300 requests/s
# (bench/loop_stalls.py). At 5,000: at 300/s three pauses of at most 1.7 ms in the same window and the
# same collector CPU in all (4.3-4.5 ms against 4.5-4.7 ms per 30 s); saturated with 64 connections,
# pauses of at most 3.5 ms and ~1 us of collector CPU per request more (16.4 against 8.2 ms per 30 s,
# ~14,000 requests), not the 30-60 us of the default. The start-up heap is frozen (see _resources).
GC_THRESHOLDS = (5_000, 10, 10)


def run(
    settings: Settings,
    *,
    sockets: list[socket.socket] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve until a signal. Alone, the process binds the port itself; a worker of ``signer serve
    --workers N`` serves on ``sockets``, bound once by its supervisor (never SO_REUSEPORT: a second,
    unrelated instance must fail to bind, not share the port). ``on_ready`` runs once the service is
    ready: its resources are open and its sockets accept connections (after "signer ready" is logged,
    with the addresses)."""
    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(settings)
    tls = server_context(settings)
    reloader = TlsReloader(tls, settings) if tls is not None else None

    def listening(addresses: list[str]) -> None:
        log.info("signer ready", extra={"pid": os.getpid(), "address": ", ".join(addresses)})
        if on_ready is not None:
            on_ready()

    serve(
        app,
        new_event_loop(),
        host=settings.host,
        port=settings.port,
        sockets=sockets,
        header_timeout=settings.header_timeout_seconds,
        keepalive_timeout=settings.keepalive_timeout_seconds,
        on_listening=listening,
        ssl_context=tls,
        background=reloader.run if reloader is not None else None,
    )
