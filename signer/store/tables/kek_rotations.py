"""KEK rotation jobs and the rewrapping of secret versions: ``kek_rotations`` and two columns of
``secret_versions``.

Owns: a rotation's row (scope, the KEK it replaces and the new one, state, counts, the retired and
destroyed KEK ids), the versions of a scope not yet under the new KEK (in pages, wrapped keys only), and
the one-row check-and-set that swaps a version's ``(kek_id, wrapped_key)`` for the rewrapped pair and
keeps the KEK id its fields bind (``bound_kek_id``). It never sees an unwrapped key or a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from signer.errors import Conflict
from signer.store import schema as t
from signer.store.checks import aware, nonempty
from signer.store.tx import Statements, WriteStatements

STATES = ("switching", "rewrapping", "finished")


@dataclass(frozen=True, slots=True)
class KekRotationRecord:
    id: str
    scope: str
    old_kek_id: str
    new_kek_id: str
    state: str
    total: int
    rewrapped: int
    retired: list[str]
    destroyed: list[str]
    started_at: datetime
    started_by: str | None
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class PendingVersion:
    """A version still wrapped under another KEK than the rotation's new one."""

    secret_id: str
    version: int
    kek_id: str
    wrapped_key: bytes


def _record(row: Any) -> KekRotationRecord:
    m = row._mapping
    return KekRotationRecord(
        id=m["id"],
        scope=m["scope"],
        old_kek_id=m["old_kek_id"],
        new_kek_id=m["new_kek_id"],
        state=m["state"],
        total=int(m["total"]),
        rewrapped=int(m["rewrapped"]),
        retired=list(m["retired"]),
        destroyed=list(m["destroyed"]),
        started_at=m["started_at"],
        started_by=m["started_by"],
        updated_at=m["updated_at"],
        finished_at=m["finished_at"],
    )


def _in_scope(scope: str) -> Any:
    """Secrets sealed by the scope's KEK: in the folder ``scope`` or below it."""
    c = t.secrets.c
    return or_(c.folder == scope, c.folder.startswith(scope + "/", autoescape=True))


def _pending(scope: str, new_kek_id: str) -> Any:
    v, s = t.secret_versions.c, t.secrets.c
    # A destroyed version keeps no wrapped key: nothing to rewrap, and nothing a retired KEK still opens.
    return and_(v.kek_id != new_kek_id, v.state != "destroyed", s.backend == "sealed", _in_scope(scope))


