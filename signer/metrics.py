"""Prometheus metrics: the only module that imports ``prometheus_client``.

What is measured, and the labels (never a token, PIN, secret, payload, address or raw path: routes are
aiohttp route templates such as ``/v1/keys/{key_id}``; a key id appears only as the opaque registry id of
a key that exists, so label values are bounded by the keys an admin created):

    signer_http_requests_total{route,method,status}        signer_http_request_duration_seconds{route,method}
    signer_signatures_total{key_id,curve,operation,outcome}   outcome: allowed | denied | failed
    signer_secret_fetches_total{outcome}                   allowed | pending_approval | denied | failed
    signer_policy_decisions_total{effect,rule}             grant decisions today; the policy engine later
    signer_approvals_pending   signer_webhook_outbox_backlog   database-wide, read every 5 s
    signer_alerts_pending   signer_alerts_oldest_pending_seconds    database-wide, read every 5 s
    signer_alert_delivery_failures_total   signer_alerts_expired_total   the alerts webhook's outbox
    signer_hsm_queue_depth   signer_hsm_call_duration_seconds{outcome}   signer_hsm_up
    signer_db_pool_connections{state}                      state: in_use | size
    signer_audit_commit_duration_seconds   signer_audit_commit_batch_size   signer_audit_queue_depth
    signer_audit_write_failures_total{code}                code: db_unavailable | audit_unavailable
    signer_checklist_items{item}                           one per operator checklist item, every 60 s

``signer_audit_queue_depth`` counts units waiting for the next group commit in this worker.

The other packages do not import this module's dependency: ``signer.hsm`` and ``signer.store`` expose
plain read-only numbers (queue depth, availability, pool use) and an optional observer callback
(``Hsm.call_observer``, ``Store.batch_observer``). The composition root hands those numbers to
``Metrics.watch_hsm`` / ``watch_store``, which read them at scrape time, and points the callbacks at
``Metrics.hsm_call`` / ``audit_commit``. Services call the small recording functions here
(``signature``, ``policy_decision``), which cost a cached dict lookup and an increment (about 1 us).

Several workers (``signer serve --workers N``) share their supervisor's socket, so a scrape reaches one
worker at random. Per-worker metrics with a ``worker`` label would make every scrape a different,
partial view; instead the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a directory under the data
dir, emptied at start (``prepare_multiprocess``), before it spawns the workers. Each worker then writes
its counters and histograms to memory-mapped files and any worker answers a scrape with the sum over all
of them. Gauges in that mode cannot be callbacks evaluated in another process, so each worker refreshes
its gauges every second and at scrape time; they are aggregated as ``livesum`` (queue depths, pool use,
approvals) or ``livemin`` (HSM up: 0 if any worker has lost its HSM). With one worker the ordinary
in-process registry is used and nothing touches the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client import values as _values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def prepare_multiprocess(data_dir: Path) -> Path:
    """Before spawning workers: an empty directory for their metric files, named in the environment."""
    directory = data_dir / "metrics-multiproc"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def forget_worker(pid: int | None) -> None:
    """The supervisor, after a worker died without closing its metrics (killed): drop its live gauges."""
    if pid is not None and _multiprocess_dir() is not None:
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _multiprocess_dir() -> str | None:
    value = os.environ.get(MULTIPROC_ENV)
    return value if value and Path(value).is_dir() else None


_MULTI = _multiprocess_dir() is not None

_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def _current_pid() -> int:
    # os.getpid() without its system call; a forked child sets it before any of its code runs.
    return _PID[0]


if getattr(_values.ValueClass, "_multiprocess", False):
    # Several workers: every increment asks prometheus_client's process identifier whether the process
    # forked (a getpid() system call each, ~8 per request). The cached pid answers the same, fork included.
    _values.ValueClass = _values.MultiProcessValue(process_identifier=_current_pid)  # type: ignore[no-untyped-call]

REQUESTS = Counter("signer_http_requests", "HTTP requests answered", ("route", "method", "status"))
REQUEST_SECONDS = Histogram(
    "signer_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ("route", "method"),
    buckets=_LATENCY,
)
SIGNATURES = Counter(
    "signer_signatures",
    "Sign requests after authentication, by outcome",
    ("key_id", "curve", "operation", "outcome"),
)
# Secret ids are not labels: a fetch's outcome alone (which secret was read is the audit log's business).
SECRET_FETCHES = Counter(
    "signer_secret_fetches", "Secret fetches after authentication, by outcome", ("outcome",)
)
POLICY_DECISIONS = Counter(
    "signer_policy_decisions", "Policy and grant decisions, by effect and deciding rule", ("effect", "rule")
)
# Database-wide counts: every worker reads the same number, so the aggregate is the maximum.
APPROVALS_PENDING = Gauge(
    "signer_approvals_pending", "Approval requests pending and not expired", multiprocess_mode="livemax"
)
OUTBOX_BACKLOG = Gauge(
    "signer_webhook_outbox_backlog", "Webhook calls not yet delivered", multiprocess_mode="livemax"
)
HSM_QUEUE = Gauge("signer_hsm_queue_depth", "HSM jobs admitted and not yet run", multiprocess_mode="livesum")
HSM_UP = Gauge("signer_hsm_up", "1 while the HSM session is usable", multiprocess_mode="livemin")
HSM_SECONDS = Histogram(
    "signer_hsm_call_duration_seconds",
    "Time from queueing an HSM call to its answer",
    ("outcome",),
    buckets=_LATENCY,
)
DB_POOL = Gauge(
    "signer_db_pool_connections", "Database pool connections", ("state",), multiprocess_mode="livesum"
)
AUDIT_COMMIT_SECONDS = Histogram(
    "signer_audit_commit_duration_seconds",
    "Time of one group commit (audit events and state)",
    buckets=_LATENCY,
)
AUDIT_BATCH = Histogram(
    "signer_audit_commit_batch_size",
    "Units committed together",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
CHECKLIST = Gauge(
    "signer_checklist_items",
    "entries per operator checklist item (GET /v1/checklist), recomputed periodically",
    ("item",),
    multiprocess_mode="livemax",
)
AUDIT_QUEUE = Gauge(
    "signer_audit_queue_depth", "Units waiting for the next group commit", multiprocess_mode="livesum"
)
AUDIT_WRITE_FAILURES = Counter(
    "signer_audit_write_failures",
    "Group commits that failed (their audit events and state not kept, their requests refused with 503)",
    ("code",),
)
# External audit sinks (signer.services.audit_sinks): only the process holding a sink's lease sets these.
AUDIT_SINK_LAG = Gauge(
    "signer_audit_sink_lag_events",
    "Committed audit events a sink has not received yet",
    ("sink",),
    multiprocess_mode="livemax",
)
AUDIT_SINK_FAILURES = Counter("signer_audit_sink_failures", "Failed deliveries to an audit sink", ("sink",))
AUDIT_SINK_ALERT = Gauge(
    "signer_audit_sink_alert",
    "1 while an audit sink has been failing for longer than audit_sink_alert_seconds",
    ("sink",),
    multiprocess_mode="livemax",
)

# Unusual access flagged (signer.services.anomalies), by signal; never which principal.
ANOMALIES = Counter("signer_anomalies", "Unusual access flagged, by signal", ("signal",))
# Their calls to the alerts webhook (an outbox channel of signer.services.webhooks): database-wide
# pending and the oldest one's wait, read every 5 s; failed attempts and calls given up, per process.
ALERTS_PENDING = Gauge(
    "signer_alerts_pending", "Alerts not yet delivered to the alerts webhook", multiprocess_mode="livemax"
)
ALERTS_OLDEST = Gauge(
    "signer_alerts_oldest_pending_seconds",
    "How long the oldest undelivered alert has been waiting (0 when none)",
    multiprocess_mode="livemax",
)
ALERT_FAILURES = Counter("signer_alert_delivery_failures", "Failed attempts to deliver an alert")
ALERTS_EXPIRED = Counter(
    "signer_alerts_expired", "Alerts given up undelivered after alerts_webhook_expiry_seconds"
)


# -- recording (called on request paths: cheap) ---------------------------------------------------

_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """One answered HTTP request. ``route`` must be a route template, never the raw path."""
    children = _request_children.get((route, method, status))
    if children is None:
        children = (REQUESTS.labels(route, method, str(status)), REQUEST_SECONDS.labels(route, method))
        _request_children[(route, method, status)] = children
    children[0].inc()
    children[1].observe(seconds)


_signature_children: dict[tuple[str | None, str | None, str, str], Any] = {}
_decision_children: dict[tuple[str, str], Any] = {}
_hsm_children: dict[str, Any] = {}


def signature(key_id: str | None, curve: str | None, operation: str, outcome: str) -> None:
    """A sign request's outcome (allowed / denied / failed). Pass ``key_id`` only for a key that exists."""
    labels = (key_id, curve, operation, outcome)
    child = _signature_children.get(labels)
    if child is None:
        child = SIGNATURES.labels(key_id or "unknown", curve or "unknown", operation, outcome)
        _signature_children[labels] = child
    child.inc()


