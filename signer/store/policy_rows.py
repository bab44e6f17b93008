"""Rows for authorisation beyond the basics: groups, policy versions and attachments, the ledger of spend
and rate reservations, idempotency keys and shadow decisions.

Mixed into ``Reader`` and ``Writer`` (``signer.store.core``); all SQL stays in this package. The ledger
is the part that needs care. Limits are exact rolling sums, but summing a day of rows on every request
would make the check the slowest step of signing. So each process keeps, per limit key it has used, the
committed rows' window starts and amounts in time order with prefix sums (``LedgerCache``): a usage
is two binary searches. The cache stays exact because every write transaction holds the store's write
lock: on its first usage query a transaction reads the ledger rows committed since the cache last
looked (``id > last_id``, one indexed query per transaction however many keys it touches), which
includes what other processes and replicas reserved; rows this transaction reserves count from its
pending list (indexed by limit key) until they are committed, and are then folded into the cache with
the ids the database gave them, so the next transaction's query finds only other writers' rows. That
fold is exact only because the transaction synced under the write lock before inserting: every row with
an id up to its own newest one is then either already cached or its own. A key the cache does not cover
back far enough (first use, a longer window, a clock stepped back) is loaded from the ledger for the
missing span. The cache sums rows per second of window start, and holds one by one only the rows of
the second a window starts in, read once per key and second (see ``_KeyRows``): memory follows the
seconds a key was used in, not its rows. Seconds older than every window a key was asked about are
dropped from memory (never from the table: a longer window added later must still see them), and a
key used in more than ``MAX_CACHED_SECONDS`` seconds of its window is summed in SQL instead. A unit
that fails has its reservations undone with the rest of its work, and a window start that moves
backwards can only count more rows, never fewer.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, func, or_, select, update

from signer.errors import Conflict, NotFound, SignerError
from signer.store import schema as t
from signer.store.driver import Prepared, Step
from signer.store.records import (
    ATTACHMENT_MODES,
    AttachmentRecord,
    GrantRecord,
    IdempotencyRecord,
    LedgerEntry,
    PolicyVersionRecord,
)

# A claim on an idempotency key is a row of the same table whose response is this one-field object
# (a real response is a signing result and never has this field): one primary key guards both.
_CLAIM_FIELD = "in_progress_claim"


def _claim_text(claim: str) -> str:
    return json.dumps({_CLAIM_FIELD: claim}, separators=(",", ":"))


def _idempotency_record(
    principal_id: str, key: str, request_digest: str, response: str, created_at: datetime
) -> IdempotencyRecord:
    body = json.loads(response)
    claim = body.get(_CLAIM_FIELD) if isinstance(body, dict) and len(body) == 1 else None
    return IdempotencyRecord(
        principal_id=principal_id,
        key=key,
        request_digest=request_digest,
        response={} if claim is not None else body,
        created_at=created_at,
        claim=claim,
    )


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware")


def grant_from_row(row: Any) -> GrantRecord:
    m = row._mapping
    return GrantRecord(
        id=m["id"],
        principal_id=m["principal_id"],
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        operations=list(m["operations"]),
        expires_at=m["expires_at"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        group_name=m["group_name"],
        max_uses=None if m["max_uses"] is None else int(m["max_uses"]),
        value_budgets=dict(m["value_budgets"] or {}),
    )


def _version(row: Any) -> PolicyVersionRecord:
    m = row._mapping
    return PolicyVersionRecord(
        policy_id=m["policy_id"],
        version=int(m["version"]),
        document=m["document"],
        digest=m["digest"],
        created_by=m["created_by"],
        created_at=m["created_at"],
    )


def _attachment(row: Any) -> AttachmentRecord:
    m = row._mapping
    return AttachmentRecord(
        id=m["id"],
        policy_id=m["policy_id"],
        version=int(m["version"]),
        scope=m["scope"],
        key_id=m["key_id"],
        mode=m["mode"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        detached_at=m["detached_at"],
    )


class _Statements:
    """What the mixins below use from the reader or writer they are mixed into (``signer.store.core``):
    declared for the type checker only, so at run time the real methods are found there."""

    _store: Any

    if TYPE_CHECKING:

        async def _all(self, statement: Any) -> list[Any]: ...

        async def _first(self, statement: Any) -> Any: ...

        async def _execute(self, statement: Any, params: Any = None) -> Any: ...

        async def _write(self, statement: Any, params: Any = None) -> Any: ...

        async def _insert_new(
            self,
            table: Any,
            values: dict[str, Any],
            conflict: Conflict,
            missing_parent: SignerError | None = None,
        ) -> None: ...

        def bump_epoch(self) -> int: ...

        def _prepared(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Prepared: ...

        async def _raw_fetch(
            self, statement: Prepared, values: dict[str, Any] | None = None
        ) -> list[Any]: ...


class PolicyReads(_Statements):
    """Read queries, mixed into every reader and writer."""

    # groups

    async def groups_of(self, principal_id: str) -> frozenset[str]:
        c = t.group_members.c
        rows = await self._all(select(c.group_name).where(c.principal_id == principal_id))
        return frozenset(r[0] for r in rows)

    async def group_members(self, group: str) -> list[str]:
        c = t.group_members.c
        rows = await self._all(select(c.principal_id).where(c.group_name == group).order_by(c.principal_id))
        return [r[0] for r in rows]

    async def list_groups(self) -> dict[str, list[str]]:
        c = t.group_members.c
        rows = await self._all(select(c.group_name, c.principal_id).order_by(c.group_name, c.principal_id))
        groups: dict[str, list[str]] = {}
        for group, principal in rows:
            groups.setdefault(group, []).append(principal)
        return groups

    # grants

    async def grants_for(self, principal_id: str, groups: frozenset[str], now: datetime) -> list[GrantRecord]:
        """Live grants (not revoked, not expired at ``now``) to the principal or any of its groups."""
        _aware(now, "now")
        g = t.grants.c
        subject = g.principal_id == principal_id
        if groups:
            subject = or_(subject, g.group_name.in_(sorted(groups)))
        rows = await self._all(
            select(t.grants)
            .where(subject, g.revoked_at.is_(None), or_(g.expires_at.is_(None), g.expires_at > now))
            .order_by(g.created_at, g.id)
        )
        return [grant_from_row(r) for r in rows]

    # policies

    async def get_policy_version(self, policy_id: str, version: int) -> PolicyVersionRecord | None:
        c = t.policy_versions.c
        row = await self._first(
            select(t.policy_versions).where(c.policy_id == policy_id, c.version == version)
        )
        return None if row is None else _version(row)

    async def policy_versions(self, policy_id: str) -> list[PolicyVersionRecord]:
        c = t.policy_versions.c
        rows = await self._all(select(t.policy_versions).where(c.policy_id == policy_id).order_by(c.version))
        return [_version(r) for r in rows]

    async def latest_policy_versions(self) -> list[PolicyVersionRecord]:
        c = t.policy_versions.c
        rows = await self._all(select(t.policy_versions).order_by(c.policy_id, c.version))
        latest: dict[str, PolicyVersionRecord] = {}
        for row in rows:
            record = _version(row)
            latest[record.policy_id] = record
        return list(latest.values())

    async def attachments(self, *, include_detached: bool = False) -> list[AttachmentRecord]:
        c = t.policy_attachments.c
        query = select(t.policy_attachments).order_by(c.created_at, c.id)
        if not include_detached:
            query = query.where(c.detached_at.is_(None))
        return [_attachment(r) for r in await self._all(query)]

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = await self._first(
            select(t.policy_attachments).where(t.policy_attachments.c.id == attachment_id)
        )
        return None if row is None else _attachment(row)

    async def attached_documents(self) -> list[tuple[AttachmentRecord, PolicyVersionRecord]]:
        """Every attachment in force (live and shadow) with the version it names."""
        a, v = t.policy_attachments.c, t.policy_versions.c
        rows = await self._all(
            select(t.policy_attachments, v.document, v.digest, v.created_at.label("version_created_at"))
            .select_from(
                t.policy_attachments.join(
                    t.policy_versions, and_(a.policy_id == v.policy_id, a.version == v.version)
                )
            )
            .where(a.detached_at.is_(None))
            .order_by(a.created_at, a.id)
        )
        out = []
        for row in rows:
            m = row._mapping
            attachment = _attachment(row)
            version = PolicyVersionRecord(
                policy_id=attachment.policy_id,
                version=attachment.version,
                document=m["document"],
                digest=m["digest"],
                created_by=None,
                created_at=m["version_created_at"],
            )
            out.append((attachment, version))
        return out

    # operational counts (for metrics)

    async def backlog(self, now: datetime) -> tuple[int, int]:
        """(approval requests pending and not yet expired, webhook calls not yet delivered)."""
        a, o = t.approval_requests.c, t.webhook_outbox.c
        pending = await self._first(select(func.count()).where(a.state == "pending", a.expires_at > now))
        undelivered = await self._first(select(func.count()).where(o.delivered_at.is_(None)))
        return int(pending[0]), int(undelivered[0])

    # idempotency and shadow

    async def get_idempotency(self, principal_id: str, key: str) -> IdempotencyRecord | None:
        """The stored response for the key, or the claim of the request executing it."""
        c = t.idempotency_keys.c
        row = await self._first(
            select(t.idempotency_keys).where(c.principal_id == principal_id, c.key == key)
        )
        if row is None:
            return None
        m = row._mapping
        return _idempotency_record(principal_id, key, m["request_digest"], m["response"], m["created_at"])

    async def shadow_report(self, attachment_id: str, *, recent: int = 20) -> dict[str, Any]:
        """Counts of (live effect, candidate effect) pairs and the most recent differing decisions."""
        c = t.shadow_decisions.c
        rows = await self._all(
            select(c.live_effect, c.candidate_effect, c.differs, func.count())
            .where(c.attachment_id == attachment_id)
            .group_by(c.live_effect, c.candidate_effect, c.differs)
        )
        pairs: dict[tuple[str, str], int] = {}
        differing = evaluated = 0
        for live, candidate, differs, count in rows:
            pairs[(live, candidate)] = pairs.get((live, candidate), 0) + int(count)
            differing += int(count) if differs else 0
            evaluated += int(count)
        latest = await self._all(
            select(c.at, c.request_id, c.live_effect, c.candidate_effect, c.candidate)
            .where(c.attachment_id == attachment_id, c.differs.is_(True))
            .order_by(c.id.desc())
            .limit(recent)
        )
        return {
            "evaluated": evaluated,
            "differing": differing,
            "by_effect": [
                {"live": live, "candidate": cand, "count": n} for (live, cand), n in sorted(pairs.items())
            ],
            "recent_differences": [
                {
                    "at": r[0].isoformat(),
                    "request_id": r[1],
                    "live": r[2],
                    "candidate": r[3],
                    "candidate_decision": json.loads(r[4]),
                }
                for r in latest
            ],
        }


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
_SHADOW_COLUMNS = (
    "attachment_id",
    "at",
    "request_id",
    "live_effect",
    "candidate_effect",
    "differs",
    "candidate",
)
_SHADOW_INSERT = t.shadow_decisions.insert()
_IDEMPOTENCY_COLUMNS = ("principal_id", "key", "request_digest", "response", "created_at")
_IDEMPOTENCY_INSERT = t.idempotency_keys.insert()
# A claim replaced by the response of the request that held it: deleted, then inserted with the batch.
_IDEMPOTENCY_DELETE = delete(t.idempotency_keys).where(
    t.idempotency_keys.c.principal_id == bindparam("principal_id"),
    t.idempotency_keys.c.key == bindparam("key"),
)
_IDEMPOTENCY_SELECT = select(
    t.idempotency_keys.c.request_digest, t.idempotency_keys.c.response, t.idempotency_keys.c.created_at
).where(
    t.idempotency_keys.c.principal_id == bindparam("principal_id"),
    t.idempotency_keys.c.key == bindparam("key"),
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


class PolicyWrites(_Statements):
    """Write methods, mixed into ``Writer``. ``_ledger_init`` must run in the writer's constructor,
    ``_ledger_mark`` / ``_ledger_undo`` at unit boundaries, ``_policy_steps`` / ``_policy_flushed``
    around the flush before COMMIT and ``_policy_committed`` after a successful COMMIT.

    Idempotency records are buffered like reservations and inserted with the batch at COMMIT, so a
    signing unit sends no write statement of its own (and needs no savepoint). Whether a key is taken
    is still answered when the unit asks: every writer holds the write lock, so what this transaction
    read from the table plus what it buffered is the whole truth until it commits.
    """

    def _ledger_init(self) -> None:
        self._ledger_pending: list[LedgerEntry] = []
        self._ledger_by_key: dict[str, list[LedgerEntry]] = {}
        self._shadow_pending: list[dict[str, Any]] = []
        self._idempotency_pending: dict[tuple[str, str], dict[str, Any]] = {}
        # Keys this transaction saw missing from the table (only this transaction could add them).
        self._idempotency_absent: set[tuple[str, str]] = set()
        self._ledger_marks = (0, 0, 0)
        self._ledger_synced = False
        self._ledger_inserted_through: int | None = None

    @property
    def _cache(self) -> LedgerCache:
        cache: LedgerCache = self._store.ledger_cache
        return cache

    # -- group commit hooks ---------------------------------------------------------------------

    def _ledger_mark(self) -> None:
        self._ledger_marks = (
            len(self._ledger_pending),
            len(self._shadow_pending),
            len(self._idempotency_pending),
        )

    def _ledger_undo(self) -> None:
        ledger_count, shadow_count, idempotency_count = self._ledger_marks
        if len(self._ledger_pending) > ledger_count:
            del self._ledger_pending[ledger_count:]
            self._reindex_pending()
        del self._shadow_pending[shadow_count:]
        if len(self._idempotency_pending) > idempotency_count:
            # Dicts keep insertion order: the unit's own records are the last ones.
            for name in list(self._idempotency_pending)[idempotency_count:]:
                del self._idempotency_pending[name]

    def _reindex_pending(self) -> None:
        self._ledger_by_key = {}
        for entry in self._ledger_pending:
            self._ledger_by_key.setdefault(entry.limit_key, []).append(entry)

    def _policy_steps(self) -> list[Step]:
        """The statements that write this transaction's buffered rows (run by the writer's flush)."""
        steps: list[Step] = []
        if self._ledger_pending:
            rows = [
                {
                    "limit_key": e.limit_key,
                    "amount": str(e.amount),
                    "window_start": e.window_start,
                    "window_end": e.window_end,
                    "request_id": e.request_id,
                }
                for e in self._ledger_pending
            ]
            if self._store.backend == "postgresql":
                steps.append(Step(self._prepared(_LEDGER_INSERT_RETURNING, _LEDGER_COLUMNS), rows=rows))
            else:
                steps.append(Step(self._prepared(_LEDGER_INSERT, _LEDGER_COLUMNS), rows=rows))
                steps.append(Step(self._prepared(_LEDGER_MAX_ID)))
        if self._shadow_pending:
            steps.append(Step(self._prepared(_SHADOW_INSERT, _SHADOW_COLUMNS), rows=self._shadow_pending))
        if self._idempotency_pending:
            replaced = [row for row in self._idempotency_pending.values() if row.get("replaces_claim")]
            if replaced:
                steps.append(Step(self._prepared(_IDEMPOTENCY_DELETE), rows=replaced))
            steps.append(
                Step(
                    self._prepared(_IDEMPOTENCY_INSERT, _IDEMPOTENCY_COLUMNS),
                    rows=list(self._idempotency_pending.values()),
                )
            )
        return steps

    def _policy_flushed(self, results: list[list[Any]]) -> None:
        """Take the ledger's new ids from the results of ``_policy_steps`` (in the same order)."""
        if not self._ledger_pending:
            return
        if self._store.backend == "postgresql":
            ids = [int(r[0]) for r in results[0]]
            self._ledger_inserted_through = max(ids) if ids else None
        else:
            newest = results[1][0][0] if results[1] else None
            self._ledger_inserted_through = None if newest is None else int(newest)

    def _policy_committed(self) -> None:
        """After COMMIT: fold this transaction's reservations into the cache, so they are not read back."""
        through = self._ledger_inserted_through
        cache = self._cache
        if through is None or not self._ledger_synced or cache.last_id is None:
            # Not synced under this lock: the next sync reads these rows like anyone else's.
            return
        for entry in self._ledger_pending:
            cached = cache.keys.get(entry.limit_key)
            if cached is not None:
                cached.add(entry.window_start, entry.amount)
        cache.last_id = max(cache.last_id, through)

    def discard_ledger_changes(self) -> None:
        """Forget every reservation of this transaction (a dry run reads only)."""
        self._ledger_pending.clear()
        self._ledger_by_key.clear()

    # -- the ledger -----------------------------------------------------------------------------

    async def _sync(self) -> None:
        """Bring the cache up to what is committed now (once per transaction, under the write lock)."""
        if self._ledger_synced:
            return
        cache = self._cache
        if cache.last_id is None:
            rows = await self._raw_fetch(self._prepared(_LEDGER_MAX_ID))
            cache.last_id = int(rows[0][0] or 0)
        else:
            rows = await self._raw_fetch(self._prepared(_LEDGER_SINCE), {"after": cache.last_id})
            keys = cache.keys
            for _, limit_key, amount, start in rows:
                entry = keys.get(limit_key)
                if entry is not None:
                    entry.add(start, int(amount))
            if rows:
                cache.last_id = max(cache.last_id, int(rows[-1][0]))
        self._ledger_synced = True

    async def _committed_rows(
        self, limit_key: str, after: datetime | None, through: datetime | None
    ) -> list[tuple[datetime, int]]:
        c = t.ledger.c
        query = select(c.window_start, c.amount).where(c.limit_key == limit_key)
        if after is not None:
            query = query.where(c.window_start > after)
        if through is not None:
            query = query.where(c.window_start <= through)
        rows = await self._all(query)
        return [(start, int(amount)) for start, amount in rows]

    def _pending_after(self, limit_key: str, since: datetime | None) -> int:
        entries = self._ledger_by_key.get(limit_key)
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
        _aware(now, "now")
        if not asks:
            # Nothing to answer (no limit applies): a sync would be a round trip to the database thread
            # for nothing. The cache stays where it was; the next sync reads whatever it missed.
            return []
        await self._sync()
        out = []
        for limit_key, since in asks:
            _aware(since, "since")
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
            _aware(entry.window_start, "window_start")
            if isinstance(entry.amount, bool) or not isinstance(entry.amount, int) or entry.amount < 0:
                raise ValueError("a reservation amount must be a non-negative integer")
        self._ledger_pending.extend(entries)
        for entry in entries:
            self._ledger_by_key.setdefault(entry.limit_key, []).append(entry)

    # -- groups -----------------------------------------------------------------------------------

    async def add_member(self, group: str, principal_id: str, now: datetime, by: str | None) -> bool:
        """Add a principal to a group; False if it already was a member."""
        try:
            await self._insert_new(
                t.group_members,
                {"group_name": group, "principal_id": principal_id, "added_at": now, "added_by": by},
                Conflict("already a member", code="already_member"),
                missing_parent=NotFound("no such principal", code="principal_not_found"),
            )
        except Conflict:
            return False
        self.bump_epoch()
        return True

    async def remove_member(self, group: str, principal_id: str) -> bool:
        c = t.group_members.c
        result = await self._write(
            delete(t.group_members).where(c.group_name == group, c.principal_id == principal_id)
        )
        if result.rowcount:
            self.bump_epoch()
            return True
        return False

    # -- policies ---------------------------------------------------------------------------------

    async def insert_policy_version(self, record: PolicyVersionRecord) -> None:
        await self._insert_new(
            t.policy_versions,
            {
                "policy_id": record.policy_id,
                "version": record.version,
                "document": record.document,
                "digest": record.digest,
                "created_by": record.created_by,
                "created_at": record.created_at,
            },
            Conflict("that policy version exists", code="policy_version_exists"),
        )
        self.bump_epoch()

    async def attach_policy(self, record: AttachmentRecord) -> list[str]:
        """Put a version in force at a place; the same policy's previous attachment there in the same
        mode is detached. Returns the ids detached."""
        if record.mode not in ATTACHMENT_MODES:
            raise ValueError("mode must be live or shadow")
        c = t.policy_attachments.c
        place = c.scope == record.scope if record.scope is not None else c.key_id == record.key_id
        previous = await self._all(
            select(c.id).where(
                c.policy_id == record.policy_id, c.mode == record.mode, place, c.detached_at.is_(None)
            )
        )
        detached = [r[0] for r in previous]
        if detached:
            await self._write(
                update(t.policy_attachments).where(c.id.in_(detached)).values(detached_at=record.created_at)
            )
        await self._insert_new(
            t.policy_attachments,
            {
                "id": record.id,
                "policy_id": record.policy_id,
                "version": record.version,
                "scope": record.scope,
                "key_id": record.key_id,
                "mode": record.mode,
                "created_by": record.created_by,
                "created_at": record.created_at,
                "detached_at": None,
            },
            Conflict("an attachment with that id exists", code="attachment_exists"),
            missing_parent=NotFound("no such policy version", code="policy_not_found"),
        )
        self.bump_epoch()
        return detached

    async def detach_policy(self, attachment_id: str, now: datetime) -> bool:
        c = t.policy_attachments.c
        result = await self._write(
            update(t.policy_attachments)
            .where(c.id == attachment_id, c.detached_at.is_(None))
            .values(detached_at=now)
        )
        if result.rowcount:
            self.bump_epoch()
            return True
        return False

    # -- idempotency and shadow -------------------------------------------------------------------

    async def get_idempotency(self, principal_id: str, key: str) -> IdempotencyRecord | None:
        """The stored record (response or claim) for the key, counting records this transaction
        buffered."""
        name = (principal_id, key)
        row = self._idempotency_pending.get(name)
        if row is None:
            if name in self._idempotency_absent:
                return None
            rows = await self._raw_fetch(
                self._prepared(_IDEMPOTENCY_SELECT), {"principal_id": principal_id, "key": key}
            )
            if not rows:
                self._idempotency_absent.add(name)
                return None
            digest, response, created_at = rows[0]
            row = {"request_digest": digest, "response": response, "created_at": created_at}
        return _idempotency_record(
            principal_id, key, row["request_digest"], row["response"], row["created_at"]
        )

    async def insert_idempotency(self, record: IdempotencyRecord, *, claim: str | None = None) -> None:
        """Buffer the record for COMMIT; ``Conflict(idempotency_key_used)`` if the key is taken, unless
        what holds it is ``claim`` (the caller's own claim, which the record then replaces)."""
        _aware(record.created_at, "created_at")
        if not isinstance(record.created_at, datetime):
            raise ValueError("created_at must be a timezone-aware datetime")
        existing = await self.get_idempotency(record.principal_id, record.key)
        replaces = existing is not None and claim is not None and existing.claim == claim
        if existing is not None and not replaces:
            raise Conflict("that idempotency key was used", code="idempotency_key_used")
        self._idempotency_pending[(record.principal_id, record.key)] = {
            "principal_id": record.principal_id,
            "key": record.key,
            "request_digest": record.request_digest,
            "response": json.dumps(record.response, sort_keys=True, separators=(",", ":")),
            "created_at": record.created_at,
            # Read by ``_policy_steps`` only (the insert binds its five columns by name). A claim this
            # transaction buffered is simply overwritten here; one in the table is deleted first.
            "replaces_claim": replaces and (record.principal_id, record.key) not in self._idempotency_pending,
        }

    async def claim_idempotency(
        self,
        principal_id: str,
        key: str,
        request_digest: str,
        claim: str,
        now: datetime,
        stale_before: datetime,
    ) -> IdempotencyRecord | None:
        """Reserve the key for the request holding ``claim`` before it asks the HSM: None when the
        reservation is taken (written at COMMIT, or taken over from a claim made before
        ``stale_before``, whose claimant is presumed dead); otherwise what holds the key now, a stored
        response or another request's live claim."""
        _aware(now, "now")
        _aware(stale_before, "stale_before")
        existing = await self.get_idempotency(principal_id, key)
        if existing is None:
            self._idempotency_pending[(principal_id, key)] = {
                "principal_id": principal_id,
                "key": key,
                "request_digest": request_digest,
                "response": _claim_text(claim),
                "created_at": now,
                "replaces_claim": False,
            }
            return None
        if existing.claim is None or existing.created_at >= stale_before:
            return existing
        c = t.idempotency_keys.c
        # Compare-and-set on the stale claim (the write lock makes it exact; the condition documents it).
        result = await self._write(
            update(t.idempotency_keys)
            .where(c.principal_id == principal_id, c.key == key, c.response == _claim_text(existing.claim))
            .values(request_digest=request_digest, response=_claim_text(claim), created_at=now)
        )
        return None if result.rowcount else await self.get_idempotency(principal_id, key)

    async def release_idempotency_claim(self, principal_id: str, key: str, claim: str) -> bool:
        """Drop the claim ``claim`` holds on the key (its request ended without a stored response), so
        a retry executes at once instead of waiting for the claim to go stale. False if it is gone."""
        c = t.idempotency_keys.c
        result = await self._write(
            delete(t.idempotency_keys).where(
                c.principal_id == principal_id, c.key == key, c.response == _claim_text(claim)
            )
        )
        return bool(result.rowcount)

    def record_shadow(
        self,
        attachment_id: str,
        at: datetime,
        request_id: str | None,
        live_effect: str,
        candidate_effect: str,
        differs: bool,
        candidate: dict[str, Any],
    ) -> None:
        """Buffer a shadow decision; written at COMMIT, dropped with its unit if the unit fails."""
        self._shadow_pending.append(
            {
                "attachment_id": attachment_id,
                "at": at,
                "request_id": request_id,
                "live_effect": live_effect,
                "candidate_effect": candidate_effect,
                "differs": differs,
                "candidate": json.dumps(candidate, sort_keys=True, separators=(",", ":")),
            }
        )
