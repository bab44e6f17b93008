"""Group membership: which principals are in which named group.

Owns the ``group_members`` table. Groups exist only through their members; adding or removing a member
moves the facts epoch, because grants, policies and approval rules name groups.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.tx import Statements, WriteStatements


class GroupReads:
    """Reads of ``group_members``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def of(self, principal_id: str) -> frozenset[str]:
        c = t.group_members.c
        rows = await self._tx._all(select(c.group_name).where(c.principal_id == principal_id))
        return frozenset(r[0] for r in rows)

    async def members(self, group: str) -> list[str]:
        c = t.group_members.c
        rows = await self._tx._all(
            select(c.principal_id).where(c.group_name == group).order_by(c.principal_id)
        )
        return [r[0] for r in rows]

    async def all(self) -> dict[str, list[str]]:
        c = t.group_members.c
        rows = await self._tx._all(
            select(c.group_name, c.principal_id).order_by(c.group_name, c.principal_id)
        )
        groups: dict[str, list[str]] = {}
        for group, principal in rows:
            groups.setdefault(group, []).append(principal)
        return groups


class GroupWrites(GroupReads):
    """Writes of ``group_members`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def add(self, group: str, principal_id: str, now: datetime, by: str | None) -> bool:
        """Add a principal to a group; False if it already was a member."""
        try:
            await self._tx._insert_new(
                t.group_members,
                {"group_name": group, "principal_id": principal_id, "added_at": now, "added_by": by},
                Conflict("already a member", code="already_member"),
                missing_parent=NotFound("no such principal", code="principal_not_found"),
            )
        except Conflict:
            return False
        self._tx.bump_epoch()
        return True

    async def remove(self, group: str, principal_id: str) -> bool:
        c = t.group_members.c
        result = await self._tx._write(
            delete(t.group_members).where(c.group_name == group, c.principal_id == principal_id)
        )
        if result.rowcount:
            self._tx.bump_epoch()
            return True
        return False
