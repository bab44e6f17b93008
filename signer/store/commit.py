"""The store and its group commit: reads on pooled connections, writes in one locked transaction.

Write lock: every ``Writer`` holds the database's write lock for its whole life (SQLite ``BEGIN
IMMEDIATE``; PostgreSQL ``SELECT ... FROM audit_head WHERE id = 1 FOR UPDATE``), so audit sequence
numbers are handed out by exactly one transaction at a time across every process sharing the database.
Audit events are chained in memory as they are appended and written, with the new head, just before
COMMIT, in the same transaction as the facts they describe.

Group commit (``Store.submit``): one batching task per store collects the units that callers submit and
runs up to ``batch_max`` of them, one after another, inside one write transaction; the callers' awaits
return only after that COMMIT succeeded. A unit that raises is undone alone: its buffered audit events
and epoch bumps are dropped from memory, and its SQL writes are rolled back to a savepoint. The savepoint
is taken lazily, just before the unit's first write statement, so the common unit (a few reads and an
audit event) costs no savepoint at all, and it is never RELEASEd (COMMIT releases them all): a writing
unit pays one extra statement, not two. Measured on 2 cores, one insert + one event per unit, 64
callers: roughly 1,100-1,700 units/s with lazy savepoints against 1,600-2,400 with none (unsafe) and
500-800 with SAVEPOINT + RELEASE per unit. Re-running the surviving units after a failure would avoid
savepoints altogether, but units have side effects outside the database, so they must run once.
On PostgreSQL a batch stops taking units after
``_PG_MAX_SAVEPOINTS`` writing units, because more subtransactions than PostgreSQL caches per backend
(64) slow every other session's snapshots; the rest simply go into the next batch.

A signing unit sends no write statement at all: its audit event, reservations and idempotency record
are buffered in the writer (and dropped with the unit if it fails), and the whole batch's rows are
written by one executemany per table just before COMMIT. The statements every batch runs go to the
driver connection directly (``signer.store.driver``), not through SQLAlchemy's per-statement machinery,
which costs twice the driver's own work; on SQLite the begin and head read are one round trip, and the
flush with its COMMIT another, on a connection the batcher keeps between batches (no pool checkout,
SQLAlchemy transaction or greenlet per batch: ``Store._held_transaction``).

Because every write transaction takes the same lock first, a unit's check-then-write (a spend limit, a
rate counter) is race-free across processes without further row locks, and writers cannot deadlock
each other. Units must be short and do only database work through the writer: while one runs, the
whole batch (and every other writer on the database) waits. Cancelling a caller's await before its unit
starts removes the unit; once it has started, it runs to the end and may commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from signer.audit import format_at
from signer.errors import AuditUnavailable, DatabaseUnavailable, SignerError, TransactionConflict
from signer.store import schema as t
from signer.store.driver import AheadCommit, Prepared, SQLiteDriver, Step, driver_for
from signer.store.engine import (
    ConnectionFaults,
    Target,
    as_audit_failure,
    file_id,
    is_connection_fault,
    translate,
)
from signer.store.gate import ThreadClaim, WriteGate
from signer.store.ledger import LedgerCache
from signer.store.reader_writer import Reader, Writer
from signer.store.tx import (
    _AUDIT_COLUMNS,
    _AUDIT_INSERT,
    _BEGIN_IMMEDIATE,
    _HEAD_SELECT,
    _HEAD_SELECT_FOR_UPDATE,
    _HEAD_UPDATE,
)

log = logging.getLogger("signer.store")

T = TypeVar("T")
Unit = Callable[["Writer"], Awaitable[T]]

_PG_MAX_SAVEPOINTS = 60
# SQLite: a passive WAL checkpoint beside the commits after this many batches (see _wal_after_batch); at
# ~3 pages per batch of one and ~1 per unit in larger batches, well under SQLite's own threshold
# (engine.WAL_AUTOCHECKPOINT_PAGES) with two workers. Each costs a pooled checkout and a thread trip:
# at one request per batch, every 32 batches added ~4 system calls per request (strace -c, 1 client).
_WAL_CHECKPOINT_BATCHES = 64
_WAL_CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
# SQLite: the batcher keeps its write connection between batches only when the pool has at least this
# many, so reads and write() still find a connection while it is held (see Store._held_transaction).
_HOLD_MIN_POOL = 3
_WRITE_PROBE = "readiness_write_probe"
_CONFLICT_RETRIES = 3
# After a batch that could not run ahead of the write lock, this many batches (doubling up to the
# maximum with every further miss) take the lock first (see Store._run_ahead).
_AHEAD_FIRST_SKIP = 1
_AHEAD_MAX_SKIP = 64


async def _run_unit(
    writer: Writer, unit: Unit[Any], future: asyncio.Future[Any]
) -> tuple[asyncio.Future[Any], bool, Any]:
    # One unit of a batch, inside its own savepoint: (its caller's future, ok, its value or its error).
    writer._unit_begin()
    try:
        value = await unit(writer)
    except Exception as exc:  # noqa: BLE001 - a unit's own error goes back to its caller
        return future, False, await writer._unit_end(exc)
    failure = await writer._unit_end(None)
    return (future, True, value) if failure is None else (future, False, failure)


def _fail_pending(batch: Sequence[tuple[Unit[Any], asyncio.Future[Any]]], error: SignerError) -> None:
    # Every caller of the batch still waiting hears ``error``.
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _settle(waiter: asyncio.Future[Any], job: asyncio.Task[Any]) -> None:
    # A run-ahead job ended: its outcome goes to the batch unless the batch stopped waiting (the gate's
    # timeout, a cancellation); the job's exception is retrieved either way.
    if job.cancelled():
        if not waiter.done():
            waiter.cancel()
        return
    error = job.exception()
    if waiter.done():
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(job.result())


def _give_up(claim: ThreadClaim, waiter: asyncio.Future[Any]) -> None:
    # The lock timeout passed: stop waiting only if the job has not got the gate yet (it then does
    # nothing); a job holding it commits or fails, and the batch hears which.
    if claim.abandon() and not waiter.done():
        waiter.set_result(None)


# -- the store --------------------------------------------------------------------------------------


def _begin_on_driver(connection: Connection) -> Any:
    """SQLAlchemy's transaction on ``connection`` and the driver connection under it (run_sync)."""
    connection.begin()
    return connection.connection.driver_connection


