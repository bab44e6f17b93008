"""The usage ledger: spend and rate reservations, and the exact rolling sums limits are judged on.

Owns the ``ledger`` table and the per-process ``LedgerCache``. Limits are exact rolling sums, but
summing a day of rows on every request would make the check the slowest step of signing. So each process
keeps, per limit key it has used, the committed rows' window starts and amounts in time order with
prefix sums (``LedgerCache``): a usage is two binary searches. The cache stays exact because every write
transaction holds the store's write lock: on its first usage query a transaction reads the ledger rows
committed since the cache last looked (``id > last_id``, one indexed query per transaction however many
keys it touches), which includes what other processes and replicas reserved; rows this transaction
reserves count from its pending list (indexed by limit key) until they are committed, and are then
folded into the cache with the ids the database gave them, so the next transaction's query finds only
other writers' rows. That fold is exact only because the transaction synced under the write lock before
inserting: every row with an id up to its own newest one is then either already cached or its own. A key
the cache does not cover back far enough (first use, a longer window, a clock stepped back) is loaded
from the ledger for the missing span. The cache sums rows per second of window start, and holds one by
one only the rows of the second a window starts in, read once per key and second (see ``_KeyRows``):
memory follows the seconds a key was used in, not its rows. Seconds older than every window a key was
asked about are dropped from memory (never from the table: a longer window added later must still see
them), and a key used in more than ``MAX_CACHED_SECONDS`` seconds of its window is summed in SQL
instead. A unit that fails has its reservations undone with the rest of its work, and a window start
that moves backwards can only count more rows, never fewer.

Only a write transaction has a ledger (``writer.ledger``): usage is exact only under the write lock.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select

from signer.store import schema as t
from signer.store.checks import tz_aware
from signer.store.driver import Step
from signer.store.records import LedgerEntry
from signer.store.tx import WriteStatements

MAX_CACHED_SECONDS = 400_000  # 4.6 days of a key used every second

# The ledger and idempotency statements of every signing commit, run on the driver (see driver.py).
_LEDGER_COLUMNS = ("limit_key", "amount", "window_start", "window_end", "request_id")
_LEDGER_INSERT = t.ledger.insert()
# PostgreSQL hands back the new ids from the insert itself; SQLite's executemany cannot return rows, so
# the newest id is read in the same round trip instead (nobody else can insert: the write lock is held).
_LEDGER_INSERT_RETURNING = t.ledger.insert().returning(t.ledger.c.id)
_LEDGER_MAX_ID = select(func.max(t.ledger.c.id))
_LEDGER_SINCE = (
    select(t.ledger.c.id, t.ledger.c.limit_key, t.ledger.c.amount, t.ledger.c.window_start)
    .where(t.ledger.c.id > bindparam("after", type_=t.ledger.c.id.type))
    .order_by(t.ledger.c.id)
)

_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _second_of(at: datetime) -> int:
    """The whole second (since the epoch) an instant falls in; exact (no float)."""
    return (at - _EPOCH) // _SECOND


def _second_start(second: int) -> datetime:
    return _EPOCH + second * _SECOND


class _KeyRows:
    """One limit key's committed rows after ``horizon`` (None: all of them), summed per second of window
    start, with prefix sums over the seconds; plus, one by one, the rows of the one second a window's
    start falls in (the "edge"), read from the ledger when the window's start enters a new second.
    "The sum after t" is then the seconds after t's second (one bisection) plus the edge's rows after t
    (another), exact, and memory grows with the seconds a key was used in, not with its rows: a day of
    a busy key is at most 86,400 entries."""

    __slots__ = ("edge", "edge_prefix", "edge_starts", "horizon", "longest", "prefix", "seconds")

    def __init__(self, horizon: datetime | None) -> None:
        self.horizon = horizon
        self.seconds: list[int] = []
        self.prefix: list[int] = [0]
        self.edge: int | None = None  # the second whose rows are held one by one
        self.edge_starts: list[datetime] = []
        self.edge_prefix: list[int] = [0]
        self.longest: timedelta | None = timedelta(0)  # the longest window asked about; None: all time

    def covers(self, since: datetime | None) -> bool:
        return self.horizon is None or (since is not None and since >= self.horizon)

    def edge_needed(self, since: datetime | None) -> int | None:
        """The second whose rows ``sum_after(since)`` needs one by one, when they are not held."""
        if since is None:
            return None
        second = _second_of(since)
        return None if second == self.edge else second

    def set_edge(self, second: int, rows: list[tuple[datetime, int]]) -> None:
        """Hold ``second``'s rows (all of them that are committed, as read under the write lock)."""
        rows = sorted(rows, key=lambda r: r[0])
        self.edge = second
        self.edge_starts = [r[0] for r in rows]
        self.edge_prefix = [0, *itertools.accumulate(r[1] for r in rows)]

    def sum_after(self, since: datetime | None) -> int:
        """Exact when the edge for ``since`` is held (see ``edge_needed``); a lower bound otherwise
        (the rows of ``since``'s own second are left out)."""
        if since is None:
            return self.prefix[-1]
        second = _second_of(since)
        index = bisect.bisect_right(self.seconds, second)
        total = self.prefix[-1] - self.prefix[index]
        if second == self.edge:
            total += self.edge_prefix[-1] - self.edge_prefix[bisect.bisect_right(self.edge_starts, since)]
        return total

    def add(self, start: datetime, amount: int) -> None:
        if self.horizon is not None and start <= self.horizon:
            return  # before what this entry covers: never asked about
        second = _second_of(start)
        if second == self.edge:
            # Rare (the edge is a window's start, long past): a row committed late, or from a replica
            # whose clock is behind. Kept in order with its prefix sums rebuilt.
            index = bisect.bisect_right(self.edge_starts, start)
            self.edge_starts.insert(index, start)
            amounts = [b - a for a, b in itertools.pairwise(self.edge_prefix)]
            amounts.insert(index, amount)
            self.edge_prefix = [0, *itertools.accumulate(amounts)]
        seconds, prefix = self.seconds, self.prefix
        if not seconds or second > seconds[-1]:
            seconds.append(second)
            prefix.append(prefix[-1] + amount)
            return
        if second == seconds[-1]:
            prefix[-1] += amount
            return
        # An earlier second: rows commit in a different order than their requests started, but only by
        # milliseconds, so the tail to shift is short.
        index = bisect.bisect_left(seconds, second)
        if seconds[index] != second:
            seconds.insert(index, second)
            prefix.insert(index + 1, prefix[index])
        for position in range(index + 1, len(prefix)):
            prefix[position] += amount

    def merge_older(self, horizon: datetime | None, rows: list[tuple[datetime, int]]) -> None:
        """Add the rows between a new, earlier ``horizon`` and the old one (in one rebuild: they fall
        before every second held, where adding them one by one would shift all the prefix sums)."""
        totals = dict(zip(self.seconds, (b - a for a, b in itertools.pairwise(self.prefix)), strict=True))
        for start, amount in rows:
            if horizon is None or start > horizon:
                second = _second_of(start)
                totals[second] = totals.get(second, 0) + amount
        self.seconds = sorted(totals)
        self.prefix = [0, *itertools.accumulate(totals[second] for second in self.seconds)]
        self.horizon = horizon
        self.edge = None  # the rows may fall in the edge's second: read it again when it is needed

    def trim(self, now: datetime) -> None:
        """Forget seconds no window asked about so far can reach (with an hour of slack for clocks)."""
        if self.longest is None or len(self.seconds) < 1024:
            return
        keep_from = _second_of(now - self.longest - timedelta(hours=1))
        index = bisect.bisect_left(self.seconds, keep_from)
        if index * 2 < len(self.seconds):
            return  # trimming costs a rebuild: wait until half the seconds can go
        amounts = [b - a for a, b in itertools.pairwise(self.prefix)][index:]
        self.seconds = self.seconds[index:]
        self.prefix = [0, *itertools.accumulate(amounts)]
        # Every row from keep_from's first microsecond on is still counted.
        horizon = _second_start(keep_from) - _MICROSECOND
        self.horizon = horizon if self.horizon is None else max(self.horizon, horizon)
        if self.edge is not None and self.edge < keep_from:
            self.edge = None


