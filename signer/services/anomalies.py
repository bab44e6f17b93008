"""Unusual access: the signals policy may act on, and the flags operators are told of.

For each request that goes through the decision pipeline the detector answers, before judging and
from memory, which of four signals it shows for its principal:

- ``new_source``: the request comes from a source address the principal has never been allowed from.
  Known addresses are persisted (``anomaly_sources``, read once per principal and process, and read
  again before an address is called new, so another worker's or an earlier process's knowledge
  counts). A principal's very first address is learnt quietly; an address becomes known only when a
  request from it is allowed, so a request denied or sent to approvers for it stays "new".
  In-process calls with no address (an approved request run for its requester) show no source.
- ``burst``: the requests in the current ``burst_window`` (this one included) are at least
  ``burst_min_requests`` and more than ``burst_factor`` times the principal's average per window over
  the previous ``baseline`` seconds.
- ``off_hours``: the current UTC hour is one the principal was not active in over the last
  ``usual_hours_days`` days, once it has ``usual_hours_min_requests`` requests of such history.
- ``repeated_denials``: the principal was refused at least ``denials_threshold`` times in the last
  ``denials_window`` seconds.

The detector reads its own clock (the service's, like every service; a test sets it). Rates, hours
and denials are kept in memory per process (a restart forgets them and learns again;
with several workers each judges on its own share of the traffic). The signals reach policy as
``Facts.anomalies``: an ``anomaly`` rule may deny or ask for approval; otherwise they change nothing.

After the decision, ``observe`` counts the request and queues a flag for each signal seen (at most
one per principal and signal, or per address for ``new_source``, per the signal's window); the
background flush writes each as an ``anomaly.detected`` audit event (principal, signal, source address,
request id and the request's outcome, never a value), counts ``signer_anomalies{signal}``, records the
newly allowed addresses, and POSTs each flag, HMAC signed, to ``alerts_webhook_url`` when set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from policy.canonical import canonical_json
from signer import metrics
from signer.audit import AuditEvent, EventTarget, Outcome, format_at
from signer.crypto.webhook_hmac import webhook_signature
from signer.services.context import Clock, RequestContext, utcnow
from signer.store import Store, Writer

log = logging.getLogger(__name__)

EVENT_KIND = "anomaly.detected"
SIGNALS = ("new_source", "burst", "off_hours", "repeated_denials")
_NONE: frozenset[str] = frozenset()
# How long a known address is trusted not to have been learnt by another worker before reading again.
_RECHECK_SECONDS = 10.0


class AlertTransport(Protocol):
    async def post(self, url: str, body: bytes, headers: Any, timeout: float) -> int: ...


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The settings ``anomaly_*`` (see ``signer.config``)."""

    burst_window: int = 60
    burst_factor: float = 5.0
    burst_min_requests: int = 20
    baseline: int = 3600
    usual_hours_days: int = 14
    usual_hours_min_requests: int = 100
    denials_threshold: int = 5
    denials_window: int = 300

    @classmethod
    def from_settings(cls, settings: Any) -> Thresholds:
        return cls(
            burst_window=settings.anomaly_burst_window_seconds,
            burst_factor=settings.anomaly_burst_factor,
            burst_min_requests=settings.anomaly_burst_min_requests,
            baseline=settings.anomaly_baseline_seconds,
            usual_hours_days=settings.anomaly_usual_hours_days,
            usual_hours_min_requests=settings.anomaly_usual_hours_min_requests,
            denials_threshold=settings.anomaly_denials_threshold,
            denials_window=settings.anomaly_denials_window_seconds,
        )


@dataclass(slots=True)
class _Principal:
    """What one process knows of one principal."""

    sources: set[str] | None = None  # None until read from the store
    checked: dict[str, float] = field(default_factory=dict)  # address -> when last read as unknown
    buckets: dict[int, int] = field(default_factory=dict)  # burst window index -> requests
    days: dict[int, int] = field(default_factory=dict)  # day index -> requests
    hours: dict[int, int] = field(default_factory=dict)  # UTC hour -> last day index it was used
    denials: collections.deque[float] = field(default_factory=collections.deque)
    flagged: dict[tuple[str, str], float] = field(default_factory=dict)  # (signal, source) -> when
    # Sums over the windows and days before the current one, computed once per window and per day.
    recent_window: int = -1
    recent_sum: int = 0
    history_day: int = -1
    history_before: int = 0


