"""Anomaly baselines: ``anomaly_baselines``, what each principal did, counted per slot of time.

One row per principal, kind (``burst``: requests per burst window; ``hour``: requests per UTC hour;
``denial``: refusals per second), slot width in seconds and slot start (seconds since 1970). Every
worker adds its counts in batches (an upsert that sums), reads one principal's rows when it first sees
it and everyone's recent rows periodically (``signer.services.anomalies`` keeps the sums in memory and
judges from them); old rows are pruned by age. This module decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from signer.store import schema as t
from signer.store.tx import Statements, WriteStatements

KINDS = ("burst", "hour", "denial")


@dataclass(frozen=True, slots=True)
class BaselineCount:
    """``count`` events of ``kind`` by ``principal_id`` in the slot [start, start + width)."""

    principal_id: str
    kind: str
    width: int
    start: int
    count: int


def _since(since: Mapping[str, tuple[int, int]]) -> ColumnElement[bool]:
    """Rows of each kind in ``since`` (kind -> (width, first start)) from that start on."""
    c = t.anomaly_baselines.c
    for kind in since:
        if kind not in KINDS:
            raise ValueError("unknown baseline kind")
    return or_(
        *(
            and_(c.kind == kind, c.width == width, c.start >= start)
            for kind, (width, start) in sorted(since.items())
        )
    )


class AnomalyBaselineReads:
    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def of(self, principal_id: str, since: Mapping[str, tuple[int, int]]) -> list[BaselineCount]:
        """One principal's rows of each kind in ``since`` (kind -> (width, first slot start))."""
        if not since:
            return []
        c = t.anomaly_baselines.c
        rows = await self._tx._all(
            select(c.kind, c.width, c.start, c["count"]).where(c.principal_id == principal_id, _since(since))
        )
        return [BaselineCount(principal_id, r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def recent(self, since: Mapping[str, tuple[int, int]]) -> list[BaselineCount]:
        """Every principal's rows of each kind in ``since`` (kind -> (width, first slot start))."""
        if not since:
            return []
        c = t.anomaly_baselines.c
        rows = await self._tx._all(
            select(c.principal_id, c.kind, c.width, c.start, c["count"]).where(_since(since))
        )
        return [BaselineCount(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]


class AnomalyBaselineWrites(AnomalyBaselineReads):
    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def add(self, counts: Iterable[BaselineCount]) -> None:
        """Add each count to its slot's row (created at zero when absent), in one statement."""
        values = []
        for n in counts:
            if n.kind not in KINDS or n.width < 1 or n.count < 0:
                raise ValueError("not a baseline count")
            values.append(
                {
                    "principal_id": n.principal_id,
                    "kind": n.kind,
                    "width": n.width,
                    "start": n.start,
                    "count": n.count,
                }
            )
        if not values:
            return
        dialect = pg_dialect if self._tx.backend == "postgresql" else sqlite_dialect
        insert = dialect.insert(t.anomaly_baselines).values(values)
        await self._tx._write(
            insert.on_conflict_do_update(
                index_elements=["principal_id", "kind", "width", "start"],
                # ``["count"]``: the column, not the collection's count() method.
                set_={"count": t.anomaly_baselines.c["count"] + insert.excluded["count"]},
            )
        )

    async def prune(self, before: Mapping[str, int]) -> int:
        """Delete the rows of each kind in ``before`` whose slot starts before its start (any width);
        how many went."""
        c = t.anomaly_baselines.c
        gone = 0
        for kind, start in sorted(before.items()):
            if kind not in KINDS:
                raise ValueError("unknown baseline kind")
            result = await self._tx._write(delete(t.anomaly_baselines).where(c.kind == kind, c.start < start))
            gone += int(result.rowcount or 0)
        return gone
