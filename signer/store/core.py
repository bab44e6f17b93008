"""The store: reads on plain pooled connections, writes in one locked transaction, and group commit.

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
flush with its COMMIT another.

Because every write transaction takes the same lock first, a unit's check-then-write (a spend limit, a
rate counter) is race-free across processes without further row locks, and writers cannot deadlock
each other. Units must be short and do only database work through the writer: while one runs, the
whole batch (and every other writer on the database) waits. Cancelling a caller's await before its unit
starts removes the unit; once it has started, it runs to the end and may commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert

from signer.audit import AuditEvent, AuditRecord, canonical_json, chain_hash, format_at, parse_at
from signer.clock import utcnow
from signer.errors import (
    AuditUnavailable,
    Conflict,
    DatabaseUnavailable,
    NotFound,
    SignerError,
    TransactionConflict,
)
from signer.store import schema as t
from signer.store.console_rows import ConsoleReads, ConsoleWrites
from signer.store.driver import Driver, Prepared, Step, driver_for
from signer.store.engine import ConnectionFaults, Target, as_audit_failure, is_connection_fault, translate
from signer.store.gate import WriteGate
from signer.store.policy_rows import LedgerCache, PolicyReads, PolicyWrites, grant_from_row
from signer.store.records import (
    APPROVAL_STATES,
    APPROVER_KEY_SCHEMES,
    GRANT_RESOURCE_TYPES,
    KEY_STATES,
    ROLES,
    TOKEN_KINDS,
    VOTE_DECISIONS,
    ApprovalRequestRecord,
    ApprovalVoteRecord,
    ApproverKeyRecord,
    GrantRecord,
    KeyRecord,
    OutboxRecord,
    PrincipalRecord,
    TokenRecord,
    WebhookRecord,
)

log = logging.getLogger("signer.store")

T = TypeVar("T")
Unit = Callable[["Writer"], Awaitable[T]]

_PG_MAX_SAVEPOINTS = 60
_WRITE_PROBE = "readiness_write_probe"
_CONFLICT_RETRIES = 3


def _aware(value: datetime | None, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _text(value: Any, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


def _one_of(value: str, allowed: frozenset[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of: {', '.join(sorted(allowed))}")


# -- row -> record ----------------------------------------------------------------------------------

_TOKEN_SELECT = select(
    t.tokens,
    t.principals.c.name.label("principal_name"),
    t.principals.c.role.label("principal_role"),
    t.principals.c.disabled_at.label("principal_disabled_at"),
).select_from(t.tokens.join(t.principals, t.tokens.c.principal_id == t.principals.c.id))


def _principal(row: Any) -> PrincipalRecord:
    m = row._mapping
    return PrincipalRecord(
        id=m["id"],
        name=m["name"],
        role=m["role"],
        created_at=m["created_at"],
        created_by=m["created_by"],
        disabled_at=m["disabled_at"],
    )


def _token(row: Any) -> TokenRecord:
    m = row._mapping
    return TokenRecord(
        id=m["id"],
        principal_id=m["principal_id"],
        kind=m["kind"],
        digest=bytes(m["digest"]),
        family_id=m["family_id"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        principal_name=m["principal_name"],
        principal_role=m["principal_role"],
        principal_disabled_at=m["principal_disabled_at"],
    )


def _key(row: Any) -> KeyRecord:
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        label=m["label"],
        curve=m["curve"],
        public_key=m["public_key"],
        address=m["address"],
        scope=m["scope"],
        tags=list(m["tags"]),
        state=m["state"],
        hsm_id=m["hsm_id"],
        attributes=dict(m["attributes"]),
        created_by=m["created_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


_grant = grant_from_row


def _approval_request(row: Any) -> ApprovalRequestRecord:
    m = row._mapping
    return ApprovalRequestRecord(
        id=m["id"],
        kind=m["kind"],
        resource_id=m["resource_id"],
        requester_id=m["requester_id"],
        payload=dict(m["payload"]),
        payload_digest=m["payload_digest"],
        view=dict(m["view"]),
        requirements=dict(m["requirements"]),
        state=m["state"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        updated_at=m["updated_at"],
        result=None if m["result"] is None else dict(m["result"]),
        result_fetched_at=m["result_fetched_at"],
    )


_VOTE_SELECT = (
    select(
        t.approval_votes,
        t.principals.c.name.label("principal_name"),
        t.principals.c.role.label("principal_role"),
        t.principals.c.disabled_at.label("principal_disabled_at"),
        t.tokens.c.id.label("token_found"),
        t.tokens.c.revoked_at.label("token_revoked_at"),
    )
    .select_from(
        t.approval_votes.join(t.principals, t.approval_votes.c.approver_id == t.principals.c.id).outerjoin(
            t.tokens, t.approval_votes.c.token_id == t.tokens.c.id
        )
    )
    .order_by(t.approval_votes.c.created_at, t.approval_votes.c.approver_id)
)


def _vote(row: Any) -> ApprovalVoteRecord:
    m = row._mapping
    return ApprovalVoteRecord(
        request_id=m["request_id"],
        approver_id=m["approver_id"],
        token_id=m["token_id"],
        decision=m["decision"],
        digest=m["digest"],
        created_at=m["created_at"],
        signature_scheme=m["signature_scheme"],
        signature=m["signature"],
        principal_name=m["principal_name"],
        principal_role=m["principal_role"],
        principal_disabled_at=m["principal_disabled_at"],
        token_revoked_at=m["token_revoked_at"],
        token_found=m["token_found"] is not None,
    )


def _outbox(row: Any) -> OutboxRecord:
    m = row._mapping
    return OutboxRecord(
        id=m["id"],
        group_name=m["group_name"],
        url=m["url"],
        event=dict(m["event"]),
        created_at=m["created_at"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        delivered_at=m["delivered_at"],
        last_error=m["last_error"],
    )


def _audit(row: Any) -> AuditRecord:
    m = row._mapping
    return AuditRecord(
        seq=int(m["seq"]),
        at=m["at"],
        request_id=m["request_id"],
        kind=m["kind"],
        event=m["event"],
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )


# -- readers and writers ----------------------------------------------------------------------------


class _Queries(PolicyReads, ConsoleReads):
    """The read queries Reader and Writer share; every statement goes through ``_execute``."""

    def __init__(self, store: Store, conn: AsyncConnection) -> None:
        self._store = store
        self._conn = conn
        # Set when a statement met a connection-level fault: the connection is discarded on release.
        self._connection_fault = False

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        try:
            if params is None:
                return await self._conn.execute(statement)
            return await self._conn.execute(statement, params)
        except SignerError:
            raise
        except Exception as exc:
            error = self._failure(exc)
            if error is exc:
                raise
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

    # tokens and principals

    async def get_token(self, token_id: str) -> TokenRecord | None:
        row = await self._first(_TOKEN_SELECT.where(t.tokens.c.id == token_id))
        return None if row is None else _token(row)

    async def get_principal(self, principal_id: str) -> PrincipalRecord | None:
        row = await self._first(select(t.principals).where(t.principals.c.id == principal_id))
        return None if row is None else _principal(row)

    async def get_principal_by_name(self, name: str) -> PrincipalRecord | None:
        row = await self._first(select(t.principals).where(t.principals.c.name == name))
        return None if row is None else _principal(row)

    async def list_principals(self) -> list[PrincipalRecord]:
        rows = await self._all(select(t.principals).order_by(t.principals.c.name))
        return [_principal(r) for r in rows]

    # keys

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._first(select(t.keys).where(t.keys.c.id == key_id))
        return None if row is None else _key(row)

    async def get_key_by_hsm_id(self, hsm_id: str) -> KeyRecord | None:
        row = await self._first(select(t.keys).where(t.keys.c.hsm_id == hsm_id))
        return None if row is None else _key(row)

    async def list_keys(
        self, *, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[KeyRecord]:
        """Keys ordered by id; pass the last id seen as ``after`` for the next page."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        query: Select[Any] = select(t.keys)
        if state is not None:
            query = query.where(t.keys.c.state == state)
        if after is not None:
            query = query.where(t.keys.c.id > after)
        rows = await self._all(query.order_by(t.keys.c.id).limit(limit))
        return [_key(r) for r in rows]

    # grants

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        row = await self._first(select(t.grants).where(t.grants.c.id == grant_id))
        return None if row is None else _grant(row)

    async def active_grants(
        self, principal_id: str, resource_type: str, resource_id: str, now: datetime
    ) -> list[GrantRecord]:
        """Grants of ``principal_id`` on the resource that are neither revoked nor expired at ``now``."""
        _aware(now, "now")
        g = t.grants.c
        rows = await self._all(
            select(t.grants)
            .where(
                g.principal_id == principal_id,
                g.resource_type == resource_type,
                g.resource_id == resource_id,
                g.revoked_at.is_(None),
                or_(g.expires_at.is_(None), g.expires_at > now),
            )
            .order_by(g.created_at, g.id)
        )
        return [_grant(r) for r in rows]

    async def list_grants(self, principal_id: str | None = None) -> list[GrantRecord]:
        """Every grant (revoked and expired included), optionally of one principal."""
        query: Select[Any] = select(t.grants)
        if principal_id is not None:
            query = query.where(t.grants.c.principal_id == principal_id)
        rows = await self._all(query.order_by(t.grants.c.created_at, t.grants.c.id))
        return [_grant(r) for r in rows]

    # approvals

    async def get_approval_request(self, request_id: str) -> ApprovalRequestRecord | None:
        row = await self._first(select(t.approval_requests).where(t.approval_requests.c.id == request_id))
        return None if row is None else _approval_request(row)

    async def list_approval_requests(
        self,
        *,
        states: Sequence[str] | None = None,
        requester_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[ApprovalRequestRecord]:
        """Requests ordered by id (ids sort by creation); ``after`` is the last id of the previous page."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        c = t.approval_requests.c
        query: Select[Any] = select(t.approval_requests)
        if states is not None:
            query = query.where(c.state.in_(list(states)))
        if requester_id is not None:
            query = query.where(c.requester_id == requester_id)
        if after is not None:
            query = query.where(c.id > after)
        rows = await self._all(query.order_by(c.id).limit(limit))
        return [_approval_request(r) for r in rows]

    async def approval_votes(self, request_id: str) -> list[ApprovalVoteRecord]:
        """Every vote on a request with the voter's principal and voting token as they are now."""
        rows = await self._all(_VOTE_SELECT.where(t.approval_votes.c.request_id == request_id))
        return [_vote(r) for r in rows]

    async def get_approver_key(self, principal_id: str) -> ApproverKeyRecord | None:
        row = await self._first(select(t.approver_keys).where(t.approver_keys.c.principal_id == principal_id))
        if row is None:
            return None
        m = row._mapping
        return ApproverKeyRecord(
            principal_id=m["principal_id"],
            scheme=m["scheme"],
            public_key=m["public_key"],
            created_at=m["created_at"],
        )

    async def webhooks_for(self, groups: Sequence[str]) -> dict[str, str]:
        """The webhook URL of each of ``groups`` that has one."""
        c = t.approval_webhooks.c
        rows = await self._all(select(c.group_name, c.url).where(c.group_name.in_(list(groups))))
        return {r[0]: r[1] for r in rows}

    async def get_webhook(self, group: str) -> WebhookRecord | None:
        row = await self._first(select(t.approval_webhooks).where(t.approval_webhooks.c.group_name == group))
        if row is None:
            return None
        m = row._mapping
        return WebhookRecord(
            group_name=m["group_name"],
            url=m["url"],
            created_at=m["created_at"],
            created_by=m["created_by"],
            secret_salt=m["secret_salt"],
            previous_secret_salt=m["previous_secret_salt"],
            previous_secret_until=m["previous_secret_until"],
        )

    async def get_outbox(self, outbox_id: str) -> OutboxRecord | None:
        row = await self._first(select(t.webhook_outbox).where(t.webhook_outbox.c.id == outbox_id))
        return None if row is None else _outbox(row)

    async def due_outbox(self, now: datetime, limit: int = 20) -> list[OutboxRecord]:
        """Undelivered calls whose next attempt is due at ``now``, oldest first."""
        c = t.webhook_outbox.c
        rows = await self._all(
            select(t.webhook_outbox)
            .where(c.delivered_at.is_(None), c.next_attempt_at <= now)
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
        )
        return [_outbox(r) for r in rows]

    # audit and meta

    async def audit_events(self, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Committed audit records with ``seq > after_seq``, in order."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        rows = await self._all(
            select(t.audit_events)
            .where(t.audit_events.c.seq > after_seq)
            .order_by(t.audit_events.c.seq)
            .limit(limit)
        )
        return [_audit(r) for r in rows]

    async def get_meta(self, name: str) -> str | None:
        row = await self._first(select(t.meta.c.value).where(t.meta.c.name == name))
        return None if row is None else str(row[0])


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


class Reader(_Queries):
    """Reads on a pooled connection; holds no write lock. On SQLite the reads of one ``read()`` block
    share one snapshot; on PostgreSQL each statement sees what was committed when it started."""

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


class Writer(PolicyWrites, ConsoleWrites, _Queries):
    """One write transaction holding the write lock. Reads see its own uncommitted writes.

    ``epoch`` and ``head`` are this transaction's current values (properties, no database round trip).
    A write statement that fails leaves the writer unable to commit (PostgreSQL would refuse anyway);
    ``Conflict`` from an insert and ``NotFound`` from an update of a missing row do not count, because
    no statement failed. ``append_audit`` and ``bump_epoch`` are synchronous: they only touch memory.
    """

    def __init__(
        self, store: Store, conn: AsyncConnection, driver: Driver, seq: int, head_hash: str, epoch: int
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
        self._ledger_init()
        # The instant this transaction got the write lock (for units that want the commit's time).
        self.now = utcnow()

    # state

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def head(self) -> tuple[int, str]:
        return self._seq, self._hash

    async def audit_head(self) -> tuple[int, str]:
        return self.head

    def _statement_failed(self, error: SignerError) -> None:
        if self._failed is None:
            self._failed = error

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        self._check_live()
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
        try:
            return await self._driver.fetch(statement, values)
        except Exception as exc:
            error = self._failure(exc)
            if error is exc:
                raise
            raise error from None

    async def _raw_plain(self, sql: str) -> None:
        self._check_live()
        try:
            await self._driver.plain(sql)
        except Exception as exc:
            error = self._failure(exc)
            if error is exc:
                raise
            raise error from None

    async def _raw_run(self, steps: Sequence[Step], *, commit: bool = False) -> list[list[Any]]:
        self._check_live()
        try:
            return await self._driver.run(steps, commit=commit)
        except Exception as exc:
            error = self._failure(exc)
            if error is exc:
                raise
            raise error from None

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
        if not isinstance(event, Mapping):
            raise ValueError("an audit event must be a mapping")
        kind = event.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        request_id = event.get("request_id")
        _text(request_id, "event request_id", optional=True)
        raw_at = event.get("at")
        body = dict(event)
        if isinstance(raw_at, datetime):
            body["at"] = format_at(raw_at)
            at = parse_at(body["at"])
        elif isinstance(raw_at, str):
            at = parse_at(raw_at)
        else:
            raise ValueError("event 'at' must be an aware datetime or an ISO 8601 UTC string")
        canonical = canonical_json(body)
        digest = chain_hash(self._hash, canonical)
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
        steps = self._policy_steps()
        policy_steps = len(steps)
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
        results = await self._raw_run(steps, commit=True)
        self._policy_flushed(results[:policy_steps])

    # group-commit units

    def _unit_begin(self) -> None:
        self._in_unit = True
        self._savepoint = None
        self._unit_mark = (len(self._pending), self._seq, self._hash, self._epoch)
        self._ledger_mark()

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
        self._ledger_undo()
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

    # principals

    async def insert_principal(self, principal: PrincipalRecord) -> PrincipalRecord:
        """Insert ``principal``; ``Conflict(principal_exists)`` if its id or name is taken."""
        _text(principal.id, "principal id")
        _text(principal.name, "principal name")
        _one_of(principal.role, ROLES, "role")
        _aware(principal.created_at, "created_at")
        _aware(principal.disabled_at, "disabled_at", optional=True)
        await self._insert_new(
            t.principals,
            {
                "id": principal.id,
                "name": principal.name,
                "role": principal.role,
                "created_at": principal.created_at,
                "created_by": principal.created_by,
                "disabled_at": principal.disabled_at,
            },
            Conflict("a principal with that id or name exists", code="principal_exists"),
        )
        return principal

    async def set_principal_disabled(self, principal_id: str, disabled_at: datetime | None) -> None:
        """Disable (an aware datetime) or re-enable (None) a principal; bumps the epoch on change."""
        _aware(disabled_at, "disabled_at", optional=True)
        p = t.principals.c
        changed = (p.disabled_at.is_(None)) if disabled_at is not None else (p.disabled_at.is_not(None))
        result = await self._write(
            update(t.principals).where(p.id == principal_id, changed).values(disabled_at=disabled_at)
        )
        if result.rowcount:
            self.bump_epoch()
            return
        if await self.get_principal(principal_id) is None:
            raise NotFound("no such principal", code="principal_not_found")

    # tokens

    async def insert_token(self, token: TokenRecord) -> None:
        """Insert a token (its ``principal_*`` fields are ignored); ``Conflict(token_exists)`` on a
        taken id, ``NotFound(principal_not_found)`` for an unknown principal."""
        _text(token.id, "token id")
        _text(token.principal_id, "principal id")
        _text(token.family_id, "family id")
        _one_of(token.kind, TOKEN_KINDS, "token kind")
        if not isinstance(token.digest, bytes | bytearray) or len(token.digest) != 32:
            raise ValueError("token digest must be 32 bytes")
        _aware(token.created_at, "created_at")
        _aware(token.expires_at, "expires_at", optional=True)
        _aware(token.revoked_at, "revoked_at", optional=True)
        await self._insert_new(
            t.tokens,
            {
                "id": token.id,
                "principal_id": token.principal_id,
                "kind": token.kind,
                "digest": bytes(token.digest),
                "family_id": token.family_id,
                "created_at": token.created_at,
                "expires_at": token.expires_at,
                "revoked_at": token.revoked_at,
            },
            Conflict("a token with that id exists", code="token_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )

    async def revoke_token(self, token_id: str, now: datetime) -> bool:
        """Revoke one token; True if it was live, False if already revoked; NotFound if unknown."""
        _aware(now, "now")
        c = t.tokens.c
        result = await self._write(
            update(t.tokens).where(c.id == token_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        if result.rowcount:
            self.bump_epoch()
            return True
        row = await self._first(select(c.id).where(c.id == token_id))
        if row is None:
            raise NotFound("no such token", code="token_not_found")
        return False

    async def revoke_token_family(self, family_id: str, now: datetime) -> int:
        """Revoke every live token of a refresh lineage; returns how many were revoked."""
        _aware(now, "now")
        c = t.tokens.c
        result = await self._write(
            update(t.tokens).where(c.family_id == family_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        count = int(result.rowcount or 0)
        if count:
            self.bump_epoch()
        return count

    # keys

    async def insert_key(self, key: KeyRecord) -> None:
        """Register a key; ``Conflict(key_exists)`` if its id or hsm_id is taken."""
        for name in ("id", "label", "curve", "public_key", "scope", "hsm_id"):
            _text(getattr(key, name), f"key {name}")
        _one_of(key.state, KEY_STATES, "key state")
        _aware(key.created_at, "created_at")
        _aware(key.updated_at, "updated_at")
        await self._insert_new(
            t.keys,
            {
                "id": key.id,
                "label": key.label,
                "curve": key.curve,
                "public_key": key.public_key,
                "address": key.address,
                "scope": key.scope,
                "tags": list(key.tags),
                "state": key.state,
                "hsm_id": key.hsm_id,
                "attributes": dict(key.attributes),
                "created_by": key.created_by,
                "created_at": key.created_at,
                "updated_at": key.updated_at,
            },
            Conflict("a key with that id or token object exists", code="key_exists"),
        )

    async def set_key_state(self, key_id: str, state: str, now: datetime) -> None:
        """Change a key's state; bumps the epoch on change; NotFound(key_not_found) if unknown."""
        _one_of(state, KEY_STATES, "key state")
        _aware(now, "now")
        c = t.keys.c
        result = await self._write(
            update(t.keys).where(c.id == key_id, c.state != state).values(state=state, updated_at=now)
        )
        if result.rowcount:
            self.bump_epoch()
            return
        if await self.get_key(key_id) is None:
            raise NotFound("no such key", code="key_not_found")

    # grants

    async def insert_grant(self, grant: GrantRecord) -> None:
        """Insert a grant and bump the epoch.

        ``Conflict(grant_exists)`` on a taken id, ``NotFound(principal_not_found)`` for an unknown principal.
        """
        _text(grant.id, "grant id")
        if (grant.principal_id is None) == (grant.group_name is None):
            raise ValueError("a grant names exactly one principal or group")
        _text(grant.principal_id, "principal id", optional=True)
        _text(grant.group_name, "group name", optional=True)
        _text(grant.resource_id, "resource id")
        if grant.max_uses is not None and (isinstance(grant.max_uses, bool) or grant.max_uses < 0):
            raise ValueError("max_uses must be a non-negative integer")
        _one_of(grant.resource_type, GRANT_RESOURCE_TYPES, "resource type")
        if isinstance(grant.operations, str) or not all(isinstance(op, str) for op in grant.operations):
            raise ValueError("operations must be a list of strings")
        _aware(grant.created_at, "created_at")
        _aware(grant.expires_at, "expires_at", optional=True)
        _aware(grant.revoked_at, "revoked_at", optional=True)
        await self._insert_new(
            t.grants,
            {
                "id": grant.id,
                "principal_id": grant.principal_id,
                "resource_type": grant.resource_type,
                "resource_id": grant.resource_id,
                "operations": list(grant.operations),
                "expires_at": grant.expires_at,
                "created_by": grant.created_by,
                "created_at": grant.created_at,
                "revoked_at": grant.revoked_at,
                "group_name": grant.group_name,
                "max_uses": grant.max_uses,
                "value_budgets": {k: str(v) for k, v in grant.value_budgets.items()},
            },
            Conflict("a grant with that id exists", code="grant_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )
        self.bump_epoch()

    async def revoke_grant(self, grant_id: str, now: datetime) -> bool:
        """Revoke a grant; True if it was live, False if already revoked; NotFound if unknown."""
        _aware(now, "now")
        c = t.grants.c
        result = await self._write(
            update(t.grants).where(c.id == grant_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        if result.rowcount:
            self.bump_epoch()
            return True
        if await self.get_grant(grant_id) is None:
            raise NotFound("no such grant", code="grant_not_found")
        return False

    # approvals

    async def insert_approval_request(self, record: ApprovalRequestRecord) -> None:
        """Store a new approval request; ``Conflict(approval_exists)`` on a taken id."""
        for name in ("id", "kind", "resource_id", "requester_id", "payload_digest"):
            _text(getattr(record, name), f"approval {name}")
        _one_of(record.state, APPROVAL_STATES, "approval state")
        for name in ("created_at", "expires_at", "updated_at"):
            _aware(getattr(record, name), name)
        await self._insert_new(
            t.approval_requests,
            {
                "id": record.id,
                "kind": record.kind,
                "resource_id": record.resource_id,
                "requester_id": record.requester_id,
                "payload": dict(record.payload),
                "payload_digest": record.payload_digest,
                "view": dict(record.view),
                "requirements": dict(record.requirements),
                "state": record.state,
                "created_at": record.created_at,
                "expires_at": record.expires_at,
                "updated_at": record.updated_at,
                "result": record.result,
                "result_fetched_at": record.result_fetched_at,
            },
            Conflict("an approval request with that id exists", code="approval_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )

    async def lock_approval_request(self, request_id: str) -> ApprovalRequestRecord | None:
        """Read a request for a decision about it: PostgreSQL locks the row (``FOR UPDATE``) until this
        transaction ends. SQLite needs no row lock: this writer already holds the database's write lock
        (``BEGIN IMMEDIATE``), which serialises every writer, in every process."""
        query = select(t.approval_requests).where(t.approval_requests.c.id == request_id)
        if self._store.backend == "postgresql":
            query = query.with_for_update()
        row = await self._first(query)
        return None if row is None else _approval_request(row)

    async def insert_approval_vote(self, vote: ApprovalVoteRecord) -> None:
        """Record a vote (its ``principal_*``/``token_*`` fields are ignored); one per identity and
        request: a second one is ``Conflict(approval_already_voted)``. A vote whose digest is not the
        request's stored digest, byte for byte, is ``Conflict(approval_mismatch)`` and is not recorded:
        the tally counts what is stored, so nothing stored may name another spelling or payload."""
        for name in ("request_id", "approver_id", "token_id", "digest"):
            _text(getattr(vote, name), f"vote {name}")
        _one_of(vote.decision, VOTE_DECISIONS, "vote decision")
        _aware(vote.created_at, "created_at")
        c = t.approval_requests.c
        stored = await self._first(select(c.payload_digest).where(c.id == vote.request_id))
        if stored is None:
            raise NotFound("no such approval request", code="approval_not_found")
        if stored[0] != vote.digest:
            raise Conflict(
                "the vote names another payload than the one stored under this id", code="approval_mismatch"
            )
        await self._insert_new(
            t.approval_votes,
            {
                "request_id": vote.request_id,
                "approver_id": vote.approver_id,
                "token_id": vote.token_id,
                "decision": vote.decision,
                "digest": vote.digest,
                "signature_scheme": vote.signature_scheme,
                "signature": vote.signature,
                "created_at": vote.created_at,
            },
            Conflict("this identity has already voted on the request", code="approval_already_voted"),
            missing_parent=NotFound("no such approval request", code="approval_not_found"),
        )

    async def transition_approval(
        self,
        request_id: str,
        from_states: Sequence[str],
        state: str,
        now: datetime,
        *,
        result: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move a request from one of ``from_states`` to ``state`` (compare-and-set); True if it moved.
        ``result`` is stored with the move when given."""
        _one_of(state, APPROVAL_STATES, "approval state")
        for old in from_states:
            _one_of(old, APPROVAL_STATES, "approval state")
        _aware(now, "now")
        c = t.approval_requests.c
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if result is not None:
            values["result"] = dict(result)
        moved = await self._write(
            update(t.approval_requests)
            .where(c.id == request_id, c.state.in_(list(from_states)))
            .values(**values)
        )
        return bool(moved.rowcount)

    async def mark_approval_result_fetched(self, request_id: str, now: datetime) -> bool:
        """Mark a signed request's result as handed out; True only for the first caller."""
        _aware(now, "now")
        c = t.approval_requests.c
        moved = await self._write(
            update(t.approval_requests)
            .where(c.id == request_id, c.state == "signed", c.result_fetched_at.is_(None))
            .values(result_fetched_at=now)
        )
        return bool(moved.rowcount)

    async def set_approver_key(self, record: ApproverKeyRecord) -> None:
        """Register (or replace) a principal's approval-signing public key."""
        _text(record.principal_id, "principal id")
        _text(record.public_key, "public key")
        _one_of(record.scheme, APPROVER_KEY_SCHEMES, "approver key scheme")
        _aware(record.created_at, "created_at")
        c = t.approver_keys.c
        replaced = await self._write(
            update(t.approver_keys)
            .where(c.principal_id == record.principal_id)
            .values(scheme=record.scheme, public_key=record.public_key, created_at=record.created_at)
        )
        if replaced.rowcount:
            return
        await self._insert_new(
            t.approver_keys,
            {
                "principal_id": record.principal_id,
                "scheme": record.scheme,
                "public_key": record.public_key,
                "created_at": record.created_at,
            },
            Conflict("an approver key exists", code="approver_key_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )

    # webhooks

    async def set_webhook(
        self, group: str, url: str, now: datetime, by: str | None, *, secret_salt: str
    ) -> None:
        """Point the group's webhook at ``url``; a new row takes ``secret_salt``, an existing one keeps
        its secrets (only a rotation changes them)."""
        _text(group, "group")
        _text(url, "url")
        _text(secret_salt, "secret_salt")
        _aware(now, "now")
        c = t.approval_webhooks.c
        replaced = await self._write(
            update(t.approval_webhooks)
            .where(c.group_name == group)
            .values(url=url, created_at=now, created_by=by)
        )
        if not replaced.rowcount:
            await self._insert_new(
                t.approval_webhooks,
                {
                    "group_name": group,
                    "url": url,
                    "created_at": now,
                    "created_by": by,
                    "secret_salt": secret_salt,
                    "previous_secret_salt": None,
                    "previous_secret_until": None,
                },
                Conflict("a webhook exists for that group", code="webhook_exists"),
            )

    async def rotate_webhook_secret(
        self, group: str, new_salt: str, previous_until: datetime
    ) -> WebhookRecord | None:
        """The current secret becomes the previous one (until ``previous_until``; an older previous one
        is dropped) and ``new_salt`` the current one. None when the group has no webhook."""
        _text(new_salt, "new_salt")
        _aware(previous_until, "previous_until")
        current = await self.get_webhook(group)
        if current is None:
            return None
        c = t.approval_webhooks.c
        values = {
            "secret_salt": new_salt,
            "previous_secret_salt": current.secret_salt,
            "previous_secret_until": previous_until,
        }
        result = await self._write(
            update(t.approval_webhooks)
            .where(c.group_name == group, c.secret_salt.is_not_distinct_from(current.secret_salt))
            .values(**values)
        )
        if not result.rowcount:
            raise Conflict("the webhook changed meanwhile: try again", code="webhook_changed")
        return WebhookRecord(
            group_name=group,
            url=current.url,
            created_at=current.created_at,
            created_by=current.created_by,
            secret_salt=new_salt,
            previous_secret_salt=current.secret_salt,
            previous_secret_until=previous_until,
        )

    async def delete_webhook(self, group: str) -> bool:
        result = await self._write(
            delete(t.approval_webhooks).where(t.approval_webhooks.c.group_name == group)
        )
        return bool(result.rowcount)

    async def enqueue_webhook(self, record: OutboxRecord) -> None:
        _text(record.id, "outbox id")
        _aware(record.created_at, "created_at")
        _aware(record.next_attempt_at, "next_attempt_at")
        await self._insert_new(
            t.webhook_outbox,
            {
                "id": record.id,
                "group_name": record.group_name,
                "url": record.url,
                "event": dict(record.event),
                "created_at": record.created_at,
                "attempts": record.attempts,
                "next_attempt_at": record.next_attempt_at,
                "delivered_at": None,
                "last_error": None,
            },
            Conflict("an outbox entry with that id exists", code="outbox_exists"),
        )

    async def claim_outbox(self, outbox_id: str, due: datetime, lease_until: datetime) -> bool:
        """Take a due call for delivery (compare-and-set on its next attempt): one claimer wins, in
        every process; a claimer that dies lets the lease run out and the call becomes due again."""
        c = t.webhook_outbox.c
        result = await self._write(
            update(t.webhook_outbox)
            .where(c.id == outbox_id, c.delivered_at.is_(None), c.next_attempt_at <= due)
            .values(next_attempt_at=lease_until)
        )
        return bool(result.rowcount)

    async def finish_outbox(
        self,
        outbox_id: str,
        *,
        delivered_at: datetime | None,
        attempts: int,
        next_attempt_at: datetime,
        error: str | None,
    ) -> None:
        c = t.webhook_outbox.c
        await self._write(
            update(t.webhook_outbox)
            .where(c.id == outbox_id)
            .values(
                delivered_at=delivered_at,
                attempts=attempts,
                next_attempt_at=next_attempt_at,
                last_error=error,
            )
        )

    # meta

    async def set_meta(self, name: str, value: str, *, replace: bool = False) -> None:
        """Store a setting; without ``replace`` an existing name is ``Conflict(meta_exists)``."""
        _text(name, "meta name")
        if not isinstance(value, str):
            raise ValueError("meta value must be a string")
        if replace:
            result = await self._write(update(t.meta).where(t.meta.c.name == name).values(value=value))
            if result.rowcount:
                return
        await self._insert_new(
            t.meta, {"name": name, "value": value}, Conflict("setting exists", code="meta_exists")
        )

    # helpers

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
        # Committed ledger rows per limit key, kept exact under the write lock (see policy_rows).
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
        self._wake = asyncio.Event()
        self._batcher: asyncio.Task[None] | None = None
        self._batcher_rested = False
        self._closing = False
        self._closed = False
        # Optional, set by the composition root: called after every group commit with (seconds, units).
        self.batch_observer: Callable[[float, int], None] | None = None

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
        self._closed = True
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
        async with gate or contextlib.nullcontext():
            async with self._write_transaction() as writer:
                yield writer

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

    async def submit(self, unit: Unit[T], *, rerunnable: bool = False) -> T:
        """Run ``unit(writer)`` in the next group-commit batch; returns its result after COMMIT.

        The unit's own exception comes back to this caller only (its writes and audit events are
        undone, the rest of the batch commits). If the batch cannot begin or commit, every caller in
        it gets ``DatabaseUnavailable`` or ``AuditUnavailable`` and nothing of the batch is kept.
        """
        self._check_open()
        if self._batcher is not None and asyncio.current_task() is self._batcher:
            # The batcher would wait for itself: a unit must use its writer, not submit again.
            raise RuntimeError("Store.submit() called from inside a unit")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, future))
        if rerunnable:
            self._rerunnable.add(id(future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.get_running_loop().create_task(
                self._batch_loop(), name="signer-store-batcher"
            )
        self._wake.set()
        try:
            return await future
        finally:
            self._rerunnable.discard(id(future))

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
        except BaseException:
            error = DatabaseUnavailable("the store is closed")
            while self._queue:
                _, future = self._queue.popleft()
                if not future.done():
                    future.set_exception(error)
            raise

    async def _run_batch(
        self, batch: Sequence[tuple[Unit[Any], asyncio.Future[Any]]], attempt: int = 0
    ) -> None:
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        leftover: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        try:
            async with self._transaction(gated=True) as writer:
                for index, (unit, future) in enumerate(batch):
                    if writer._savepoints_used >= self._max_savepoints:
                        leftover = list(batch[index:])
                        break
                    if future.done():
                        continue
                    writer._unit_begin()
                    try:
                        value = await unit(writer)
                    except Exception as exc:  # noqa: BLE001 - a unit's own error goes back to its caller
                        failure = await writer._unit_end(exc)
                        outcomes.append((future, False, failure))
                    else:
                        failure = await writer._unit_end(None)
                        if failure is None:
                            outcomes.append((future, True, value))
                        else:
                            outcomes.append((future, False, failure))
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
            error = DatabaseUnavailable("the store is closed")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            raise
        for future, ok, value in outcomes:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if leftover:
            self._queue.extendleft(reversed(leftover))

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
            await writer.set_meta(_WRITE_PROBE, format_at(writer.now), replace=True)

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


__all__ = ["Reader", "Store", "Writer"]