class LedgerCache:
    """Per-process (per ``Store``) cache of committed ledger rows: exact under the write lock, a lower
    bound outside it (it may lack rows committed since it last looked, never holds uncommitted ones)."""

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.keys: dict[str, _KeyRows] = {}
        self.uncached: set[str] = set()

    def at_least(self, limit_key: str, since: datetime | None) -> int:
        """A lower bound of the usage, without the database: 0 for a key this process never loaded."""
        entry = self.keys.get(limit_key)
        if entry is None or not entry.covers(since):
            return 0
        return entry.sum_after(since)


class Ledger:
    """A write transaction's reservations and usage sums (``writer.ledger``).

    Reservations are buffered (see ``tx.Buffer``): written by one executemany at COMMIT, counted by this
    transaction's usage until then, dropped with their unit if the unit fails, and folded into the
    cache with the ids the database gave them once COMMIT succeeded.
    """

    __slots__ = ("_by_key", "_cache", "_inserted_through", "_mark", "_pending", "_synced", "_tx")

    def __init__(self, tx: WriteStatements, cache: LedgerCache) -> None:
        self._tx = tx
        self._cache = cache
        self._pending: list[LedgerEntry] = []
        self._by_key: dict[str, list[LedgerEntry]] = {}
        self._mark = 0
        self._synced = False
        self._inserted_through: int | None = None
        tx._buffer(self)

    # -- the buffer (see tx.Buffer) ---------------------------------------------------------------

    def mark(self) -> None:
        self._mark = len(self._pending)

    def undo(self) -> None:
        if len(self._pending) > self._mark:
            del self._pending[self._mark :]
            self._reindex_pending()

    def steps(self) -> list[Step]:
        """The statements that write this transaction's reservations (run by the writer's flush)."""
        if not self._pending:
            return []
        rows = [
            {
                "limit_key": e.limit_key,
                "amount": str(e.amount),
                "window_start": e.window_start,
                "window_end": e.window_end,
                "request_id": e.request_id,
            }
            for e in self._pending
        ]
        if self._tx.backend == "postgresql":
            return [Step(self._tx._prepared(_LEDGER_INSERT_RETURNING, _LEDGER_COLUMNS), rows=rows)]
        return [
            Step(self._tx._prepared(_LEDGER_INSERT, _LEDGER_COLUMNS), rows=rows),
            Step(self._tx._prepared(_LEDGER_MAX_ID)),
        ]

    def flushed(self, results: list[list[Any]]) -> None:
        """Take the new ids from the results of ``steps`` (in the same order)."""
        if not self._pending:
            return
        if self._tx.backend == "postgresql":
            ids = [int(r[0]) for r in results[0]]
            self._inserted_through = max(ids) if ids else None
        else:
            newest = results[1][0][0] if results[1] else None
            self._inserted_through = None if newest is None else int(newest)

    def committed(self) -> None:
        """After COMMIT: fold this transaction's reservations into the cache, so they are not read back."""
        through = self._inserted_through
        cache = self._cache
        if through is None or not self._synced or cache.last_id is None:
            # Not synced under this lock: the next sync reads these rows like anyone else's.
            return
        for entry in self._pending:
            cached = cache.keys.get(entry.limit_key)
            if cached is not None:
                cached.add(entry.window_start, entry.amount)
        cache.last_id = max(cache.last_id, through)

    # -- usage and reservations -------------------------------------------------------------------

    def _reindex_pending(self) -> None:
        self._by_key = {}
        for entry in self._pending:
            self._by_key.setdefault(entry.limit_key, []).append(entry)

    def discard(self) -> None:
        """Forget every reservation of this transaction (a dry run reads only)."""
        self._pending.clear()
        self._by_key.clear()

    async def _sync(self) -> None:
        """Bring the cache up to what is committed now (once per transaction, under the write lock)."""
        if self._synced:
            return
        cache = self._cache
        if cache.last_id is None:
            rows = await self._tx._raw_fetch(self._tx._prepared(_LEDGER_MAX_ID))
            cache.last_id = int(rows[0][0] or 0)
        else:
            rows = await self._tx._raw_fetch(self._tx._prepared(_LEDGER_SINCE), {"after": cache.last_id})
            keys = cache.keys
            for _, limit_key, amount, start in rows:
                entry = keys.get(limit_key)
                if entry is not None:
                    entry.add(start, int(amount))
            if rows:
                cache.last_id = max(cache.last_id, int(rows[-1][0]))
        self._synced = True

    async def _committed_rows(
        self, limit_key: str, after: datetime | None, through: datetime | None
    ) -> list[tuple[datetime, int]]:
        c = t.ledger.c
        query = select(c.window_start, c.amount).where(c.limit_key == limit_key)
        if after is not None:
            query = query.where(c.window_start > after)
        if through is not None:
            query = query.where(c.window_start <= through)
        rows = await self._tx._all(query)
        return [(start, int(amount)) for start, amount in rows]

    def _pending_after(self, limit_key: str, since: datetime | None) -> int:
        entries = self._by_key.get(limit_key)
        if not entries:
            return 0
        if since is None:
            return sum(e.amount for e in entries)
        return sum(e.amount for e in entries if e.window_start > since)

    async def usage(self, limit_key: str, since: datetime | None, now: datetime) -> int:
        """The sum of reservations for ``limit_key`` with ``window_start > since`` (all of them when
        ``since`` is None): what is committed plus what this transaction reserved so far."""
        return (await self.usages([(limit_key, since)], now))[0]

    async def usages(self, asks: Sequence[tuple[str, datetime | None]], now: datetime) -> list[int]:
        """``usage`` of each ``(limit_key, since)``, in order: the ledger is read at most once for all
        of them, and a key the cache answers costs no await."""
        tz_aware(now, "now")
        if not asks:
            # Nothing to answer (no limit applies): a sync would be a round trip to the database thread
            # for nothing. The cache stays where it was; the next sync reads whatever it missed.
            return []
        await self._sync()
        out = []
        for limit_key, since in asks:
            tz_aware(since, "since")
            used = self._cached_usage(limit_key, since, now)
            if used is None:
                used = await self._loaded_usage(limit_key, since, now)
            out.append(used + self._pending_after(limit_key, since))
        return out

    def _cached_usage(self, limit_key: str, since: datetime | None, now: datetime) -> int | None:
        """The committed sum from memory alone, or None when the ledger must be read for it."""
        entry = self._cache.keys.get(limit_key)
        if entry is None or not entry.covers(since) or entry.edge_needed(since) is not None:
            return None
        return self._noted(entry, limit_key, since, now)

    async def _loaded_usage(self, limit_key: str, since: datetime | None, now: datetime) -> int:
        cache = self._cache
        if limit_key in cache.uncached:
            return sum(a for _, a in await self._committed_rows(limit_key, since, None))
        entry = cache.keys.get(limit_key)
        if entry is None:
            entry = _KeyRows(since)
            for start, amount in sorted(
                await self._committed_rows(limit_key, since, None), key=lambda r: r[0]
            ):
                entry.add(start, amount)
            cache.keys[limit_key] = entry
        elif not entry.covers(since):
            older = await self._committed_rows(limit_key, since, entry.horizon)
            entry.merge_older(since, older)
        edge = entry.edge_needed(since)
        if edge is not None:
            # Once per key and second of window start: that second's rows, one by one.
            low = _second_start(edge) - _MICROSECOND
            entry.set_edge(edge, await self._committed_rows(limit_key, low, low + _SECOND))
        return self._noted(entry, limit_key, since, now)

    def _noted(self, entry: _KeyRows, limit_key: str, since: datetime | None, now: datetime) -> int:
        """The sum from ``entry`` (exact: edge held, span covered), remembering the window asked for."""
        if since is None:
            entry.longest = None
        elif entry.longest is not None and now - since > entry.longest:
            entry.longest = now - since
        used = entry.sum_after(since)
        entry.trim(now)
        if len(entry.seconds) > MAX_CACHED_SECONDS:
            # Too many seconds to keep in memory: this key is summed in SQL from now on.
            del self._cache.keys[limit_key]
            self._cache.uncached.add(limit_key)
        return used

    async def reserve(self, entries: list[LedgerEntry]) -> None:
        """Record reservations: written at COMMIT, counted by this transaction's usage until then."""
        for entry in entries:
            tz_aware(entry.window_start, "window_start")
            if isinstance(entry.amount, bool) or not isinstance(entry.amount, int) or entry.amount < 0:
                raise ValueError("a reservation amount must be a non-negative integer")
        self._pending.extend(entries)
        for entry in entries:
            self._by_key.setdefault(entry.limit_key, []).append(entry)