class KekRotationReads:
    """Reads of rotations and of the versions a rotation has left to rewrap."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def latest(self, scope: str) -> KekRotationRecord | None:
        c = t.kek_rotations.c
        row = await self._tx._first(
            select(t.kek_rotations).where(c.scope == scope).order_by(c.started_at.desc(), c.id).limit(1)
        )
        return None if row is None else _record(row)

    async def get(self, rotation_id: str) -> KekRotationRecord | None:
        row = await self._tx._first(select(t.kek_rotations).where(t.kek_rotations.c.id == rotation_id))
        return None if row is None else _record(row)

    async def unfinished(self) -> list[KekRotationRecord]:
        c = t.kek_rotations.c
        rows = await self._tx._all(
            select(t.kek_rotations).where(c.state != "finished").order_by(c.started_at)
        )
        return [_record(r) for r in rows]

    async def pending(
        self, scope: str, new_kek_id: str, limit: int, *, after: tuple[str, int] | None = None
    ) -> list[PendingVersion]:
        """Up to ``limit`` versions of the scope not yet under ``new_kek_id``, in key order after
        ``after`` (secret id, version)."""
        v = t.secret_versions.c
        query = (
            select(v.secret_id, v.version, v.kek_id, v.wrapped_key)
            .select_from(t.secret_versions.join(t.secrets, t.secrets.c.id == v.secret_id))
            .where(_pending(scope, new_kek_id))
        )
        if after is not None:
            query = query.where(
                or_(v.secret_id > after[0], and_(v.secret_id == after[0], v.version > after[1]))
            )
        rows = await self._tx._all(query.order_by(v.secret_id, v.version).limit(limit))
        return [
            PendingVersion(m["secret_id"], m["version"], m["kek_id"], bytes(m["wrapped_key"]))
            for m in (r._mapping for r in rows)
        ]

    async def count_pending(self, scope: str, new_kek_id: str) -> int:
        v = t.secret_versions.c
        row = await self._tx._first(
            select(func.count())
            .select_from(t.secret_versions.join(t.secrets, t.secrets.c.id == v.secret_id))
            .where(_pending(scope, new_kek_id))
        )
        return int(row[0]) if row is not None else 0

    async def count_under(self, kek_id: str) -> int:
        """Versions (of any scope) whose data key is wrapped under ``kek_id``."""
        v = t.secret_versions.c
        row = await self._tx._first(
            select(func.count())
            .select_from(t.secret_versions)
            .where(v.kek_id == kek_id, v.state != "destroyed")
        )
        return int(row[0]) if row is not None else 0


class KekRotationWrites(KekRotationReads):
    """Writes of rotations and rewrapped versions (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, record: KekRotationRecord) -> None:
        nonempty(record.id, "rotation id")
        nonempty(record.scope, "scope")
        aware(record.started_at, "started_at")
        if record.state not in STATES:
            raise ValueError("unknown rotation state")
        await self._tx._insert_new(
            t.kek_rotations,
            {
                "id": record.id,
                "scope": record.scope,
                "old_kek_id": record.old_kek_id,
                "new_kek_id": record.new_kek_id,
                "state": record.state,
                "total": record.total,
                "rewrapped": record.rewrapped,
                "retired": record.retired,
                "destroyed": record.destroyed,
                "started_at": record.started_at,
                "started_by": record.started_by,
                "updated_at": record.updated_at,
                "finished_at": record.finished_at,
            },
            Conflict("that rotation exists", code="kek_rotation_exists"),
        )

    async def set_state(
        self,
        rotation_id: str,
        state: str,
        now: datetime,
        *,
        expect: str,
        retired: list[str] | None = None,
        total: int | None = None,
    ) -> bool:
        """Move a rotation from ``expect`` to ``state``; False if it was not in ``expect``."""
        if state not in STATES:
            raise ValueError("unknown rotation state")
        aware(now, "now")
        c = t.kek_rotations.c
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if state == "finished":
            values["finished_at"] = now
        if retired is not None:
            values["retired"] = retired
        if total is not None:
            values["total"] = total
        result = await self._tx._write(
            update(t.kek_rotations).where(c.id == rotation_id, c.state == expect).values(**values)
        )
        return bool(result.rowcount)

    async def set_destroyed(self, rotation_id: str, destroyed: list[str], now: datetime) -> None:
        c = t.kek_rotations.c
        await self._tx._write(
            update(t.kek_rotations).where(c.id == rotation_id).values(destroyed=destroyed, updated_at=now)
        )

    async def rewrap(
        self, rotation_id: str, item: PendingVersion, new_kek_id: str, wrapped: bytes, now: datetime
    ) -> bool:
        """Swap one version's wrapped key for ``wrapped`` (under ``new_kek_id``) if it is still the one
        under ``item.kek_id`` that was rewrapped; its fields keep binding the KEK id they were sealed
        with. Counts it on the rotation. False (nothing written) if the row changed or went."""
        v = t.secret_versions.c
        result = await self._tx._write(
            update(t.secret_versions)
            .where(
                v.secret_id == item.secret_id,
                v.version == item.version,
                v.kek_id == item.kek_id,
                v.wrapped_key == item.wrapped_key,
            )
            .values(
                kek_id=new_kek_id, wrapped_key=wrapped, bound_kek_id=func.coalesce(v.bound_kek_id, v.kek_id)
            )
        )
        if not result.rowcount:
            return False
        c = t.kek_rotations.c
        await self._tx._write(
            update(t.kek_rotations)
            .where(c.id == rotation_id)
            .values(rewrapped=c.rewrapped + 1, updated_at=now)
        )
        return True