@dataclass(frozen=True, slots=True)
class Flag:
    signal: str
    at: datetime
    actor: dict[str, str]
    request_id: str
    source: str | None
    resource: EventTarget | None
    outcome: Outcome


class AnomalyDetector:
    """Per-principal state, the signals before judging, the flags after (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        thresholds: Thresholds | None = None,
        *,
        clock: Clock = utcnow,
        interval: float = 1.0,
        alerts_url: str | None = None,
        alerts_secret: bytes | None = None,
        transport: AlertTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self._store = store
        self._clock = clock
        self._interval = interval
        self._alerts_url = alerts_url
        self._alerts_secret = alerts_secret
        self._transport = transport
        self._timeout = timeout
        self._principals: dict[str, _Principal] = {}
        self._flags: list[Flag] = []
        self._learnt: list[tuple[str, str, datetime]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.alerts_failed = 0

    # -- before judging ---------------------------------------------------------------------------

    async def signals(self, ctx: RequestContext) -> frozenset[str]:
        """The signals this request shows now (memory only, but for a principal's addresses, read once
        per process and again, at most every few seconds, before an address is called new)."""
        ts = self._clock().timestamp()
        state = self._principals.get(ctx.caller.principal_id)
        if state is None:
            state = self._principals[ctx.caller.principal_id] = _Principal()
        t = self.thresholds
        found: list[str] = []
        source = ctx.source
        if (
            source is not None
            and (state.sources is None or source not in state.sources)
            and await self._is_new(ctx.caller.principal_id, state, source, ts)
        ):
            found.append("new_source")
        window = int(ts // t.burst_window)
        current = state.buckets.get(window, 0) + 1
        if current >= t.burst_min_requests:
            previous = max(1, t.baseline // t.burst_window)
            if state.recent_window != window:
                # The previous windows' sum only changes when the window does: once a window.
                state.recent_window = window
                state.recent_sum = sum(n for w, n in state.buckets.items() if window - previous <= w < window)
            if current > t.burst_factor * state.recent_sum / previous:
                found.append("burst")
        day = int(ts // 86_400)
        if state.history_day != day:
            state.history_day = day
            state.history_before = sum(
                n for d, n in state.days.items() if day - t.usual_hours_days <= d < day
            )
        if state.history_before + state.days.get(day, 0) >= t.usual_hours_min_requests:
            hour = int(ts % 86_400 // 3600)
            if state.hours.get(hour, -(10**9)) < day - t.usual_hours_days:
                found.append("off_hours")
        denials = state.denials
        if denials:
            while denials and denials[0] <= ts - t.denials_window:
                denials.popleft()
            if len(denials) >= t.denials_threshold:
                found.append("repeated_denials")
        return frozenset(found) if found else _NONE

    async def _is_new(self, principal_id: str, state: _Principal, source: str, ts: float) -> bool:
        if state.sources is not None and source in state.sources:
            return False
        last = state.checked.get(source)
        if state.sources is None or last is None or ts - last >= _RECHECK_SECONDS:
            async with self._store.read() as reader:
                known = await reader.anomalies.sources_of(principal_id)
            state.sources = known | (state.sources or set())
            state.checked[source] = ts
        # A principal's first address is learnt quietly: only a change of address is unusual.
        return bool(state.sources) and source not in state.sources

    # -- after the decision -----------------------------------------------------------------------

    def observe(
        self,
        ctx: RequestContext,
        signals: frozenset[str],
        outcome: Outcome,
        resource: EventTarget | None = None,
    ) -> None:
        """Count a decided request (memory only) and queue a flag for each signal not flagged lately."""
        now = self._clock()
        state = self._principals.get(ctx.caller.principal_id)
        if state is None:
            state = self._principals[ctx.caller.principal_id] = _Principal()
        t = self.thresholds
        ts = now.timestamp()
        window = int(ts // t.burst_window)
        state.buckets[window] = state.buckets.get(window, 0) + 1
        if len(state.buckets) > t.baseline // t.burst_window + 2:
            oldest = window - t.baseline // t.burst_window - 1
            for w in [w for w in state.buckets if w < oldest]:
                del state.buckets[w]
        day, hour = int(ts // 86_400), int(ts % 86_400 // 3600)
        state.days[day] = state.days.get(day, 0) + 1
        if len(state.days) > t.usual_hours_days + 1:
            for d in [d for d in state.days if d < day - t.usual_hours_days]:
                del state.days[d]
        state.hours[hour] = day
        if outcome is Outcome.DENIED:
            state.denials.append(ts)
        source = ctx.source
        if outcome is Outcome.ALLOWED and source is not None:
            if state.sources is None:
                state.sources = set()
            if source not in state.sources:
                state.sources.add(source)
                self._learnt.append((ctx.caller.principal_id, source, now))
        if not signals:
            return
        for signal in sorted(signals):
            key = (signal, (source or "") if signal == "new_source" else "")
            cooldown = self._cooldown(signal)
            last = state.flagged.get(key)
            if last is not None and ts - last < cooldown:
                continue
            state.flagged[key] = ts
            self._flags.append(Flag(signal, now, ctx.actor(), ctx.request_id, source, resource, outcome))

    def _cooldown(self, signal: str) -> float:
        t = self.thresholds
        return {
            "new_source": float(t.denials_window),
            "burst": float(t.burst_window),
            "off_hours": 3600.0,
            "repeated_denials": float(t.denials_window),
        }[signal]

    # -- writing (off the request path) ------------------------------------------------------------

    async def flush(self) -> list[Flag]:
        """Write the queued flags and learnt addresses in one transaction, then send the alerts."""
        async with self._lock:
            flags, learnt = self._flags, self._learnt
            if not (flags or learnt):
                return []
            self._flags, self._learnt = [], []

            async def unit(writer: Writer) -> None:
                await writer.anomalies.add_sources(learnt)
                for flag in flags:
                    writer.append_audit(
                        AuditEvent.of(
                            EVENT_KIND,
                            at=flag.at,
                            outcome=flag.outcome,
                            actor=flag.actor,
                            # The request that raised the flag is named, not claimed: its own event is
                            # the one entry under its request id (matrix U-01).
                            request_id=None,
                            trigger_request_id=flag.request_id,
                            resource=flag.resource,
                            signal=flag.signal,
                            source=flag.source,
                        )
                    )

            try:
                await self._store.submit(unit)
            except Exception:
                # Not lost: merged back for the next flush (the store logged the failure).
                self._flags[:0], self._learnt[:0] = flags, learnt
                raise
            for flag in flags:
                metrics.anomaly(flag.signal)
            await self._alert(flags)
            return flags

    async def _alert(self, flags: list[Flag]) -> None:
        if self._alerts_url is None or self._transport is None or not flags:
            return
        for flag in flags:
            body = canonical_json(
                {
                    "kind": EVENT_KIND,
                    "at": format_at(flag.at),
                    "principal_id": flag.actor["principal_id"],
                    "principal": flag.actor["name"],
                    "signal": flag.signal,
                    "source": flag.source,
                    "request_id": flag.request_id,
                    "outcome": flag.outcome.value,
                    "resource": None if flag.resource is None else flag.resource.as_dict(),
                }
            )
            timestamp = str(int(self._clock().timestamp()))
            headers = {"Content-Type": "application/json", "X-Signer-Timestamp": timestamp}
            if self._alerts_secret is not None:
                headers["X-Signer-Signature"] = webhook_signature(self._alerts_secret, timestamp, body)
            try:
                status = await self._transport.post(self._alerts_url, body, headers, self._timeout)
            except (OSError, TimeoutError) as exc:
                self.alerts_failed += 1
                log.warning("alerts webhook not reached: %s", type(exc).__name__)
                continue
            if not 200 <= status < 300:
                self.alerts_failed += 1
                log.warning("alerts webhook answered %s", status)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="signer-anomalies")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("anomaly flags not written; kept for the next flush")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()
