"""The audit keys that sign (or signed) checkpoints: ``audit_keys``.

Owns one row per key: its signed-note key id and name, its public half (base64) and token id, the seq of
the ``audit.key_rotated`` event that introduced it (none for the first key), the first and last tree
sizes it signed, and when it was retired and its private half destroyed. The rotation row is written in
the transaction of its audit event; the sizes in that of the checkpoint that hands over. Public data
only: the private halves live and die in the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from signer.store import schema as t
from signer.store.tx import Statements, WriteStatements


@dataclass(frozen=True, slots=True)
class AuditKeyRecord:
    key_id: str
    name: str
    public_key: str
    hsm_id: str
    rotation_seq: int | None
    first_size: int | None
    retired_size: int | None
    created_at: datetime
    retired_at: datetime | None
    destroyed_at: datetime | None


def _record(row: Any) -> AuditKeyRecord:
    m = row._mapping
    return AuditKeyRecord(
        key_id=m["key_id"],
        name=m["name"],
        public_key=m["public_key"],
        hsm_id=m["hsm_id"],
        rotation_seq=None if m["rotation_seq"] is None else int(m["rotation_seq"]),
        first_size=None if m["first_size"] is None else int(m["first_size"]),
        retired_size=None if m["retired_size"] is None else int(m["retired_size"]),
        created_at=m["created_at"],
        retired_at=m["retired_at"],
        destroyed_at=m["destroyed_at"],
    )


class AuditKeyReads:
    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def all(self) -> list[AuditKeyRecord]:
        """Every audit key, the first one first, then in rotation order."""
        rows = await self._tx._all(select(t.audit_keys))
        records = [_record(r) for r in rows]
        return sorted(records, key=lambda r: -1 if r.rotation_seq is None else r.rotation_seq)


class AuditKeyWrites(AuditKeyReads):
    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def add(self, record: AuditKeyRecord) -> None:
        await self._tx._write(
            t.audit_keys.insert(),
            {
                "key_id": record.key_id,
                "name": record.name,
                "public_key": record.public_key,
                "hsm_id": record.hsm_id,
                "rotation_seq": record.rotation_seq,
                "first_size": record.first_size,
                "retired_size": record.retired_size,
                "created_at": record.created_at,
                "retired_at": record.retired_at,
                "destroyed_at": record.destroyed_at,
            },
        )

    async def signed(self, key_id: str, size: int) -> None:
        """The key signed the checkpoint at ``size``: its first one, unless it signed before."""
        c = t.audit_keys.c
        await self._tx._write(
            update(t.audit_keys).where(c.key_id == key_id, c.first_size.is_(None)).values(first_size=size)
        )

    async def retired(self, key_id: str, size: int, at: datetime) -> None:
        """The checkpoint at ``size`` handed over to the next key: the last this one signs."""
        c = t.audit_keys.c
        await self._tx._write(
            update(t.audit_keys)
            .where(c.key_id == key_id, c.retired_size.is_(None))
            .values(retired_size=size, retired_at=at)
        )

    async def destroyed(self, key_id: str, at: datetime) -> None:
        c = t.audit_keys.c
        await self._tx._write(
            update(t.audit_keys).where(c.key_id == key_id, c.destroyed_at.is_(None)).values(destroyed_at=at)
        )
