"""Audit retention: the archives made before a prune, and the prune itself.

Owns ``audit_archives`` (the SHA-256 of each archive's bytes and the range it holds) and the deletion of
``audit_events``, ``audit_checkpoints`` and ``audit_tree_nodes`` below a prune boundary. A boundary is
always a signed checkpoint's size: its row stays, and the tree's right edge there (every node, also the
small ones the checkpoint service otherwise hashes from events) is stored, so the tree goes on growing,
proofs about later events still find their left siblings, and an export of what remains starts with
that edge for the offline verifier.

It also prunes the usage ledger (``prune_ledger``): rows of policy limits whose window started before a
time no limit window reaches back to. Rows of grant budgets (``grant:...`` keys) are sums over the
grant's whole life and are never pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_

from signer.store import schema as t
from signer.store.tx import Statements, WriteStatements


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    digest: str
    first_seq: int
    through_seq: int
    created_at: datetime
    created_by: str | None


def _archive(row: Any) -> ArchiveRecord:
    m = row._mapping
    return ArchiveRecord(
        m["digest"], int(m["first_seq"]), int(m["through_seq"]), m["created_at"], m["created_by"]
    )


class RetentionReads:
    """Reads of ``audit_archives``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def archive(self, digest: str) -> ArchiveRecord | None:
        row = await self._tx._first(select(t.audit_archives).where(t.audit_archives.c.digest == digest))
        return None if row is None else _archive(row)

    async def first_retained_seq(self) -> int | None:
        """The smallest seq still stored (None: the log is empty)."""
        row = await self._tx._first(select(t.audit_events.c.seq).order_by(t.audit_events.c.seq).limit(1))
        return None if row is None else int(row[0])

    async def last_seq_before(self, moment: datetime) -> int:
        """The largest seq of an event recorded before ``moment`` (0: none)."""
        row = await self._tx._first(
            select(t.audit_events.c.seq)
            .where(t.audit_events.c.at < moment)
            .order_by(t.audit_events.c.seq.desc())
            .limit(1)
        )
        return 0 if row is None else int(row[0])

    async def checkpoint_size_at_most(self, limit: int) -> int | None:
        """The largest signed checkpoint size ``<= limit`` (None: no checkpoint that small)."""
        c = t.audit_checkpoints.c
        row = await self._tx._first(select(c.size).where(c.size <= limit).order_by(c.size.desc()).limit(1))
        return None if row is None else int(row[0])


class RetentionWrites(RetentionReads):
    """Records archives and prunes (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def add_archive(self, record: ArchiveRecord) -> None:
        if await self.archive(record.digest) is not None:
            return  # the same bytes archived twice: one row
        await self._tx._write(
            t.audit_archives.insert(),
            {
                "digest": record.digest,
                "first_seq": record.first_seq,
                "through_seq": record.through_seq,
                "created_at": record.created_at,
                "created_by": record.created_by,
            },
        )

    async def prune_ledger(self, before: datetime) -> int:
        """Delete the ledger rows of policy limits (not grant budgets) whose window started before
        ``before``; the number deleted."""
        c = t.ledger.c
        result = await self._tx._write(
            t.ledger.delete().where(c.window_start < before, ~c.limit_key.startswith("grant:"))
        )
        return int(result.rowcount or 0)

    async def prune(self, through: int, edge: Iterable[tuple[int, int, bytes]]) -> int:
        """Delete the events with ``seq <= through``, the checkpoints before it and the tree nodes wholly
        inside it, and store the right edge at ``through``; the number of events deleted."""
        n = t.audit_tree_nodes.c
        result = await self._tx._write(t.audit_events.delete().where(t.audit_events.c.seq <= through))
        await self._tx._write(t.audit_checkpoints.delete().where(t.audit_checkpoints.c.size < through))
        for level in range(through.bit_length() + 1):
            await self._tx._write(
                t.audit_tree_nodes.delete().where(n.level == level, n.idx < through >> level)
            )
        rows = [{"level": level, "idx": idx, "hash": digest.hex()} for level, idx, digest in edge]
        if rows:
            keys = [(r["level"], r["idx"]) for r in rows]
            await self._tx._write(t.audit_tree_nodes.delete().where(tuple_(n.level, n.idx).in_(keys)))
            await self._tx._write(t.audit_tree_nodes.insert(), rows)
        return int(result.rowcount or 0)
