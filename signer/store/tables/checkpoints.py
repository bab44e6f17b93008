"""Audit checkpoints and the Merkle tree's stored nodes.

Owns ``audit_checkpoints`` (one row per signed tree size: the note as signed, the root, the chain's
hash at that size and the tree's right edge, to resume building from) and ``audit_tree_nodes`` (the
perfect subtrees the checkpoint service keeps, 16 events and larger, ``(level, idx) -> hash``, see
``signer.audit_tree``). A checkpoint is written in one transaction with the nodes it completed;
nodes past the checkpoint it builds on (left by a restored database) are replaced then.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_

from signer.store import schema as t
from signer.store.tx import Statements, WriteStatements


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    size: int
    root: bytes
    head_hash: str
    edge: tuple[bytes, ...]
    note: str
    created_at: datetime


def _record(row: Any) -> CheckpointRecord:
    m = row._mapping
    return CheckpointRecord(
        size=int(m["size"]),
        root=bytes.fromhex(m["root"]),
        head_hash=m["head_hash"],
        edge=tuple(bytes.fromhex(h) for h in json.loads(m["edge"])),
        note=m["note"],
        created_at=m["created_at"],
    )


class CheckpointReads:
    """Reads of the checkpoints and tree nodes."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def latest(self) -> CheckpointRecord | None:
        row = await self._tx._first(
            select(t.audit_checkpoints).order_by(t.audit_checkpoints.c.size.desc()).limit(1)
        )
        return None if row is None else _record(row)

    async def at_size(self, size: int) -> CheckpointRecord | None:
        row = await self._tx._first(select(t.audit_checkpoints).where(t.audit_checkpoints.c.size == size))
        return None if row is None else _record(row)

    async def page(self, after_size: int, limit: int) -> list[CheckpointRecord]:
        """Checkpoints with ``size > after_size``, smallest first."""
        rows = await self._tx._all(
            select(t.audit_checkpoints)
            .where(t.audit_checkpoints.c.size > after_size)
            .order_by(t.audit_checkpoints.c.size)
            .limit(limit)
        )
        return [_record(r) for r in rows]

    async def nodes(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored hashes of the perfect subtrees named ``(level, idx)`` (missing ones left out)."""
        wanted = sorted(set(keys))
        found: dict[tuple[int, int], bytes] = {}
        n = t.audit_tree_nodes.c
        for start in range(0, len(wanted), 200):
            chunk = wanted[start : start + 200]
            rows = await self._tx._all(
                select(n.level, n.idx, n.hash).where(tuple_(n.level, n.idx).in_(chunk))
            )
            for row in rows:
                found[(int(row[0]), int(row[1]))] = bytes.fromhex(row[2])
        return found


class CheckpointWrites(CheckpointReads):
    """Adds a checkpoint with the nodes it completed (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def add(self, record: CheckpointRecord, base: int, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Add the checkpoint built on the one at ``base`` with the nodes it completed. Nodes reaching
        past ``base`` that are already stored (left by a database restored or rewritten under a newer
        tree) were never signed over here: they are replaced."""
        n = t.audit_tree_nodes.c
        for level in range(record.size.bit_length() + 1):
            await self._tx._write(t.audit_tree_nodes.delete().where(n.level == level, n.idx >= base >> level))
        rows = [{"level": level, "idx": idx, "hash": digest.hex()} for level, idx, digest in nodes]
        if rows:
            await self._tx._write(t.audit_tree_nodes.insert(), rows)
        await self._tx._write(
            t.audit_checkpoints.insert(),
            {
                "size": record.size,
                "root": record.root.hex(),
                "head_hash": record.head_hash,
                "edge": json.dumps([h.hex() for h in record.edge]),
                "note": record.note,
                "created_at": record.created_at,
            },
        )
