"""Unusual access: the signals policy may act on, and the flags operators are told of.

For each request that goes through the decision pipeline the detector answers, before judging and
from memory, which of four signals it shows for its principal:

- ``new_source``: the request comes from a source address the principal has never been allowed from.
  Known addresses are persisted (``anomaly_sources``, read once per principal and process, and read
  again before an address is called new, so another worker's or an earlier process's knowledge
  counts). A principal's very first address is learnt quietly, and claimed in the database at once so
  that two workers cannot each learn a different one quietly; any other address becomes known only when a
  request from it is allowed, so a request denied or sent to approvers for it stays "new".
  In-process calls with no address (an approved request run for its requester) show no source.
- ``burst``: the requests in the current ``burst_window`` (this one included) are at least
  ``burst_min_requests`` and more than ``burst_factor`` times the principal's average per window over
  the previous ``baseline`` seconds.
- ``off_hours``: the current UTC hour is one the principal was not active in over the last
  ``usual_hours_days`` days, once it has ``usual_hours_min_requests`` requests of such history.
- ``repeated_denials``: the principal was refused at least ``denials_threshold`` times in the last
  ``denials_window`` seconds.

The detector reads its own clock (the service's, like every service; a test sets it). The baselines
(requests per burst window and per UTC hour, refusals per second) are shared by every worker and kept
across restarts: ``anomaly_baselines`` (``signer.store.tables.anomaly_baselines``). A process reads a
principal's rows once, when it first sees it (with its known addresses: the only reads on a request's
path, once per principal and process, again after an hour idle); after that it judges from memory:
what the database held, plus what it counted itself since. Its own counts are added to the database in
batches every ``interval`` seconds (``usage_flush_seconds``), and every ``refresh`` seconds
(``anomaly_refresh_seconds``) it reads everyone's recent rows again, so a worker sees another worker's
requests at most ``interval + refresh`` seconds (and a commit) late: a burst split across workers is
seen once the counts meet, and after a restart the usual hours are the ones learnt before it. Only
the "already flagged" marks (at most one flag per principal and signal per cooldown) stay per process:
with several workers a signal may be flagged once by each. The signals reach policy as
``Facts.anomalies``: an ``anomaly`` rule may deny or ask for approval; otherwise they change nothing.

After the decision, ``observe`` counts the request and queues a flag for each signal seen (at most
one per principal and signal, or per address for ``new_source``, per the signal's window); the
background flush writes, in one transaction, each flag as an ``anomaly.detected`` audit event
(principal, signal, source address, request id and the request's outcome, never a value), the counts,
the newly allowed addresses and, when ``alerts_webhook_url`` is set, one call per flag in the webhook
outbox (channel ``@alerts`` of ``signer.services.webhooks``): delivered off the request path, HMAC
signed, retried with back-off until delivered or ``alerts_webhook_expiry_seconds`` old, at least once
with the call's ``id`` (body and ``X-Signer-Event-Id``) for the receiver to drop a repeat. It counts
``signer_anomalies{signal}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from signer import metrics
from signer.audit import AuditEvent, EventTarget, Outcome, format_at
from signer.services.context import Clock, RequestContext, utcnow
from signer.services.webhooks import ALERTS, WebhookService
from signer.store import BaselineCount, Store, Writer

log = logging.getLogger(__name__)

EVENT_KIND = "anomaly.detected"
SIGNALS = ("new_source", "burst", "off_hours", "repeated_denials")
_NONE: frozenset[str] = frozenset()
# How long a known address is trusted not to have been learnt by another worker before reading again.
_RECHECK_SECONDS = 10.0
# Slots this recent are read again at each refresh (another worker's late flush lands in them);
# older ones are final. Added to ``interval`` and ``refresh``.
_SETTLE_SECONDS = 10.0
# A principal idle this long in a process is forgotten there (read again when it comes back).
_IDLE_SECONDS = 3600.0
# Old rows are pruned from the database at most this often per process.
_PRUNE_SECONDS = 600.0
_HOUR, _DAY = 3600, 86_400


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
    """What one process knows of one principal: the database's counts at the last read plus its own
    since (kept together: one dictionary per kind, slot index -> count)."""

    loaded: bool = False
    sources: set[str] | None = None  # None until read from the store
    checked: dict[str, float] = field(default_factory=dict)  # address -> when last read as unknown
    buckets: dict[int, int] = field(default_factory=dict)  # burst window index -> requests
    hours: dict[int, int] = field(default_factory=dict)  # hour index (since 1970) -> requests
    days: dict[int, int] = field(default_factory=dict)  # day index -> requests (the sum of its hours)
    denials: dict[int, int] = field(default_factory=dict)  # second -> refusals
    flagged: dict[tuple[str, str], float] = field(default_factory=dict)  # (signal, source) -> when
    seen: float = 0.0  # when last counted or judged
    synced: float = 0.0  # when its counts were last read from the database
    # Sums over the windows and days before the current one, computed once per window and per day
    # (and again after the counts were read from the database).
    recent_window: int = -1
    recent_sum: int = 0
    history_day: int = -1
    history_before: int = 0
    usual: dict[int, int] = field(default_factory=dict)  # UTC hour of day -> last day index it was used

    def set_hour(self, slot: int, count: int) -> None:
        old = self.hours.get(slot, 0)
        if count:
            self.hours[slot] = count
        else:
            self.hours.pop(slot, None)
        day = slot // 24
        self.days[day] = self.days.get(day, 0) + count - old
        if not self.days[day]:
            del self.days[day]
        if count and self.usual.get(slot % 24, -(10**9)) < day:
            self.usual[slot % 24] = day


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
        refresh: float = 5.0,
        alerts_url: str | None = None,
        webhooks: WebhookService | None = None,
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self._store = store
        self._clock = clock
        self._interval = interval
        self._refresh = refresh
        self._alerts_url = alerts_url
        self._webhooks = webhooks
        self._principals: dict[str, _Principal] = {}
        self._flags: list[Flag] = []
        self._learnt: list[tuple[str, str, datetime]] = []
        # Counts not yet in the database: (principal, kind, slot index) -> count; ``_writing`` while
        # a flush writes them.
        self._pending: dict[tuple[str, str, int], int] = {}
        self._writing: dict[tuple[str, str, int], int] = {}
        self._pruned = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _widths(self) -> dict[str, int]:
        return {"burst": self.thresholds.burst_window, "hour": _HOUR, "denial": 1}

    # -- before judging ---------------------------------------------------------------------------

    async def signals(self, ctx: RequestContext) -> frozenset[str]:
        """The signals this request shows now (memory only, but for the first request of a principal in
        this process, which reads its baseline and addresses, and a principal's addresses, read again
        at most every few seconds before an address is called new)."""
        ts = self._clock().timestamp()
        principal_id = ctx.caller.principal_id
        state = self._principals.get(principal_id)
        if state is None or not state.loaded:
            state = await self._load(principal_id, ts, ctx.source)
        state.seen = ts
        t = self.thresholds
        found: list[str] = []
        source = ctx.source
        if (
            source is not None
            and (state.sources is None or source not in state.sources)
            and await self._is_new(principal_id, state, source, ts)
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
        day = int(ts // _DAY)
        if state.history_day != day:
            state.history_day = day
            state.history_before = sum(
                n for d, n in state.days.items() if day - t.usual_hours_days <= d < day
            )
        if state.history_before + state.days.get(day, 0) >= t.usual_hours_min_requests:
            hour = int(ts % _DAY // _HOUR)
            if state.usual.get(hour, -(10**9)) < day - t.usual_hours_days:
                found.append("off_hours")
        denials = state.denials
        if denials:
            first = int(ts - t.denials_window)
            for second in [s for s in denials if s <= first]:
                del denials[second]
            if sum(denials.values()) >= t.denials_threshold:
                found.append("repeated_denials")
        return frozenset(found) if found else _NONE

    async def _load(self, principal_id: str, ts: float, source: str | None) -> _Principal:
        """Read one principal's baseline and addresses (once per process, or after it was idle)."""
        t = self.thresholds
        widths = self._widths()
        since = {
            "burst": (
                widths["burst"],
                (int(ts // t.burst_window) - t.baseline // t.burst_window - 1) * t.burst_window,
            ),
            "hour": (_HOUR, (int(ts // _DAY) - t.usual_hours_days) * _DAY),
            "denial": (1, int(ts) - t.denials_window),
        }
        async with self._store.read() as reader:
            rows = await reader.baselines.of(principal_id, since)
            known = await reader.anomalies.sources_of(principal_id)
        state = self._principals.get(principal_id)
        if state is None:
            state = self._principals[principal_id] = _Principal()
        if state.loaded:
            return state  # another request loaded it meanwhile
        self._apply(state, principal_id, rows, {kind: start for kind, (_, start) in since.items()})
        state.sources = known | (state.sources or set())
        state.loaded = True
        state.synced = ts
        state.checked.clear()
        if source is not None:
            state.checked[source] = ts  # just read: no second read for this request's address
        return state

    def _apply(
        self, state: _Principal, principal_id: str, rows: list[BaselineCount], since: dict[str, int]
    ) -> None:
        """The database's counts of the slots from ``since[kind]`` on, plus this process's unwritten."""
        widths = self._widths()
        read: dict[str, dict[int, int]] = {"burst": {}, "hour": {}, "denial": {}}
        for row in rows:
            if row.width == widths[row.kind]:
                read[row.kind][row.start // row.width] = row.count
        views = {"burst": state.buckets, "denial": state.denials}
        for kind, width in widths.items():
            first = since[kind] // width
            got = read[kind]
            slots = {s for s in (state.hours if kind == "hour" else views[kind]) if s >= first} | set(got)
            for slot in slots:
                key = (principal_id, kind, slot)
                count = got.get(slot, 0) + self._pending.get(key, 0) + self._writing.get(key, 0)
                if kind == "hour":
                    state.set_hour(slot, count)
                elif count:
                    views[kind][slot] = count
                else:
                    views[kind].pop(slot, None)
        state.recent_window = -1
        state.history_day = -1

    async def _is_new(self, principal_id: str, state: _Principal, source: str, ts: float) -> bool:
        if state.sources is not None and source in state.sources:
            return False
        last = state.checked.get(source)
        if state.sources is None or last is None or ts - last >= _RECHECK_SECONDS:
            async with self._store.read() as reader:
                known = await reader.anomalies.sources_of(principal_id)
            state.sources = known | (state.sources or set())
            state.checked[source] = ts
        if not state.sources:
            # A principal's first address is learnt quietly: only a change of address is unusual. It
            # is claimed in the database at once (once per principal), so that two workers seeing the
            # principal for the first time from two addresses do not both learn theirs quietly.
            at = datetime.fromtimestamp(ts, UTC)
            if await self._store.submit(lambda w: w.anomalies.claim_first_source(principal_id, source, at)):
                state.sources = {source}
                return False
            async with self._store.read() as reader:
                state.sources = await reader.anomalies.sources_of(principal_id)
        return source not in state.sources

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
        principal_id = ctx.caller.principal_id
        state = self._principals.get(principal_id)
        if state is None:
            state = self._principals[principal_id] = _Principal()
        t = self.thresholds
        ts = now.timestamp()
        state.seen = ts
        pending = self._pending
        window = int(ts // t.burst_window)
        state.buckets[window] = state.buckets.get(window, 0) + 1
        key = (principal_id, "burst", window)
        pending[key] = pending.get(key, 0) + 1
        if len(state.buckets) > t.baseline // t.burst_window + 2:
            oldest = window - t.baseline // t.burst_window - 1
            for w in [w for w in state.buckets if w < oldest]:
                del state.buckets[w]
        slot = int(ts // _HOUR)
        state.set_hour(slot, state.hours.get(slot, 0) + 1)
        key = (principal_id, "hour", slot)
        pending[key] = pending.get(key, 0) + 1
        day = slot // 24
        if len(state.days) > t.usual_hours_days + 1:
            for d in [d for d in state.days if d < day - t.usual_hours_days]:
                del state.days[d]
            for h in [h for h in state.hours if h // 24 < day - t.usual_hours_days]:
                del state.hours[h]
        if outcome is Outcome.DENIED:
            second = int(ts)
            state.denials[second] = state.denials.get(second, 0) + 1
            key = (principal_id, "denial", second)
            pending[key] = pending.get(key, 0) + 1
        source = ctx.source
        if outcome is Outcome.ALLOWED and source is not None:
            if state.sources is None:
                state.sources = set()
            if source not in state.sources:
                state.sources.add(source)
                self._learnt.append((principal_id, source, now))
        if not signals:
            return
        for signal in sorted(signals):
            flag_key = (signal, (source or "") if signal == "new_source" else "")
            cooldown = self._cooldown(signal)
            last = state.flagged.get(flag_key)
            if last is not None and ts - last < cooldown:
                continue
            state.flagged[flag_key] = ts
            self._flags.append(Flag(signal, now, ctx.actor(), ctx.request_id, source, resource, outcome))

    def _cooldown(self, signal: str) -> float:
        t = self.thresholds
        return {
            "new_source": float(t.denials_window),
            "burst": float(t.burst_window),
            "off_hours": 3600.0,
            "repeated_denials": float(t.denials_window),
        }[signal]

    # -- writing and reading (off the request path) ------------------------------------------------

    async def flush(self) -> list[Flag]:
        """Write the queued flags, counts, learnt addresses and alert calls in one transaction."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> list[Flag]:
        flags, learnt, counts = self._flags, self._learnt, self._pending
        if not (flags or learnt or counts):
            return []
        self._flags, self._learnt, self._pending = [], [], {}
        self._writing = counts
        widths = self._widths()
        rows = [
            BaselineCount(p, kind, widths[kind], slot * widths[kind], n)
            for (p, kind, slot), n in counts.items()
        ]
        now = self._clock()
        ts = now.timestamp()
        prune = ts - self._pruned >= _PRUNE_SECONDS
        t = self.thresholds
        alerts = self._alerts_url if self._webhooks is not None else None
        webhooks = self._webhooks

        async def unit(writer: Writer) -> None:
            await writer.anomalies.add_sources(learnt)
            await writer.baselines.add(rows)
            if prune:
                await writer.baselines.prune(
                    {
                        "burst": int(ts) - t.baseline - 2 * t.burst_window - _HOUR,
                        "hour": (int(ts // _DAY) - t.usual_hours_days - 1) * _DAY,
                        "denial": int(ts) - t.denials_window - _HOUR,
                    }
                )
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
                if alerts is not None and webhooks is not None:
                    await webhooks.enqueue_channel(writer, ALERTS, alerts, _alert(flag), flag.at)

        try:
            await self._store.submit(unit)
        except Exception:
            # Not lost: merged back for the next flush (the store logged the failure).
            self._flags[:0], self._learnt[:0] = flags, learnt
            for key, n in counts.items():
                self._pending[key] = self._pending.get(key, 0) + n
            raise
        finally:
            self._writing = {}
        if prune:
            self._pruned = ts
        for flag in flags:
            metrics.anomaly(flag.signal)
        if flags and alerts is not None and webhooks is not None:
            webhooks.wake()
        return flags

    def _horizons(self, ts: float) -> dict[str, float]:
        """Per kind, the earliest time a slot that still counts may start at ``ts``."""
        t = self.thresholds
        return {
            "burst": ts - t.baseline - 2 * t.burst_window,
            "hour": (int(ts // _DAY) - t.usual_hours_days) * _DAY,
            "denial": ts - t.denials_window - 1,
        }

    def _since(self, ts: float, synced: float) -> dict[str, tuple[int, int]]:
        """Per kind, (width, first slot start) to read again: the slots that may have changed since
        ``synced`` (another worker's late flush included), within what still counts."""
        settle = self._interval + self._refresh + _SETTLE_SECONDS
        horizons = self._horizons(ts)
        return {
            kind: (width, int(max(synced - settle, horizons[kind]) // width) * width)
            for kind, width in self._widths().items()
        }

    async def refresh(self) -> None:
        """Write this process's counts, then read every worker's counts made since the last read (and
        forget principals idle for an hour)."""
        async with self._lock:
            await self._flush()
            ts = self._clock().timestamp()
            t = self.thresholds
            idle = ts - max(_IDLE_SECONDS, t.baseline, t.denials_window)
            writing = {k[0] for k in self._pending}
            for principal_id, state in list(self._principals.items()):
                if state.loaded and state.seen < idle and principal_id not in writing:
                    del self._principals[principal_id]
            loaded = [(p, state) for p, state in self._principals.items() if state.loaded]
            if not loaded:
                return
            oldest = min(state.synced for _, state in loaded)
            async with self._store.read() as reader:
                rows = await reader.baselines.recent(self._since(ts, oldest))
            by_principal: dict[str, list[BaselineCount]] = {}
            for row in rows:
                by_principal.setdefault(row.principal_id, []).append(row)
            for principal_id, state in loaded:
                if not state.loaded:
                    continue
                since = {kind: start for kind, (_, start) in self._since(ts, state.synced).items()}
                mine = [r for r in by_principal.get(principal_id, []) if r.start >= since[r.kind]]
                self._apply(state, principal_id, mine, since)
                state.synced = ts

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="signer-anomalies")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self._interval)
            try:
                if loop.time() - last >= self._refresh:
                    last = loop.time()
                    await self.refresh()
                else:
                    await self.flush()
            except Exception:
                log.exception("anomaly flags and counts not written; kept for the next flush")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()


def _alert(flag: Flag) -> dict[str, Any]:
    """What the alerts webhook is told of one flag (the outbox adds the call's ``id``)."""
    return {
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