_fetch_children: dict[str, Any] = {}


def secret_fetch(outcome: str) -> None:
    """A secret fetch's outcome (allowed / pending_approval / denied / failed), never which secret."""
    child = _fetch_children.get(outcome)
    if child is None:
        child = SECRET_FETCHES.labels(outcome)
        _fetch_children[outcome] = child
    child.inc()


def anomaly(signal: str) -> None:
    """One unusual access flagged (new_source / burst / off_hours / repeated_denials)."""
    ANOMALIES.labels(signal).inc()


def alert_failed() -> None:
    """One failed attempt to deliver an alert (it is retried)."""
    ALERT_FAILURES.inc()


def alert_expired() -> None:
    """An alert given up undelivered."""
    ALERTS_EXPIRED.inc()


def policy_decision(effect: str, rule_ids: Iterable[str]) -> None:
    """A decision by ``effect`` (allow / deny / require_approval), once per deciding rule (or "none").

    The policy engine and approvals call this where they decide; today the grant decisions of
    ``signer.services.signing`` do. Rule ids are policy-authored identifiers, never request data.
    """
    for rule in dict.fromkeys(rule_ids) or ("none",):
        child = _decision_children.get((effect, rule))
        if child is None:
            child = POLICY_DECISIONS.labels(effect, rule)
            _decision_children[(effect, rule)] = child
        child.inc()


