"""External audit sinks' delivery state: per sink, the last seq delivered and who may deliver.

Owns ``audit_sinks``. One process at a time delivers to a sink: it holds the row's lease (owner and
expiry), renews it while it delivers, and only the lease holder moves the cursor. A failing sink keeps
the time it started failing and the kind of error (a class name, never a message that could carry a
URL or a value).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update

from signer.store import schema as t
from signer.store.tx import Statements, WriteStatements


@dataclass(frozen=True, slots=True)
class SinkState:
    name: str
    delivered_seq: int
    lease_owner: str | None
    lease_until: datetime | None
    failing_since: datetime | None
    last_error: str | None


def _state(row: Any) -> SinkState:
    m = row._mapping
    return SinkState(
        m["name"],
        int(m["delivered_seq"]),
        m["lease_owner"],
        m["lease_until"],
        m["failing_since"],
        m["last_error"],
    )


class SinkReads:
    """Reads of ``audit_sinks``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, name: str) -> SinkState | None:
        row = await self._tx._first(select(t.audit_sinks).where(t.audit_sinks.c.name == name))
        return None if row is None else _state(row)

    async def all(self) -> list[SinkState]:
        rows = await self._tx._all(select(t.audit_sinks).order_by(t.audit_sinks.c.name))
        return [_state(r) for r in rows]


class SinkWrites(SinkReads):
    """Leases and cursors (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def take_lease(
        self, name: str, owner: str, until: datetime, now: datetime, start_seq: int
    ) -> SinkState | None:
        """The sink's state if ``owner`` holds its lease until ``until`` now (taken when free, expired
        or already ours; a new sink starts after ``start_seq``), else None."""
        c = t.audit_sinks.c
        if await self.get(name) is None:
            await self._tx._write(
                t.audit_sinks.insert(),
                {"name": name, "delivered_seq": start_seq, "lease_owner": owner, "lease_until": until},
            )
            return await self.get(name)
        result = await self._tx._write(
            update(t.audit_sinks)
            .where(
                c.name == name,
                or_(c.lease_owner.is_(None), c.lease_owner == owner, c.lease_until < now),
            )
            .values(lease_owner=owner, lease_until=until)
        )
        return await self.get(name) if result.rowcount else None

    async def delivered(self, name: str, owner: str, seq: int) -> bool:
        """Move the cursor to ``seq`` and clear a failure; False when ``owner`` lost the lease."""
        c = t.audit_sinks.c
        result = await self._tx._write(
            update(t.audit_sinks)
            .where(c.name == name, c.lease_owner == owner, c.delivered_seq <= seq)
            .values(delivered_seq=seq, failing_since=None, last_error=None)
        )
        return bool(result.rowcount)

    async def failing(self, name: str, owner: str, since: datetime, error: str) -> None:
        """Record a failed delivery (the first failure's time stays)."""
        c = t.audit_sinks.c
        await self._tx._write(
            update(t.audit_sinks).where(c.name == name, c.lease_owner == owner).values(last_error=error)
        )
        await self._tx._write(
            update(t.audit_sinks)
            .where(c.name == name, c.lease_owner == owner, c.failing_since.is_(None))
            .values(failing_since=since)
        )

    async def release(self, name: str, owner: str) -> None:
        c = t.audit_sinks.c
        await self._tx._write(
            update(t.audit_sinks)
            .where(c.name == name, c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
