"""Idempotency keys: a principal's key -> the response stored for it, or the claim of the request
executing it.

Owns the ``idempotency_keys`` table. A claim is a row whose response is a one-field object (a real
response, a signing result, never has that field), so one primary key guards both. In a write
transaction records are buffered and inserted with the batch at COMMIT, so a signing unit sends no
write statement of its own (and needs no savepoint); whether a key is taken is still answered when the
unit asks, because every writer holds the write lock: what this transaction read plus what it buffered
is the whole truth until it commits.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update

from signer.errors import Conflict
from signer.store import schema as t
from signer.store.checks import tz_aware
from signer.store.driver import Step
from signer.store.records import IdempotencyRecord
from signer.store.tx import Statements, WriteStatements

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


_IDEMPOTENCY_COLUMNS = ("principal_id", "key", "request_digest", "response", "created_at")

_IDEMPOTENCY_INSERT = t.idempotency_keys.insert()

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


class IdempotencyReads:
    """Reads of ``idempotency_keys``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, principal_id: str, key: str) -> IdempotencyRecord | None:
        """The stored response for the key, or the claim of the request executing it."""
        c = t.idempotency_keys.c
        row = await self._tx._first(
            select(t.idempotency_keys).where(c.principal_id == principal_id, c.key == key)
        )
        if row is None:
            return None
        m = row._mapping
        return _idempotency_record(principal_id, key, m["request_digest"], m["response"], m["created_at"])


class IdempotencyWrites(IdempotencyReads):
    """Idempotency records in a write transaction: buffered, written at COMMIT."""

    __slots__ = ("_absent", "_mark", "_pending")
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        # Keys this transaction saw missing from the table (only this transaction could add them).
        self._absent: set[tuple[str, str]] = set()
        self._mark = 0
        tx._buffer(self)

    # -- the buffer (see tx.Buffer) ---------------------------------------------------------------

    def mark(self) -> None:
        self._mark = len(self._pending)

    def undo(self) -> None:
        if len(self._pending) > self._mark:
            # Dicts keep insertion order: the unit's own records are the last ones.
            for name in list(self._pending)[self._mark :]:
                del self._pending[name]

    def steps(self) -> list[Step]:
        if not self._pending:
            return []
        steps: list[Step] = []
        replaced = [row for row in self._pending.values() if row.get("replaces_claim")]
        if replaced:
            steps.append(Step(self._tx._prepared(_IDEMPOTENCY_DELETE), rows=replaced))
        steps.append(
            Step(
                self._tx._prepared(_IDEMPOTENCY_INSERT, _IDEMPOTENCY_COLUMNS),
                rows=list(self._pending.values()),
            )
        )
        return steps

    def flushed(self, results: list[list[Any]]) -> None:
        pass

    def committed(self) -> None:
        pass

    # -- records ----------------------------------------------------------------------------------

    async def get(self, principal_id: str, key: str) -> IdempotencyRecord | None:
        """The stored record (response or claim) for the key, counting records this transaction
        buffered."""
        name = (principal_id, key)
        row = self._pending.get(name)
        if row is None:
            if name in self._absent:
                return None
            rows = await self._tx._raw_fetch(
                self._tx._prepared(_IDEMPOTENCY_SELECT), {"principal_id": principal_id, "key": key}
            )
            if not rows:
                self._absent.add(name)
                return None
            digest, response, created_at = rows[0]
            row = {"request_digest": digest, "response": response, "created_at": created_at}
        return _idempotency_record(
            principal_id, key, row["request_digest"], row["response"], row["created_at"]
        )

    async def insert(self, record: IdempotencyRecord, *, claim: str | None = None) -> None:
        """Buffer the record for COMMIT; ``Conflict(idempotency_key_used)`` if the key is taken, unless
        what holds it is ``claim`` (the caller's own claim, which the record then replaces)."""
        tz_aware(record.created_at, "created_at")
        if not isinstance(record.created_at, datetime):
            raise ValueError("created_at must be a timezone-aware datetime")
        existing = await self.get(record.principal_id, record.key)
        replaces = existing is not None and claim is not None and existing.claim == claim
        if existing is not None and not replaces:
            raise Conflict("that idempotency key was used", code="idempotency_key_used")
        self._pending[(record.principal_id, record.key)] = {
            "principal_id": record.principal_id,
            "key": record.key,
            "request_digest": record.request_digest,
            "response": json.dumps(record.response, sort_keys=True, separators=(",", ":")),
            "created_at": record.created_at,
            # Read by ``steps`` only (the insert binds its five columns by name). A claim this
            # transaction buffered is simply overwritten here; one in the table is deleted first.
            "replaces_claim": replaces and (record.principal_id, record.key) not in self._pending,
        }

    async def claim(
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
        tz_aware(now, "now")
        tz_aware(stale_before, "stale_before")
        existing = await self.get(principal_id, key)
        if existing is None:
            self._pending[(principal_id, key)] = {
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
        result = await self._tx._write(
            update(t.idempotency_keys)
            .where(c.principal_id == principal_id, c.key == key, c.response == _claim_text(existing.claim))
            .values(request_digest=request_digest, response=_claim_text(claim), created_at=now)
        )
        return None if result.rowcount else await self.get(principal_id, key)

    async def release_claim(self, principal_id: str, key: str, claim: str) -> bool:
        """Drop the claim ``claim`` holds on the key (its request ended without a stored response), so
        a retry executes at once instead of waiting for the claim to go stale. False if it is gone."""
        c = t.idempotency_keys.c
        result = await self._tx._write(
            delete(t.idempotency_keys).where(
                c.principal_id == principal_id, c.key == key, c.response == _claim_text(claim)
            )
        )
        return bool(result.rowcount)