def _commit_and_close(connection: Connection) -> None:
    """COMMIT (an error is the caller's, who still holds the connection), then back to the pool
    (a failure there only means the connection is gone: it is logged, as ``Store._release`` does)."""
    connection.commit()
    try:
        connection.close()
    except Exception as exc:  # noqa: BLE001 - any driver failure here only means "connection gone"
        log.warning("database connection dropped on release", extra={"driver_error": type(exc).__name__})


class Store:
    """Entry point: ``read()``, ``write()``, ``submit()``, health checks. Create with ``open_store``."""

    def __init__(
        self,
        engine: AsyncEngine,
        target: Target,
        *,
        batch_max: int,
        lock_timeout: float = 5.0,
        faults: ConnectionFaults | None = None,
    ) -> None:
        self._engine = engine
        # Marked when a connection meets a connection-level fault: its pooled siblings are replaced.
        self._faults = faults or ConnectionFaults()
        self._target = target
        self.backend = target.backend
        self._batch_max = batch_max
        # Committed ledger rows per limit key, kept exact under the write lock (see ledger).
        self.ledger_cache = LedgerCache()
        # The commit path's statements, compiled once for this dialect (keyed by the statement object).
        self._compiled: dict[tuple[int, tuple[str, ...] | None], tuple[Any, Prepared]] = {}
        # SQLite only: orders the worker processes' write transactions fairly (see gate).
        self._gate = WriteGate(target.path, lock_timeout) if target.path is not None else None
        if target.backend == "postgresql":
            self._read_engine = engine
            self._write_engine = engine.execution_options(isolation_level="READ COMMITTED")
            self._max_savepoints = _PG_MAX_SAVEPOINTS
        else:
            self._read_engine = engine
            self._write_engine = engine.execution_options(signer_write=True)
            self._max_savepoints = 1 << 30
        self._queue: deque[tuple[Unit[Any], asyncio.Future[Any]]] = deque()
        self._rerunnable: set[int] = set()  # id() of the futures of rerunnable units
        self._relinkable: set[int] = set()  # id() of the futures of units that may run ahead
        # SQLite, held connection: the head (seq, hash, epoch) this process last committed or found,
        # and how many batches still take the lock first after a run-ahead missed (Store._run_ahead).
        self._ahead_head: tuple[int, str, int] | None = None
        self._set_aside_releases: set[asyncio.Task[None]] = set()  # see _set_aside
        self._ahead_skip = 0
        self._ahead_next_skip = _AHEAD_FIRST_SKIP
        self._wake = asyncio.Event()
        self._batcher: asyncio.Task[None] | None = None
        self._batcher_rested = False
        # SQLite: the batcher's write connection and its driver, kept between batches.
        self._held: tuple[AsyncConnection, SQLiteDriver] | None = None
        self._hold = target.backend == "sqlite" and self.pool_status()[1] >= _HOLD_MIN_POOL
        self._closing = False
        self._closed = False
        # SQLite: batches since the last WAL checkpoint, and the checkpoint running beside the commits.
        self._wal_batches = 0
        self._wal_checkpoint: asyncio.Task[None] | None = None
        # Optional, set by the composition root: called after every group commit with (seconds, units).
        self.batch_observer: Callable[[float, int], None] | None = None
        # Optional: called with the error's code whenever a group commit fails (its audit events with it).
        self.failure_observer: Callable[[str], None] | None = None
        # Whether the last group commit failed: the alert is logged once when writes start failing and
        # the recovery once when one commits again, not once per refused request.
        self._writes_failing = False

    def __repr__(self) -> str:
        return f"<Store backend={self.backend}>"

    # numbers for metrics (read-only, no I/O)

    @property
    def queue_depth(self) -> int:
        """Units waiting for the next group commit."""
        return len(self._queue)

    def pool_status(self) -> tuple[int, int]:
        """Pooled connections (checked out, pool size); zeros for a pool that does not count."""
        pool = self._engine.pool
        checkedout = getattr(pool, "checkedout", None)
        size = getattr(pool, "size", None)
        return (
            int(checkedout()) if callable(checkedout) else 0,
            int(size()) if callable(size) else 0,
        )

    # lifecycle

    async def close(self) -> None:
        """Finish queued units, stop the batcher, close every pooled connection."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._batcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
            self._batcher = None
        if self._wal_checkpoint is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._wal_checkpoint
            self._wal_checkpoint = None
        self._closed = True
        if self._held is not None:
            conn, self._held = self._held[0], None
            await self._release(conn)
        await self._engine.dispose()
        if self._gate is not None:
            self._gate.close()

    def _check_open(self) -> None:
        if self._closing:
            raise DatabaseUnavailable("the store is closed")

    def _prepared(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Prepared:
        # Only module-level statements come here, so the cache stays as small as the code.
        found = self._compiled.get((id(statement), column_keys))
        if found is None:
            found = (statement, Prepared(statement, self._engine.dialect, column_keys))
            self._compiled[(id(statement), column_keys)] = found
        return found[1]

    # connections

    async def _checkout(self, engine: AsyncEngine) -> AsyncConnection:
        conn = engine.connect()
        try:
            await conn.start()
        except Exception as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from None
        return conn

    async def _release(self, conn: AsyncConnection, *, faulted: bool = False) -> None:
        if faulted:
            # Never back into the pool: the next checkout opens a fresh connection, and those opened
            # before this fault are replaced at their next checkout (engine.ConnectionFaults).
            self._faults.mark()
            log.warning("database connection discarded after a connection fault")
            with contextlib.suppress(Exception):
                await conn.invalidate()
        try:
            await conn.close()
        except Exception as exc:  # noqa: BLE001 - any driver failure here only means "connection gone"
            # Returning a broken connection fails; the pool has already discarded it.
            log.warning("database connection dropped on release", extra={"driver_error": type(exc).__name__})

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Reader]:
        """A Reader on a pooled connection (no write lock)."""
        self._check_open()
        conn = await self._checkout(self._read_engine)
        reader = Reader(self, conn)
        try:
            yield reader
        finally:
            reader._unlink()
            await self._release(conn, faulted=reader._connection_fault)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Writer]:
        """One transaction holding the write lock: commits on normal exit, rolls back on exception.

        Failing to begin or to commit raises ``DatabaseUnavailable`` when the database cannot serve,
        otherwise ``AuditUnavailable``; either way nothing of the transaction is kept.
        """
        self._check_open()
        async with self._transaction() as writer:
            yield writer

    @asynccontextmanager
    async def _transaction(self, *, gated: bool = False) -> AsyncIterator[Writer]:
        # write() without the "closing" check: the batcher still drains its queue during close().
        # Only the batcher (one transaction at a time per process) queues at the gate: it is what
        # competes with other processes' batchers for SQLite's write lock under load.
        self._check_writable()
        gate = self._gate.held(rested=self._batcher_rested) if gated and self._gate is not None else None
        writer: Writer | None = None
        try:
            async with gate or contextlib.nullcontext() as release:
                transaction = self._held_transaction() if gated and self._hold else self._write_transaction()
                async with transaction as writer:
                    # The gate goes the moment COMMIT succeeded, on the connection's thread: the other
                    # workers' batches no longer wait for this result's trip back to the event loop.
                    writer._after_commit = release
                    yield writer
        finally:
            if writer is not None:
                writer._unlink()

    # The batcher's own connection (SQLite). At one unit per batch, as at low load, checking a
    # connection out of the pool, beginning SQLAlchemy's transaction, and committing and returning it
    # cost three greenlets (each maps and unmaps a Python frame stack) and the pool's bookkeeping on
    # every request. The batcher runs one transaction at a time, so it keeps one connection between
    # batches and drives the transaction itself through the driver: BEGIN IMMEDIATE with the head, and
    # the flush with its COMMIT, two trips to the connection's thread and nothing else. SQLAlchemy only
    # sees the transaction if a unit sends a statement through it (it then begins its own on top,
    # sending nothing, see engine.py) and is told about the COMMIT afterwards, without a trip. Before
    # each batch the connection is checked as the pool checks a checkout (a connection fault since it
    # was opened, a database file removed or replaced, a connection SQLite opened read-only); one that
    # fails is returned to the pool, which replaces it, and so is one that met a fault or an error
    # while rolling back. Only with a pool of at least _HOLD_MIN_POOL connections, so reads and
    # write() keep at least two.

    def _held_is_current(self, conn: AsyncConnection) -> bool:
        info = conn.sync_connection.info if conn.sync_connection is not None else {}
        path = self._target.path
        return (
            info.get("signer_generation", -1) >= self._faults.generation
            and not info.get("signer_read_only", True)
            and path is not None
            and file_id(path) == info.get("signer_file_id")
        )

    async def _held_connection(self) -> tuple[AsyncConnection, SQLiteDriver]:
        held = self._held
        if held is not None and not self._held_is_current(held[0]):
            # Back to the pool, whose checkout replaces it (engine.py), as it would any pooled one.
            self._held = None
            self._ahead_head = None
            await self._release(held[0])
            held = None
        if held is None:
            conn = await self._checkout(self._write_engine)
            try:
                raw = await conn.get_raw_connection()
            except BaseException:
                await self._release(conn)
                raise
            held = (conn, SQLiteDriver(raw.driver_connection))
            if self._held_is_current(conn):
                self._held = held
        return held

    @asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[Writer]:
        # Each of SQLAlchemy's async calls runs in a greenlet of its own, whose Python frame stack is
        # mapped and unmapped around it (two system calls, page faults, a TLB shootdown with our other
        # threads): at one unit per batch, as at low load, five of them per batch were a visible part
        # of a request. Beginning and reaching the driver connection, and committing and returning the
        # connection, go in one greenlet each (run_sync): three per batch instead of five.
        conn = await self._checkout(self._write_engine)
        faulted = False
        released = False
        writer: Writer | None = None
        try:
            try:
                driver = driver_for(self.backend, await conn.run_sync(_begin_on_driver))
                if self.backend == "sqlite":
                    # The engine leaves BEGIN to us (see engine.py): BEGIN IMMEDIATE and the head in
                    # one round trip.
                    _, rows = await driver.run(
                        [Step(self._prepared(_BEGIN_IMMEDIATE)), Step(self._prepared(_HEAD_SELECT))]
                    )
                    row = rows[0] if rows else None
                else:
                    # Through SQLAlchemy: its first statement is what opens the transaction it commits.
                    row = (await conn.execute(_HEAD_SELECT_FOR_UPDATE)).first()
            except Exception as exc:  # noqa: BLE001 - translated: DatabaseUnavailable or AuditUnavailable
                faulted = is_connection_fault(exc)
                raise self._begin_commit_error(exc) from None
            if row is None:
                raise AuditUnavailable("the audit log is not initialised")
            writer = Writer(self, conn, driver, int(row[0]), str(row[1]), int(row[2]))
            try:
                yield writer
                if writer._failed is not None:
                    raise writer._failed
            except BaseException:
                writer._finished = True
                await self._rollback(conn)
                raise
            try:
                await writer._flush()
                writer._finished = True
                if writer._connection_fault:
                    # A statement met a connection fault yet the unit committed: commit, but the
                    # connection is discarded in _release rather than returned to the pool.
                    await conn.commit()
                else:
                    await conn.run_sync(_commit_and_close)
                    released = True
            except BaseException as exc:
                writer._finished = True
                faulted = isinstance(exc, Exception) and is_connection_fault(exc)
                await self._rollback(conn)
                if isinstance(exc, Exception):
                    raise self._begin_commit_error(exc) from None
                raise
            writer._policy_committed()
        finally:
            if not released:
                faulted = faulted or (writer is not None and writer._connection_fault)
                await self._release(conn, faulted=faulted)

    @asynccontextmanager
    async def _held_transaction(self) -> AsyncIterator[Writer]:
        # _write_transaction on the batcher's held connection (SQLite; see _held_connection).
        conn, driver = await self._held_connection()
        keep = False
        faulted = False
        writer: Writer | None = None
        try:
            try:
                _, rows = await driver.run(
                    [Step(self._prepared(_BEGIN_IMMEDIATE)), Step(self._prepared(_HEAD_SELECT))]
                )
            except Exception as exc:  # noqa: BLE001 - translated: DatabaseUnavailable or AuditUnavailable
                faulted = is_connection_fault(exc)
                # BEGIN may have succeeded before the head read failed.
                keep = await self._rollback_held(conn, driver)
                raise self._begin_commit_error(exc) from None
            row = rows[0] if rows else None
            if row is None:
                keep = await self._rollback_held(conn, driver)
                raise AuditUnavailable("the audit log is not initialised")
            writer = Writer(self, conn, driver, int(row[0]), str(row[1]), int(row[2]))
            try:
                yield writer
                if writer._failed is not None:
                    raise writer._failed
            except BaseException as exc:
                writer._finished = True
                keep = await self._rollback_held(conn, driver) and isinstance(exc, Exception)
                raise
            try:
                await writer._flush()
                writer._finished = True
                if conn.in_transaction():
                    # A unit went through SQLAlchemy, which began its own transaction on top of ours:
                    # the flush's COMMIT ended it, and this tells SQLAlchemy without a trip.
                    await conn.commit()
            except BaseException as exc:
                writer._finished = True
                faulted = isinstance(exc, Exception) and is_connection_fault(exc)
                keep = await self._rollback_held(conn, driver) and isinstance(exc, Exception)
                if isinstance(exc, Exception):
                    raise self._begin_commit_error(exc) from None
                raise
            writer._policy_committed()
            self._ahead_head = (writer._seq, writer._hash, writer._epoch)
            keep = True
        finally:
            faulted = faulted or (writer is not None and writer._connection_fault)
            if faulted or not keep or self._held is None or self._held[0] is not conn:
                if self._held is not None and self._held[0] is conn:
                    self._held = None
                    self._ahead_head = None
                await self._release(conn, faulted=faulted)

    async def _rollback_held(self, conn: AsyncConnection, driver: SQLiteDriver) -> bool:
        """Roll the held connection back to no transaction; False if it should not be kept."""
        try:
            if conn.in_transaction():
                # SQLAlchemy's rollback reaches the driver's (there is one transaction underneath).
                await conn.rollback()
            else:
                await driver.rollback()
        except Exception as exc:  # noqa: BLE001 - any driver failure here only means "connection gone"
            log.warning("rollback failed", extra={"driver_error": type(exc).__name__})
            with contextlib.suppress(Exception):
                await conn.invalidate()
            return False
        return True

    def _begin_commit_error(self, exc: Exception) -> SignerError:
        error = translate(exc)
        if error is None:
            log.error("unexpected error while committing", extra={"error": type(exc).__name__})
            error = AuditUnavailable("the audit log could not be written")
        return as_audit_failure(error)

    async def _rollback(self, conn: AsyncConnection) -> None:
        try:
            await conn.rollback()
        except Exception as exc:  # noqa: BLE001 - any driver failure here only means "connection gone"
            # The connection is gone or broken; the server discards the transaction with it.
            log.warning("rollback failed", extra={"driver_error": type(exc).__name__})
            with contextlib.suppress(Exception):
                await conn.invalidate()

    def _check_writable(self) -> None:
        path = self._target.path
        if path is None:
            return
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise DatabaseUnavailable("database file cannot be opened") from None
        # Honour an operator who marks the file read-only even when we run as root, where the
        # kernel would still let SQLite write.
        if not mode & 0o222:
            raise DatabaseUnavailable("database is read-only")

    # group commit

    async def submit(self, unit: Unit[T], *, rerunnable: bool = False, relinkable: bool = False) -> T:
        """Run ``unit(writer)`` in the next group-commit batch; returns its result after COMMIT.

        The unit's own exception comes back to this caller only (its writes and audit events are
        undone, the rest of the batch commits). If the batch cannot begin or commit, every caller in
        it gets ``DatabaseUnavailable`` or ``AuditUnavailable`` and nothing of the batch is kept.

        ``rerunnable``: the unit only reads and writes through its writer, so it may run again.
        ``relinkable`` (implies rerunnable): it also makes no use of the seq and hashes of the
        ``AuditRecord`` that ``append_audit`` returns, so on SQLite its batch may run ahead of the
        write lock and have its events chained on the head found under the lock (``_run_ahead``).
        """
        self._check_open()
        if self._batcher is not None and asyncio.current_task() is self._batcher:
            # The batcher would wait for itself: a unit must use its writer, not submit again.
            raise RuntimeError("Store.submit() called from inside a unit")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, future))
        if rerunnable or relinkable:
            self._rerunnable.add(id(future))
        if relinkable:
            self._relinkable.add(id(future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.get_running_loop().create_task(
                self._batch_loop(), name="signer-store-batcher"
            )
        self._wake.set()
        try:
            return await future
        finally:
            self._rerunnable.discard(id(future))
            self._relinkable.discard(id(future))

    async def _batch_loop(self) -> None:
        try:
            # Rested: no batch of ours ran since this task waited for work (or started), so taking
            # the write gate now is not a back-to-back re-take (see WriteGate.held).
            self._batcher_rested = True
            while True:
                while not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    self._batcher_rested = True
                batch: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
                while self._queue and len(batch) < self._batch_max:
                    item = self._queue.popleft()
                    if not item[1].done():  # a caller that was cancelled while queued
                        batch.append(item)
                if batch:
                    started = time.perf_counter()
                    try:
                        await self._run_batch(batch)
                    finally:
                        self._batcher_rested = False
                    if self.batch_observer is not None:
                        self.batch_observer(time.perf_counter() - started, len(batch))
                    if self._gate is not None:
                        self._wal_after_batch()
        except BaseException:
            error = DatabaseUnavailable("the store is closed")
            while self._queue:
                _, future = self._queue.popleft()
                if not future.done():
                    future.set_exception(error)
            raise

    # SQLite: WAL checkpoints beside the commits. SQLite checkpoints by itself at the end of the COMMIT that
    # takes the WAL past ``wal_autocheckpoint`` pages (1,000): it copies them into the database and
    # fsyncs it while the batch still holds the write gate, so every worker's commits wait. Measured at
    # 300 signatures/s: one commit in ~300 did it, 3-12 ms each, against 0.3-0.5 ms for a commit. Here
    # a passive checkpoint (it never waits for or blocks a writer or a reader) runs on a pooled
    # connection of its own every _WAL_CHECKPOINT_BATCHES batches, off the commit path, so the WAL
    # seldom reaches the threshold inside a commit; SQLite's own stays as the backstop. Durability does
    # not depend on checkpoints: a commit is durable once the WAL is fsynced (synchronous=FULL).

    def _wal_after_batch(self) -> None:
        self._wal_batches += 1
        if self._wal_batches < _WAL_CHECKPOINT_BATCHES or self._closing:
            return
        if self._wal_checkpoint is not None and not self._wal_checkpoint.done():
            return
        self._wal_batches = 0
        self._wal_checkpoint = asyncio.get_running_loop().create_task(
            self._checkpoint_wal(), name="signer-wal-checkpoint"
        )

    async def _checkpoint_wal(self) -> None:
        try:
            conn = await self._checkout(self._read_engine)
        except Exception as exc:  # noqa: BLE001 - the next batch tries again; SQLite's own is the backstop
            log.warning("WAL checkpoint skipped", extra={"driver_error": type(exc).__name__})
            return
        faulted = False
        try:
            raw = await conn.get_raw_connection()
            await SQLiteDriver(raw.driver_connection).plain(_WAL_CHECKPOINT)
        except Exception as exc:  # noqa: BLE001 - as above
            faulted = is_connection_fault(exc)
            log.warning("WAL checkpoint failed", extra={"driver_error": type(exc).__name__})
        finally:
            await self._release(conn, faulted=faulted)

    async def _run_batch(
        self, batch: Sequence[tuple[Unit[Any], asyncio.Future[Any]]], attempt: int = 0
    ) -> None:
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        leftover: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        if attempt == 0 and self._may_run_ahead(batch):
            try:
                ahead = await self._run_ahead(batch)
            except BaseException:
                _fail_pending(batch, DatabaseUnavailable("the store is closed"))
                raise
            if ahead is not None:
                self._deliver(ahead)
                return
        try:
            async with self._transaction(gated=True) as writer:
                for index, (unit, future) in enumerate(batch):
                    if writer._savepoints_used >= self._max_savepoints:
                        leftover = list(batch[index:])
                        break
                    if future.done():
                        continue
                    outcomes.append(await _run_unit(writer, unit, future))
        except Exception as exc:  # noqa: BLE001 - the batch failed: every caller must hear about it
            error = translate(exc) or AuditUnavailable("the audit log could not be written")
            if (
                isinstance(error, TransactionConflict)
                and attempt < _CONFLICT_RETRIES
                and all(id(f) in self._rerunnable for _, f in batch)
            ):
                # Nothing of the batch was kept; every unit only read and wrote through its writer.
                log.warning(
                    "batch aborted by a transaction conflict; retrying", extra={"attempt": attempt + 1}
                )
                # Jitter only spreads competing retries apart; it protects nothing.
                await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)  # noqa: S311
                return await self._run_batch(batch, attempt + 1)
            error = as_audit_failure(error)
            self._write_failed(error)
            decided = {id(f) for f, _, _ in outcomes}
            for future, ok, value in outcomes:
                if not future.done():
                    future.set_exception(error if ok else value)
            for _, future in batch:
                if id(future) not in decided and not future.done():
                    future.set_exception(error)
            if isinstance(error, DatabaseUnavailable):
                # Callers that queued while this batch waited would wait as long again for the
                # same unavailable database, past their deadlines: tell them now.
                while self._queue:
                    _, future = self._queue.popleft()
                    if not future.done():
                        future.set_exception(error)
            return
        except BaseException:
            _fail_pending(batch, DatabaseUnavailable("the store is closed"))
            raise
        self._deliver(outcomes)
        if leftover:
            self._queue.extendleft(reversed(leftover))

    def _deliver(self, outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        """After a COMMIT: each caller gets its unit's result or its own error."""
        if self._writes_failing:
            self._writes_failing = False
            log.warning("audit log writes recovered: group commits succeed again")
        for future, ok, value in outcomes:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    # Running ahead of the write lock (SQLite, the batcher's held connection). At low load every batch
    # holds one unit and cost two trips to the connection's thread, each a wake-up of that thread and
    # of the event loop: BEGIN IMMEDIATE with the head, then, after the units ran on the loop, the flush
    # with its COMMIT; and the write lock (with the gate) stayed held across both and the loop's turn
    # between them, which is what another worker's batch waits for. A batch of units that send no
    # statement (the signing unit: its audit event, reservations and idempotency record are buffered)
    # needs the database only for the head. So when this process knows the head (its last commit)
    # and every unit of the batch is relinkable, the units run first on that head with no lock held
    # (any statement, or asking for the head, raises NeedsWriteLock), and then one job on the
    # connection's thread takes the write gate there (a ThreadClaim: no loop turn inside the hold;
    # given up, the job doing nothing, if the lock timeout passes first), does BEGIN IMMEDIATE,
    # reads the head, and:
    # - if the epoch is not the one the units ran on, rolls back: a decision fact changed, so they
    #   must decide again; the batch runs the ordinary way (each unit a second time);
    # - otherwise writes the buffered rows, the audit events chained on the head it found (another
    #   process may have committed events since: the same events then get the next seqs and their
    #   hashes are recomputed over the same canonical text; the units read nothing those commits could
    #   change, as the epoch says), the new head, and COMMITs, which fsyncs as always; the gate is let
    #   go right there.
    # Measured with two workers and 32 connections fetching one secret (bench/gate_hold.py), the
    # ordinary path held the gate ~2.3 ms per batch of ~8 (for ~0.4 ms of database work; the rest was
    # the loop's turns) and ~80 % of the time, so the workers' commits, not their CPU, set the rate;
    # this path holds it ~0.5 ms at p50.
    # The callers hear their outcome only after that COMMIT, as in the ordinary path. A unit that
    # needed the lock, an epoch that moved, or any error makes the batch run the ordinary way (which
    # reports any failure as before) and the next batches take the lock first (1, 2, 4 ... 64 of
    # them), so a workload whose units read the database (spend limits, idempotency keys) pays the
    # wasted start rarely. A decision counted by metrics in a unit that runs twice is counted twice,
    # as after a PostgreSQL conflict retry.

    def _may_run_ahead(self, batch: Sequence[tuple[Unit[Any], asyncio.Future[Any]]]) -> bool:
        if not self._hold or self._ahead_head is None or self._closing:
            return False
        if self._ahead_skip > 0:
            self._ahead_skip -= 1
            return False
        return all(id(future) in self._relinkable for _, future in batch)

    def _ahead_missed(self) -> None:
        self._ahead_skip = self._ahead_next_skip
        self._ahead_next_skip = min(self._ahead_next_skip * 2, _AHEAD_MAX_SKIP)

    async def _run_ahead(
        self, batch: Sequence[tuple[Unit[Any], asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], bool, Any]] | None:
        """The batch run ahead of the write lock and committed in one trip: its outcomes, or None
        when it must run the ordinary way (nothing of it was kept)."""
        assert self._ahead_head is not None
        try:
            self._check_writable()
            conn, driver = await self._held_connection()
        except Exception:  # noqa: BLE001 - the ordinary way meets it again and reports it
            return None
        if self._ahead_head is None:  # the held connection was replaced
            return None
        expected = self._ahead_head
        writer = Writer(self, conn, driver, *expected)
        try:
            writer._ahead = True
            outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
            for unit, future in batch:
                if future.done():
                    continue
                outcomes.append(await _run_unit(writer, unit, future))
                if writer._ahead_missed:
                    self._ahead_missed()
                    return None
            steps, spans = writer._buffered_steps()
            plan = AheadCommit(
                begin=_BEGIN_IMMEDIATE.text,
                head=self._prepared(_HEAD_SELECT),
                expected=expected,
                steps=steps,
                audit=self._prepared(_AUDIT_INSERT, _AUDIT_COLUMNS),
                events=list(writer._pending),
                head_update=self._prepared(_HEAD_UPDATE),
                epoch=writer._epoch,
            )
            try:
                committed = await self._commit_ahead(conn, driver, plan)
                if committed is None:
                    raise DatabaseUnavailable("database is busy")
                head, results = committed
            except Exception as exc:  # noqa: BLE001 - the ordinary way meets it again and reports it
                writer._finished = True
                if is_connection_fault(exc) and self._held is not None and self._held[0] is conn:
                    self._held = None
                    self._ahead_head = None
                    await self._release(conn, faulted=True)
                self._ahead_missed()
                return None
            if results is None:
                writer._finished = True
                self._ahead_head = head
                self._ahead_missed()
                return None
            writer._ahead_committed(spans, results, head)
            writer._policy_committed()
            self._ahead_head = head
            self._ahead_next_skip = _AHEAD_FIRST_SKIP
            return outcomes
        finally:
            # As every transaction does at its end (Store._transaction): the writer and its table
            # families point at each other, and a cycle left per batch is work for the collector.
            writer._unlink()

    async def _commit_ahead(
        self, conn: AsyncConnection, driver: SQLiteDriver, plan: AheadCommit
    ) -> tuple[tuple[int, str, int], list[list[tuple[Any, ...]]] | None] | None:
        """``driver.run_ahead(plan)`` with the write gate taken on the connection's thread (see
        signer.store.gate: no loop turn inside the hold); None if the gate was not granted within the
        lock timeout (the job, still queued for it, will do nothing)."""
        if self._gate is None:
            return await driver.run_ahead(plan)
        claim = self._gate.claim()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        job = loop.create_task(driver.run_ahead(plan, claim))
        job.add_done_callback(functools.partial(_settle, waiter))
        expiry = loop.call_later(self._gate.timeout, _give_up, claim, waiter)
        try:
            outcome = await waiter
        finally:
            expiry.cancel()
        if outcome is None:
            self._set_aside(conn, job)
        return cast("tuple[tuple[int, str, int], list[list[tuple[Any, ...]]] | None] | None", outcome)

    def _set_aside(self, conn: AsyncConnection, job: asyncio.Task[Any]) -> None:
        """The held connection whose thread still waits in the kernel's queue for the gate (a claim
        given up on): no batch may queue behind that wait, and closing the store must not wait for it
        (the other holder may keep the lock for as long as it likes). It leaves the held slot (the next
        batch checks out another connection) and, once its job has ended, goes back to the pool, or is
        closed if the store closed meanwhile (until then its thread, a daemon, cannot keep the process
        alive)."""
        if self._held is not None and self._held[0] is conn:
            self._held = None
            self._ahead_head = None

        async def back_to_pool() -> None:
            await asyncio.wait((job,))
            if self._closing or self._closed:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
            else:
                await self._release(conn)

        released = asyncio.get_running_loop().create_task(back_to_pool())
        self._set_aside_releases.add(released)
        released.add_done_callback(self._set_aside_releases.discard)

    def _write_failed(self, error: SignerError) -> None:
        """A group commit failed: nothing it carried is kept, its callers hear 503. Count it and raise
        the alert (an error log) when writes start failing."""
        if not self._writes_failing:
            self._writes_failing = True
            log.error(
                "audit log cannot be written: refusing every request it would record",
                extra={"code": error.code},
            )
        if self.failure_observer is not None:
            self.failure_observer(error.code)

    # health

    async def ping(self) -> None:
        """Raises DatabaseUnavailable unless the database answers a query."""
        async with self.read() as reader:
            await reader._first(select(1))

    async def probe_write(self) -> None:
        """Raises ``DatabaseUnavailable`` (or ``AuditUnavailable``) unless a write commits now.

        The write goes the way every signing decision's does (group commit, the write gate, a pooled
        connection, a COMMIT that reaches the disk), so it fails exactly when theirs would: a file
        that can be read but not written, a full disk, a lost connection. It rewrites one ``meta``
        row (the time of the probe), so the database does not grow.
        """

        async def unit(writer: Writer) -> None:
            await writer.meta.set(_WRITE_PROBE, format_at(writer.now), replace=True)

        await self.submit(unit, rerunnable=True)

    async def integrity_check(self) -> bool:
        """SQLite: ``PRAGMA integrity_check`` is "ok"; both: the audit head matches the last event and
        the log starts at seq 1."""
        async with self.read() as reader:
            if self.backend == "sqlite":
                rows = await reader._all(text("PRAGMA integrity_check"))
                if [tuple(r) for r in rows] != [("ok",)]:
                    return False
            seq, head_hash = await reader.audit_head()
            # Index lookups only, so this stays cheap on a large log; gaps and edits inside the
            # chain are what verify_chain over an export is for.
            last = await reader._first(
                select(t.audit_events.c.seq, t.audit_events.c.hash)
                .order_by(t.audit_events.c.seq.desc())
                .limit(1)
            )
            first = await reader._first(select(func.min(t.audit_events.c.seq)))
        if last is None:
            return seq == 0
        return int(last[0]) == seq and str(last[1]) == head_hash and first[0] == 1

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None if it was never migrated)."""
        async with self.read() as reader:
            try:
                row = await reader._first(text("SELECT version_num FROM alembic_version"))
            except SignerError:
                return None
        return None if row is None else str(row[0])


__all__ = ["Store", "Unit"]
