"""The commit path's hot statements, run on the driver connection underneath SQLAlchemy's.

Every statement through SQLAlchemy's async ``Connection.execute`` costs about 120 us of CPU on top of the
driver's own work (greenlet switches, cache-key generation, parameter and result processing), twice what
the driver needs for a small statement. The statements that run on every group commit (beginning the
write transaction, syncing the ledger cache, savepoints, idempotency keys, the batch's inserts and the
audit head) run here instead: each is a SQLAlchemy Core statement compiled once per dialect
(``Prepared``), so the SQL text, the order of parameters and the column types' conversions (UTC
timestamps, booleans) are exactly SQLAlchemy's, and only the per-call machinery is skipped.

The driver connection is the one SQLAlchemy holds for the same transaction: SQLAlchemy still begins
(PostgreSQL), commits and rolls back, and pooling and invalidation stay its business. On SQLite a list
of statements (``Driver.run``) is one job on the connection's thread, one round trip however many
statements it holds. Errors are the drivers' own (``sqlite3.Error``, ``asyncpg`` exceptions), which
``signer.store.engine.translate`` understands.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect

from signer.audit import chain_hash
from signer.store.internals import positional_binds, run_on_thread

_REQUIRED = object()


class Prepared:
    """A Core statement compiled once for one dialect: SQL text, positional parameter names with their
    bind conversions, and the result columns' conversions."""

    __slots__ = ("_binds", "_defaults", "_results", "names", "returns", "sql")

    def __init__(self, statement: Any, dialect: Dialect, column_keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
        self.sql: str = compiled.string
        self.names, binds = positional_binds(compiled)
        self._binds = tuple(b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds)
        # Literals in the statement (``id == 1``) keep their value; a bindparam() without one must be given.
        self._defaults = tuple(_REQUIRED if b.required else b.value for b in binds)
        # A SELECT's columns, or what an INSERT/UPDATE ... RETURNING returns (empty otherwise).
        columns = list(getattr(statement, "exported_columns", ()))
        self.returns = bool(columns)
        self._results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        if not any(self._results):
            self._results = ()

    def params(self, values: Mapping[str, Any] | None) -> tuple[Any, ...]:
        if not self.names:
            return ()
        given = values or {}
        out = []
        for name, convert, default in zip(self.names, self._binds, self._defaults, strict=True):
            value = given.get(name, default)
            if value is _REQUIRED:
                raise TypeError(f"missing statement parameter: {name}")
            out.append(value if convert is None else convert(value))
        return tuple(out)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        if not self._results:
            return [tuple(r) for r in raw]
        converts = self._results
        return [tuple(v if c is None else c(v) for v, c in zip(row, converts, strict=True)) for row in raw]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a ``Driver.run``: ``rows`` for an executemany (possibly empty: skipped)."""

    prepared: Prepared
    values: Mapping[str, Any] | None = None
    rows: Sequence[Mapping[str, Any]] | None = None


class Driver(ABC):
    """Runs prepared statements on one driver connection (inside SQLAlchemy's transaction)."""

    @abstractmethod
    async def fetch(
        self, prepared: Prepared, values: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """A statement's rows, converted by its result columns' types."""

    @abstractmethod
    async def execute(self, prepared: Prepared, values: Mapping[str, Any] | None = None) -> int:
        """Runs a statement that returns no rows; the row count."""

    @abstractmethod
    async def plain(self, sql: str) -> None:
        """A fixed statement without parameters (SAVEPOINT, BEGIN)."""

    @abstractmethod
    async def run(
        self,
        steps: Sequence[Step],
        *,
        commit: bool = False,
        after_commit: Callable[[], None] | None = None,
    ) -> list[list[tuple[Any, ...]]]:
        """Every step in order, in one round trip where the driver allows; each step's rows (for an
        executemany: the rows its RETURNING clause gave, if any).

        ``commit``: the caller will commit right after; a driver that can end the transaction in the
        same round trip does so, and SQLAlchemy's commit() then has nothing left to send. The caller
        must still call it (and roll back if this raises). ``after_commit``: called by such a driver
        on the connection's own thread as soon as that COMMIT succeeded (it must be thread-safe and
        must not raise); a driver that leaves the commit to SQLAlchemy never calls it."""


# -- SQLite (aiosqlite: one thread per connection) ---------------------------------------------------

_Job = tuple[str, Any, bool]


def _run_jobs(
    connection: sqlite3.Connection,
    jobs: Sequence[_Job],
    commit: bool,
    after_commit: Callable[[], None] | None = None,
) -> tuple[list[tuple[list[Any], int]], bool]:
    # Runs on the connection's own thread: one hop for the whole list. Returns the results and whether
    # a requested COMMIT left the connection outside any transaction.
    out: list[tuple[list[Any], int]] = []
    cursor = connection.cursor()
    try:
        for sql, parameters, many in jobs:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)
            rows = cursor.fetchall() if cursor.description is not None else []
            out.append((rows, cursor.rowcount))
        if commit:
            cursor.execute("COMMIT")
    finally:
        cursor.close()
    committed = commit and not connection.in_transaction
    if committed and after_commit is not None:
        after_commit()
    return out, committed


@dataclass(frozen=True, slots=True)
class AheadCommit:
    """A batch run ahead of the write lock, as one job for the connection's thread (``run_ahead``).

    ``expected``: the head (seq, hash, epoch) the units ran on (the job refuses the batch when the epoch
    moved); ``epoch``: the epoch they leave (their bumps on top of the expected one); ``events``: their
    audit events in order (``AuditRecord``-like: at, request_id, kind, event), which the job chains on
    the head it finds (their own seq and hashes are not used)."""

    begin: str
    head: Prepared
    expected: tuple[int, str, int]
    steps: Sequence[Step]
    audit: Prepared
    events: Sequence[Any]
    head_update: Prepared
    epoch: int


def _run_ahead(
    connection: sqlite3.Connection, plan: AheadCommit, jobs: Sequence[_Job], claim: Any
) -> tuple[bool, tuple[int, str, int], list[tuple[list[Any], int]]] | None:
    # Runs on the connection's own thread: the write gate (``claim``: signer.store.gate.ThreadClaim,
    # or None without a gate), BEGIN IMMEDIATE, the head, and either ROLLBACK (the epoch moved: the
    # units decided on facts that are no longer current) or the rows, the audit events chained on the
    # head found, the new head and COMMIT, after which the gate is let go at once. Returns None if
    # the store gave up waiting for the gate (nothing done), (False, the head found, []) after the
    # rollback, (True, the new head, each job's results) after the COMMIT.
    if claim is not None and not claim.acquire():
        return None
    try:
        return _run_ahead_locked(connection, plan, jobs, claim)
    finally:
        if claim is not None:
            claim.release()


def _run_ahead_locked(
    connection: sqlite3.Connection, plan: AheadCommit, jobs: Sequence[_Job], claim: Any
) -> tuple[bool, tuple[int, str, int], list[tuple[list[Any], int]]]:
    cursor = connection.cursor()
    try:
        cursor.execute(plan.begin)
        try:
            cursor.execute(plan.head.sql, plan.head.params(None))
            found = plan.head.rows(cursor.fetchall())
            if not found:
                raise sqlite3.OperationalError("the audit log is not initialised")
            seq, head_hash, epoch = int(found[0][0]), str(found[0][1]), int(found[0][2])
            if epoch != plan.expected[2]:
                cursor.execute("ROLLBACK")
                return False, (seq, head_hash, epoch), []
            out: list[tuple[list[Any], int]] = []
            for sql, parameters, many in jobs:
                if many:
                    cursor.executemany(sql, parameters)
                else:
                    cursor.execute(sql, parameters)
                out.append((cursor.fetchall() if cursor.description is not None else [], cursor.rowcount))
            rows = []
            for event in plan.events:
                # Chained here, on the head found under the lock (the writer left the hashes to this
                # job): the units read nothing another process's commits could have changed, as the
                # epoch is the same, so only the events' place in the chain depends on them.
                prev_hash, seq = head_hash, seq + 1
                head_hash = chain_hash(prev_hash, event.event.encode("ascii"))
                rows.append(
                    plan.audit.params(
                        {
                            "seq": seq,
                            "at": event.at,
                            "request_id": event.request_id,
                            "kind": event.kind,
                            "event": event.event,
                            "prev_hash": prev_hash,
                            "hash": head_hash,
                        }
                    )
                )
            if rows:
                cursor.executemany(plan.audit.sql, rows)
            if rows or plan.epoch != epoch:
                cursor.execute(
                    plan.head_update.sql,
                    plan.head_update.params({"seq": seq, "hash": head_hash, "epoch": plan.epoch}),
                )
            cursor.execute("COMMIT")
            if claim is not None and not connection.in_transaction:
                claim.release()
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise
    finally:
        cursor.close()
    return True, (seq, head_hash, plan.epoch), out


def _as_jobs(steps: Sequence[Step]) -> tuple[list[_Job], list[Prepared]]:
    # The steps as jobs for the connection's thread (an executemany with no rows is left out), and the
    # statement of each job sent.
    jobs: list[_Job] = []
    kept: list[Prepared] = []
    for step in steps:
        if step.rows is not None:
            if not step.rows:
                continue
            jobs.append((step.prepared.sql, [step.prepared.params(r) for r in step.rows], True))
        else:
            jobs.append((step.prepared.sql, step.prepared.params(step.values), False))
        kept.append(step.prepared)
    return jobs, kept


def _rows_by_step(
    steps: Sequence[Step], kept: Sequence[Prepared], results: Sequence[tuple[list[Any], int]]
) -> list[list[tuple[Any, ...]]]:
    # Each step's converted rows (none for a step that was left out), from the jobs' results.
    by_step = iter(zip(kept, results, strict=True))
    out: list[list[tuple[Any, ...]]] = []
    for step in steps:
        if step.rows is not None and not step.rows:
            out.append([])
            continue
        prepared, (rows, _) = next(by_step)
        out.append(prepared.rows(rows))
    return out


class SQLiteDriver(Driver):
    def __init__(self, connection: Any) -> None:
        # The engine's aiosqlite connection (signer.store.engine._OneHopConnection); a job runs on its
        # thread (signer.store.internals.run_on_thread).
        self._connection = connection

    async def _jobs(
        self, jobs: Sequence[_Job], commit: bool = False, after_commit: Callable[[], None] | None = None
    ) -> list[tuple[list[Any], int]]:
        outcome: tuple[list[tuple[list[Any], int]], bool] = await run_on_thread(
            self._connection, _run_jobs, jobs, commit, after_commit
        )
        if outcome[1]:
            # Nothing ran on the connection since: SQLAlchemy's commit() may skip its round trip.
            self._connection.committed = True
        return outcome[0]

    async def fetch(
        self, prepared: Prepared, values: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        ((rows, _),) = await self._jobs([(prepared.sql, prepared.params(values), False)])
        return prepared.rows(rows)

    async def execute(self, prepared: Prepared, values: Mapping[str, Any] | None = None) -> int:
        ((_, count),) = await self._jobs([(prepared.sql, prepared.params(values), False)])
        return count

    async def plain(self, sql: str) -> None:
        await self._jobs([(sql, (), False)])

    async def rollback(self) -> None:
        """End any open transaction (none open: nothing happens), on the connection's thread."""
        await self._connection.rollback()

    async def run_ahead(
        self, plan: AheadCommit, claim: Any = None
    ) -> tuple[tuple[int, str, int], list[list[tuple[Any, ...]]] | None] | None:
        """``plan`` in one trip to the connection's thread, under the write gate taken there
        (``claim``, a ``ThreadClaim``; None without a gate): (the new head, each step's rows) after its
        COMMIT, (the head found, None) when the epoch had moved and nothing was written, or None when
        the claim was abandoned before the gate was granted (nothing done). On an error nothing of it
        is kept (rolled back on the thread) and the driver's exception is raised."""
        jobs, kept = _as_jobs(plan.steps)
        outcome = await run_on_thread(self._connection, _run_ahead, plan, jobs, claim)
        if outcome is None:
            return None
        committed, head, results = outcome
        if not committed:
            return head, None
        return head, _rows_by_step(plan.steps, kept, results)

    async def run(
        self,
        steps: Sequence[Step],
        *,
        commit: bool = False,
        after_commit: Callable[[], None] | None = None,
    ) -> list[list[tuple[Any, ...]]]:
        jobs, kept = _as_jobs(steps)
        results = await self._jobs(jobs, commit, after_commit) if jobs or commit else []
        return _rows_by_step(steps, kept, results)


# -- PostgreSQL (asyncpg) -----------------------------------------------------------------------------


class PostgresDriver(Driver):
    def __init__(self, connection: Any) -> None:
        self._connection = connection  # an asyncpg Connection

    async def fetch(
        self, prepared: Prepared, values: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        return prepared.rows(await self._connection.fetch(prepared.sql, *prepared.params(values)))

    async def execute(self, prepared: Prepared, values: Mapping[str, Any] | None = None) -> int:
        status: str = await self._connection.execute(prepared.sql, *prepared.params(values))
        # "UPDATE 3", "INSERT 0 3", "DELETE 1": the count is the last word.
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    async def plain(self, sql: str) -> None:
        await self._connection.execute(sql)

    async def run(
        self,
        steps: Sequence[Step],
        *,
        commit: bool = False,
        after_commit: Callable[[], None] | None = None,
    ) -> list[list[tuple[Any, ...]]]:
        # ``commit`` is left to SQLAlchemy: asyncpg's transaction object must end the transaction
        # (so ``after_commit`` is never called here).
        out: list[list[tuple[Any, ...]]] = []
        for step in steps:
            prepared = step.prepared
            if step.rows is None:
                out.append(await self.fetch(prepared, step.values))
            elif not step.rows:
                out.append([])
            elif prepared.returns:
                # asyncpg's fetchmany: an executemany that hands back what RETURNING gives, same trip.
                raw = await self._connection.fetchmany(prepared.sql, [prepared.params(r) for r in step.rows])
                out.append(prepared.rows(raw))
            else:
                await self._connection.executemany(prepared.sql, [prepared.params(r) for r in step.rows])
                out.append([])
        return out


def driver_for(backend: str, connection: Any) -> Driver:
    """The driver for ``connection`` (SQLAlchemy's ``driver_connection``) of ``backend``."""
    if backend == "sqlite":
        return SQLiteDriver(connection)
    return PostgresDriver(connection)


__all__ = ["AheadCommit", "Driver", "PostgresDriver", "Prepared", "SQLiteDriver", "Step", "driver_for"]
