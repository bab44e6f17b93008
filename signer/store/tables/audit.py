"""Reading the committed audit log.

Owns the reads of ``audit_events``. Appending is the write transaction's (``WriteTx.append_audit``),
because events are chained under the write lock and written with the head at COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, select

from signer.audit import AuditRecord
from signer.store import schema as t
from signer.store.tx import Statements

# The chain alone, a page at a time: the checkpoint builder reads the whole log through this (plain
# tuples through the driver, no result objects: ~5 us a row less on SQLite).
_CHAIN_SLICE = (
    select(t.audit_events.c.seq, t.audit_events.c.event, t.audit_events.c.prev_hash, t.audit_events.c.hash)
    .where(t.audit_events.c.seq > bindparam("after", type_=t.audit_events.c.seq.type))
    .order_by(t.audit_events.c.seq)
    .limit(bindparam("limit", type_=Integer))
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


class AuditReads:
    """Reads of ``audit_events``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def events(self, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Committed audit records with ``seq > after_seq``, in order."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        rows = await self._tx._all(
            select(t.audit_events)
            .where(t.audit_events.c.seq > after_seq)
            .order_by(t.audit_events.c.seq)
            .limit(limit)
        )
        return [_audit(r) for r in rows]

    async def filtered(
        self,
        *,
        after_seq: int,
        until_seq: int,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Sequence[str] = (),
    ) -> list[AuditRecord]:
        """Records with ``after_seq < seq <= until_seq``, optionally within [since, until) and of the
        given kinds, in order; at most ``limit`` (the caller pages on the last seq)."""
        c = t.audit_events.c
        query = select(t.audit_events).where(c.seq > after_seq, c.seq <= until_seq)
        if since is not None:
            query = query.where(c.at >= since)
        if until is not None:
            query = query.where(c.at < until)
        if kinds:
            query = query.where(c.kind.in_(list(kinds)))
        rows = await self._tx._all(query.order_by(c.seq).limit(limit))
        return [_audit(r) for r in rows]

    async def chain_slice(self, after_seq: int, limit: int) -> list[tuple[int, str, str, str]]:
        """(seq, event, prev_hash, hash) with ``seq > after_seq``, in order: the chain alone, without
        the row's other columns (the checkpoint builder reads the whole log through this)."""
        # Plain tuples of an int and three texts as the driver gives them (no result conversion).
        values = {"after": after_seq, "limit": limit}
        rows: list[tuple[int, str, str, str]] = await self._tx._raw_fetch(
            self._tx._prepared(_CHAIN_SLICE), values
        )
        return rows
