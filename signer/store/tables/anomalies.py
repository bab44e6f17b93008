"""Known source addresses: ``anomaly_sources``, one row per principal and address it was seen using.

Read once per principal and process by ``signer.services.anomalies`` (which keeps them in memory) and
added in batches after the decisions; adding an address already known changes nothing (the first
sighting is kept). This module decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import exists, insert, literal, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from signer.store import schema as t
from signer.store.checks import aware
from signer.store.tx import Statements, WriteStatements


class AnomalyReads:
    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def sources_of(self, principal_id: str) -> set[str]:
        """Every source address ``principal_id`` has been seen using."""
        c = t.anomaly_sources.c
        rows = await self._tx._all(select(c.source).where(c.principal_id == principal_id))
        return {r[0] for r in rows}


class AnomalyWrites(AnomalyReads):
    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)
        self._wtx = tx

    async def add_sources(self, rows: Iterable[tuple[str, str, datetime]]) -> None:
        """Record ``(principal_id, source, first_at)`` rows; a pair already known keeps its first time."""
        values = []
        for principal_id, source, at in rows:
            aware(at, "first_at")
            values.append({"principal_id": principal_id, "source": source, "first_at": at})
        if not values:
            return
        dialect = pg_dialect if self._wtx.backend == "postgresql" else sqlite_dialect
        await self._wtx._write(dialect.insert(t.anomaly_sources).values(values).on_conflict_do_nothing())

    async def claim_first_source(self, principal_id: str, source: str, at: datetime) -> bool:
        """Record ``source`` as ``principal_id``'s first address if it has none yet; True if it did.

        Two workers that each see a principal for the first time, from two addresses, must not both
        learn theirs quietly: the principal's row is locked first (``FOR UPDATE`` on PostgreSQL; on
        SQLite the write lock already orders them), so exactly one claim wins and the other worker
        reads the winner's address."""
        aware(at, "first_at")
        await self._wtx._all(
            select(t.principals.c.id).where(t.principals.c.id == principal_id).with_for_update()
        )
        c = t.anomaly_sources.c
        claim = insert(t.anomaly_sources).from_select(
            ["principal_id", "source", "first_at"],
            select(
                literal(principal_id, t.anomaly_sources.c.principal_id.type),
                literal(source, t.anomaly_sources.c.source.type),
                literal(at, t.anomaly_sources.c.first_at.type),
            ).where(~exists().where(c.principal_id == principal_id)),
        )
        result = await self._wtx._write(claim)
        return bool(result.rowcount)