def checklist_item(item: str, count: int) -> None:
    """One operator checklist item's entry count (item ids are a fixed set: ``services.checklist``)."""
    CHECKLIST.labels(item).set(count)


def set_backlog(pending_approvals: int, outbox: int, alerts: int = 0, oldest_alert: float = 0.0) -> None:
    """Database-wide counts, read by the composition root every few seconds."""
    APPROVALS_PENDING.set(pending_approvals)
    OUTBOX_BACKLOG.set(outbox)
    ALERTS_PENDING.set(alerts)
    ALERTS_OLDEST.set(oldest_alert)


# -- reading components at scrape time ------------------------------------------------------------


class Metrics:
    """Per-process wiring: what to read from the HSM and the store, and the exposition."""

    def __init__(self) -> None:
        self._gauges: list[Callable[[], None]] = []
        self._refresher: asyncio.Task[None] | None = None
        self._backlog: Callable[[], Awaitable[tuple[int, int, int, float]]] | None = None
        self._backlog_task: asyncio.Task[None] | None = None

    def watch_backlog(self, read: Callable[[], Awaitable[tuple[int, int, int, float]]]) -> None:
        """``read()`` returns (pending approvals, undelivered webhook calls, alerts being tried, the
        oldest one's wait in seconds) from the database."""
        self._backlog = read

    def watch_hsm(self, queue_depth: Callable[[], int], available: Callable[[], bool]) -> None:
        def refresh() -> None:
            HSM_QUEUE.set(queue_depth())
            HSM_UP.set(1 if available() else 0)

        self._gauges.append(refresh)

    def watch_store(self, pool: Callable[[], tuple[int, int]], queue_depth: Callable[[], int]) -> None:
        def refresh() -> None:
            in_use, size = pool()
            DB_POOL.labels("in_use").set(in_use)
            DB_POOL.labels("size").set(size)
            AUDIT_QUEUE.set(queue_depth())

        self._gauges.append(refresh)

    @staticmethod
    def hsm_call(seconds: float, outcome: str) -> None:
        child = _hsm_children.get(outcome)
        if child is None:
            child = _hsm_children[outcome] = HSM_SECONDS.labels(outcome)
        child.observe(seconds)

    @staticmethod
    def audit_commit(seconds: float, units: int) -> None:
        AUDIT_COMMIT_SECONDS.observe(seconds)
        AUDIT_BATCH.observe(units)

    @staticmethod
    def audit_write_failed(code: str) -> None:
        AUDIT_WRITE_FAILURES.labels(code).inc()

    def refresh(self) -> None:
        for refresh in self._gauges:
            refresh()

    async def start(self) -> None:
        """With several workers, keep this worker's gauges fresh for scrapes answered by the others."""
        self.refresh()
        if _MULTI:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name="metrics")
        if self._backlog is not None:
            self._backlog_task = asyncio.get_running_loop().create_task(
                self._backlog_loop(self._backlog), name="metrics-backlog"
            )

    @staticmethod
    async def _backlog_loop(read: Callable[[], Awaitable[tuple[int, int, int, float]]]) -> None:
        while True:
            # A metric must never take the service down; /readyz reports the database.
            with contextlib.suppress(Exception):
                set_backlog(*await read())
            await asyncio.sleep(5.0)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.refresh()

    async def close(self) -> None:
        if self._backlog_task is not None:
            self._backlog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._backlog_task
        if self._refresher is not None:
            self._refresher.cancel()
            try:
                await self._refresher
            except asyncio.CancelledError:
                pass
        if _MULTI:
            _multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def render(self) -> bytes:
        self.refresh()
        if _MULTI:
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest()
