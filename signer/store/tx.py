"""The write transaction: the write lock, group-commit unit boundaries, and the audit chain buffer.

A ``WriteTx`` is one database transaction holding the write lock (SQLite ``BEGIN IMMEDIATE``;
PostgreSQL ``SELECT ... FROM audit_head WHERE id = 1 FOR UPDATE``), so audit sequence numbers are handed
out by exactly one transaction at a time across every process sharing the database. Audit events are
chained in memory as they are appended and written, with the new head, just before COMMIT, in the same
transaction as the facts they describe. It owns the statement plumbing every table uses (``_execute``,
``_write`` with its lazy savepoint, the driver's ``_raw_*`` calls and their error translation), the
epoch, and the undo of a failed group-commit unit. A ``ReadTx`` is the same plumbing on a pooled
connection with no lock. This module holds no table's queries and never begins or commits a
transaction itself: ``signer.store.commit`` does.

What a table family may use of a transaction is written down here as two protocols, ``Statements``
(reads) and ``WriteStatements`` (writes, the epoch, the driver's prepared statements); rows a family
holds until COMMIT go through ``Buffer``: registered with ``_buffer``, marked and undone at unit
boundaries, written by the flush in one executemany per table, told when COMMIT succeeded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from signer.audit import AuditEvent, AuditRecord, canonical_json, chain_hash, format_at, parse_at
from signer.clock import utcnow
from signer.errors import Conflict, DatabaseUnavailable, SignerError
from signer.store import schema as t
from signer.store.checks import nonempty
from signer.store.driver import Driver, Prepared, Step, driver_for
from signer.store.engine import is_connection_fault, translate

# len("2025-01-02T03:04:05.123456Z"): what format_at writes for years 1000-9999.
_AT_LENGTH = 27


class NeedsWriteLock(Exception):
    """A unit run ahead of the write lock (``Store.submit(..., relinkable=True)``) sent a statement or
    asked for the audit head: the batch is run again the ordinary way, under the lock. Not a
    ``SignerError``, and the writer remembers it was raised, so a unit that catches it changes nothing."""


class StoreSide(Protocol):
    """What a transaction uses of the ``Store`` that opened it (``signer.store.commit``)."""

    backend: str

    def _prepared(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Prepared: ...


_HEAD_SELECT = select(t.audit_head.c.seq, t.audit_head.c.hash, t.audit_head.c.epoch).where(
    t.audit_head.c.id == 1
)
_HEAD_SELECT_FOR_UPDATE = _HEAD_SELECT.with_for_update()
# The statements every group commit runs, on the driver (see driver.py).
_BEGIN_IMMEDIATE = text("BEGIN IMMEDIATE")
_HEAD_UPDATE = (
    update(t.audit_head)
    .where(t.audit_head.c.id == 1)
    .values(seq=bindparam("seq"), hash=bindparam("hash"), epoch=bindparam("epoch"))
)
_AUDIT_COLUMNS = ("seq", "at", "request_id", "kind", "event", "prev_hash", "hash")
_AUDIT_INSERT = t.audit_events.insert()


class Statements(Protocol):
    """What a table family's reads use of the transaction or connection it is bound to: nothing else."""

    @property
    def backend(self) -> str: ...

    async def _execute(self, statement: Any, params: Any = None) -> Any: ...

    async def _all(self, statement: Any) -> list[Any]: ...

    async def _first(self, statement: Any) -> Any: ...

    def _prepared(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Prepared: ...

    async def _raw_fetch(self, statement: Prepared, values: dict[str, Any] | None = None) -> list[Any]: ...


class Buffer(Protocol):
    """Rows a table family holds in memory until COMMIT (reservations, idempotency records, shadow
    decisions): written by one executemany per table with the audit events, undone with a failed unit.

    ``mark`` runs when a unit begins and ``undo`` when it fails (drop what was added since the mark);
    ``steps`` gives the statements that write the rows, ``flushed`` gets their results (same order),
    ``committed`` runs after COMMIT succeeded."""

    def mark(self) -> None: ...

    def undo(self) -> None: ...

    def steps(self) -> list[Step]: ...

    def flushed(self, results: list[list[Any]]) -> None: ...

    def committed(self) -> None: ...


class WriteStatements(Statements, Protocol):
    """What a table family's writes use of the write transaction it is bound to: nothing else."""

    async def _write(self, statement: Any, params: Any = None) -> Any: ...

    async def _insert_new(
        self,
        table: Any,
        values: dict[str, Any],
        conflict: Conflict,
        missing_parent: SignerError | None = None,
    ) -> None: ...

    def bump_epoch(self) -> int: ...

    def _buffer(self, buffer: Buffer) -> None: ...


class Session:
    """Statement plumbing Reader and Writer share; every statement goes through ``_execute``."""

    def __init__(self, store: StoreSide, conn: AsyncConnection) -> None:
        self._store = store
        self._conn = conn
        # Set when a statement met a connection-level fault: the connection is discarded on release.
        self._connection_fault = False

    @property
    def backend(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._store.backend

    def _unlink(self) -> None:
        """Forget the table families once the transaction is over. Each points back at this session,
        and that cycle kept the session and all it buffered (audit records, ledger and idempotency
        rows) alive until the garbage collector ran: measured at 300 requests/s, ~14 objects of
        garbage per batch and a generation-0 collection of 10-25 ms every ~1,000 batches, every request
        of the worker waiting behind it. Without the cycle reference counting frees them at once. The
        session must not be used afterwards."""
        for name, value in list(vars(self).items()):
            if getattr(value, "_tx", None) is self:
                del self.__dict__[name]

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        try:
            if params is None:
                return await self._conn.execute(statement)
            return await self._conn.execute(statement, params)
        except SignerError:
            raise
        except Exception as exc:  # noqa: BLE001 - raised again, translated (_raise_for)
            self._raise_for(exc)

    def _raise_for(self, exc: Exception) -> NoReturn:
        """Raise what a statement's exception means: the database's error translated, else ``exc``."""
        error = self._failure(exc)
        if error is exc:
            raise exc
        raise error from None

    def _failure(self, exc: Exception) -> Exception:
        """The error to raise for a statement's exception (``exc`` itself if it is not the database's)."""
        error = translate(exc)
        if error is None:
            return exc
        if is_connection_fault(exc):
            self._connection_fault = True
        self._statement_failed(error)
        return error

    def _statement_failed(self, error: SignerError) -> None:
        """Hook: a Writer remembers that its transaction may now be unusable."""

    async def _all(self, statement: Any) -> list[Any]:
        return list((await self._execute(statement)).all())

    async def _first(self, statement: Any) -> Any:
        return (await self._execute(statement)).first()


class ReadTx(Session):
    """Reads on a pooled connection; holds no write lock. On SQLite the reads of one ``read()`` block
    share one snapshot; on PostgreSQL each statement sees what was committed when it started."""

    _driver: Driver | None = None

    def _prepared(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Prepared:
        prepared: Prepared = self._store._prepared(statement, column_keys)
        return prepared

    async def _raw_fetch(self, statement: Prepared, values: dict[str, Any] | None = None) -> list[Any]:
        """The rows of a prepared statement as plain tuples, through the driver on this connection
        (SQLite: one job on its thread): for reads of many rows, without SQLAlchemy's result objects.
        Errors are translated as ``_execute`` translates them."""
        try:
            if self._driver is None:
                self._driver = driver_for(self.backend, await self._conn.run_sync(_driver_connection))
            return await self._driver.fetch(statement, values)
        except SignerError:
            raise
        except Exception as exc:  # noqa: BLE001 - raised again, translated (_raise_for)
            self._raise_for(exc)

    async def epoch(self) -> int:
        """The facts epoch: moves whenever a fact a request decision depends on changes."""
        row = await self._first(select(t.audit_head.c.epoch).where(t.audit_head.c.id == 1))
        if row is None:
            raise DatabaseUnavailable("database is not initialised")
        return int(row[0])

    async def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last committed audit record; (0, GENESIS_HASH) when there is none."""
        row = await self._first(_HEAD_SELECT)
        if row is None:
            raise DatabaseUnavailable("database is not initialised")
        return int(row[0]), str(row[1])


def _driver_connection(connection: Any) -> Any:
    """The driver connection under a SQLAlchemy connection (run_sync), without beginning anything."""
    return connection.connection.driver_connection


class WriteTx(Session):
    """One write transaction holding the write lock. Reads see its own uncommitted writes.

    ``epoch`` and ``head`` are this transaction's current values (properties, no database round trip).
    A write statement that fails leaves the writer unable to commit (PostgreSQL would refuse anyway);
    ``Conflict`` from an insert and ``NotFound`` from an update of a missing row do not count, because
    no statement failed. ``append_audit`` and ``bump_epoch`` are synchronous: they only touch memory.
    """

    def __init__(
        self, store: StoreSide, conn: AsyncConnection, driver: Driver, seq: int, head_hash: str, epoch: int
    ) -> None:
        super().__init__(store, conn)
        self._driver = driver
        self._seq = seq
        self._hash = head_hash
        self._epoch = epoch
        self._start = (seq, head_hash, epoch)
        self._pending: list[AuditRecord] = []
        self._failed: SignerError | None = None
        # Group-commit unit bookkeeping (see Store.submit).
        self._in_unit = False
        self._unit_mark: tuple[int, int, str, int] = (0, seq, head_hash, epoch)
        self._savepoint: str | None = None
        self._savepoints_used = 0
        self._finished = False
        # Table families that hold rows until COMMIT, in the order they registered (see Buffer).
        self._buffers: list[Buffer] = []
        # The instant this transaction got the write lock (for units that want the commit's time).
        self.now = utcnow()
        # Lets the write gate go on the connection's thread as soon as the flush's COMMIT succeeded
        # (SQLite, the batcher's transactions: WriteGate.held); None elsewhere.
        self._after_commit: Callable[[], None] | None = None
        # Run ahead of the write lock (signer.store.commit, Store._run_ahead): no statement may run
        # and the head may not be read; ``_ahead_missed`` says one was tried.
        self._ahead = False
        self._ahead_missed = False

    # state

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def head(self) -> tuple[int, str]:
        if self._ahead:
            self._refuse_ahead()
        return self._seq, self._hash

    async def audit_head(self) -> tuple[int, str]:
        return self.head

    def _refuse_ahead(self) -> None:
        self._ahead_missed = True
        raise NeedsWriteLock("this unit needs the write lock")

    def _statement_failed(self, error: SignerError) -> None:
        if self._failed is None:
            self._failed = error

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        self._check_live()
        if self._ahead:
            self._refuse_ahead()
        return await super()._execute(statement, params)

    async def _write(self, statement: Any, params: Any = None) -> Any:
        if self._in_unit and self._savepoint is None:
            await self._open_savepoint()
        return await self._execute(statement, params)

    # statements on the driver (see driver.py): same translation and failure bookkeeping as _execute

    def _prepared(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Prepared:
        prepared: Prepared = self._store._prepared(statement, column_keys)
        return prepared

    async def _raw_fetch(self, statement: Prepared, values: dict[str, Any] | None = None) -> list[Any]:
        self._check_live()
        if self._ahead:
            self._refuse_ahead()
        try:
            return await self._driver.fetch(statement, values)
        except Exception as exc:  # noqa: BLE001 - raised again, translated (_raise_for)
            self._raise_for(exc)

    async def _raw_plain(self, sql: str) -> None:
        self._check_live()
        if self._ahead:
            self._refuse_ahead()
        try:
            await self._driver.plain(sql)
        except Exception as exc:  # noqa: BLE001 - raised again, translated (_raise_for)
            self._raise_for(exc)

    async def _raw_run(
        self, steps: Sequence[Step], *, commit: bool = False, after_commit: Callable[[], None] | None = None
    ) -> list[list[Any]]:
        self._check_live()
        if self._ahead:
            self._refuse_ahead()
        try:
            return await self._driver.run(steps, commit=commit, after_commit=after_commit)
        except Exception as exc:  # noqa: BLE001 - raised again, translated (_raise_for)
            self._raise_for(exc)

    # epoch and audit

    def _check_live(self) -> None:
        if self._finished:
            # An event appended now would never be written: refuse loudly instead.
            raise RuntimeError("this writer's transaction has already ended")

    def bump_epoch(self) -> int:
        """Mark that a decision fact changed; the new epoch is written at commit."""
        self._check_live()
        self._epoch += 1
        return self._epoch

    def append_audit(self, event: AuditEvent) -> AuditRecord:
        """Chain ``event`` on the head and buffer it for this transaction's commit.

        ``event`` needs "kind" (non-empty string) and "at" (an aware datetime, or an ISO 8601 UTC
        string such as "2025-01-02T03:04:05.123456Z"); "request_id", if present, must be a string or
        None. A datetime "at" is written as ``format_at`` text. Raises ValueError for anything
        canonical JSON cannot hold (floats, NaN, non-string keys).
        """
        self._check_live()
        known_at: datetime | None = None
        if type(event) is AuditEvent:
            body = event.as_dict()
            known_at = event._at
        elif isinstance(event, Mapping):
            body = dict(event)
        else:
            raise ValueError("an audit event must be a mapping")
        # Read from the copy (a plain dict): the same values, without the Mapping protocol's calls.
        kind = body.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        request_id = body.get("request_id")
        nonempty(request_id, "event request_id", optional=True)
        raw_at = body.get("at")
        if isinstance(raw_at, datetime):
            written = body["at"] = format_at(raw_at)
            # parse_at(written) is this instant in UTC (format_at refused a naive one; a datetime holds
            # microseconds only): computed, not parsed back, for the usual "YYYY-MM-DDTHH:MM:SS.ffffffZ".
            at = raw_at.astimezone(UTC) if len(written) == _AT_LENGTH else parse_at(written)
        elif isinstance(raw_at, str):
            # The builder's own instant when it made this text (AuditEvent.of), else the text parsed.
            at = known_at if known_at is not None else parse_at(raw_at)
        else:
            raise ValueError("event 'at' must be an aware datetime or an ISO 8601 UTC string")
        canonical = canonical_json(body)
        # A batch run ahead of the write lock is chained by its one job, on the head it finds under the
        # lock (Store._run_ahead): a hash made here, on the head this process last knew, would be made
        # again whenever another process committed in between (nearly always, with two workers).
        digest = "" if self._ahead else chain_hash(self._hash, canonical)
        record = AuditRecord(
            seq=self._seq + 1,
            at=at,
            request_id=request_id,
            kind=kind,
            event=canonical.decode("ascii"),
            prev_hash=self._hash,
            hash=digest,
        )
        self._pending.append(record)
        self._seq = record.seq
        self._hash = digest
        return record

    async def _flush(self) -> None:
        """Write what the transaction buffered, just before COMMIT (which SQLite sends in the same trip)."""
        # One executemany per table: one round trip in all on SQLite, COMMIT included.
        steps, spans = self._buffered_steps()
        if self._pending:
            rows = [
                {
                    "seq": r.seq,
                    "at": r.at,
                    "request_id": r.request_id,
                    "kind": r.kind,
                    "event": r.event,
                    "prev_hash": r.prev_hash,
                    "hash": r.hash,
                }
                for r in self._pending
            ]
            steps.append(Step(self._prepared(_AUDIT_INSERT, _AUDIT_COLUMNS), rows=rows))
        if (self._seq, self._hash, self._epoch) != self._start:
            steps.append(
                Step(
                    self._prepared(_HEAD_UPDATE),
                    {"seq": self._seq, "hash": self._hash, "epoch": self._epoch},
                )
            )
        results = await self._raw_run(steps, commit=True, after_commit=self._after_commit)
        for buffer, start, end in spans:
            buffer.flushed(results[start:end])

    def _buffered_steps(self) -> tuple[list[Step], list[tuple[Buffer, int, int]]]:
        """The buffered rows but the audit events (their steps, and which buffer owns which of them):
        what ``_flush`` sends, and a run-ahead batch's one job (``Store._run_ahead``) carries, before
        the audit insert and the head update."""
        steps: list[Step] = []
        spans: list[tuple[Buffer, int, int]] = []
        for buffer in self._buffers:
            start = len(steps)
            steps.extend(buffer.steps())
            spans.append((buffer, start, len(steps)))
        return steps, spans

    def _ahead_committed(
        self, spans: list[tuple[Buffer, int, int]], results: list[list[Any]], head: tuple[int, str, int]
    ) -> None:
        """A run-ahead batch committed with ``head`` (seq, hash, epoch) as the new head."""
        for buffer, start, end in spans:
            buffer.flushed(results[start:end])
        self._seq, self._hash, self._epoch = head
        self._finished = True
        self._ahead = False

    def _buffer(self, buffer: Buffer) -> None:
        """Register a table family's buffer (its constructor calls this; it starts empty)."""
        self._buffers.append(buffer)

    def _unlink(self) -> None:
        # The registered buffers are table families too, each pointing back here.
        self._buffers.clear()
        super()._unlink()

    def _policy_committed(self) -> None:
        """After COMMIT: every buffer folds in what it wrote (the ledger its cache)."""
        for buffer in self._buffers:
            buffer.committed()

    # group-commit units

    def _unit_begin(self) -> None:
        self._in_unit = True
        self._savepoint = None
        self._unit_mark = (len(self._pending), self._seq, self._hash, self._epoch)
        for buffer in self._buffers:
            buffer.mark()

    async def _open_savepoint(self) -> None:
        self._savepoints_used += 1
        name = f"signer_unit_{self._savepoints_used}"
        # Plain SQL, never released: COMMIT releases them all, and skipping RELEASE saves a round trip
        # per writing unit. ROLLBACK TO names the unit's own savepoint, so older ones are untouched.
        await self._raw_plain(f"SAVEPOINT {name}")
        self._savepoint = name

    async def _unit_end(self, error: BaseException | None) -> BaseException | None:
        """Close the current unit; returns the error its caller gets (None: it succeeded)."""
        self._in_unit = False
        if error is None and self._failed is not None:
            # The unit swallowed a failed statement; its transaction state cannot be trusted.
            error = self._failed
        if error is None:
            return None
        count, seq, head_hash, epoch = self._unit_mark
        del self._pending[count:]
        for buffer in self._buffers:
            buffer.undo()
        self._seq, self._hash, self._epoch = seq, head_hash, epoch
        if self._savepoint is not None:
            name, self._savepoint = self._savepoint, None
            self._failed = None
            # If this fails the batch cannot go on: the exception aborts the whole transaction.
            await self._raw_plain(f"ROLLBACK TO SAVEPOINT {name}")
            if self._failed is not None:
                raise self._failed
        elif self._failed is not None:
            # A statement failed before the unit wrote anything: nothing to undo here, but on
            # PostgreSQL the transaction is now aborted, so the batch cannot commit.
            raise self._failed
        return error

    # helpers for table writes

    async def _insert_new(
        self,
        table: Any,
        values: dict[str, Any],
        conflict: Conflict,
        missing_parent: SignerError | None = None,
    ) -> None:
        # ON CONFLICT DO NOTHING turns a duplicate into "0 rows" instead of an error, so the
        # transaction stays usable (PostgreSQL aborts a transaction on any failed statement).
        insert: Insert
        if self._store.backend == "postgresql":
            insert = pg_dialect.insert(table).values(values).on_conflict_do_nothing()
        else:
            insert = sqlite_dialect.insert(table).values(values).on_conflict_do_nothing()
        try:
            result = await self._write(insert)
        except Conflict:
            # Only a foreign key can still fail here: the parent row does not exist.
            if missing_parent is not None:
                raise missing_parent from None
            raise
        if not result.rowcount:
            raise conflict
