"""Grants: who (a principal or a group) may do which operations on which resources, until when.

Owns the ``grants`` table (allow grants and explicit no-access grants): insert, revoke (both move the
facts epoch), and the reads authorisation needs (a principal's live grants, directly or through its
groups). Row to record conversion is ``grant_from_row``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.checks import aware, nonempty, tz_aware
from signer.store.records import GrantRecord
from signer.store.tx import Statements, WriteStatements


def grant_from_row(row: Any) -> GrantRecord:
    m = row._mapping
    return GrantRecord(
        id=m["id"],
        principal_id=m["principal_id"],
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        operations=list(m["operations"]),
        expires_at=m["expires_at"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        group_name=m["group_name"],
        max_uses=None if m["max_uses"] is None else int(m["max_uses"]),
        value_budgets=dict(m["value_budgets"] or {}),
        no_access=bool(m["no_access"]),
    )


class GrantReads:
    """Reads of ``grants``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, grant_id: str) -> GrantRecord | None:
        row = await self._tx._first(select(t.grants).where(t.grants.c.id == grant_id))
        return None if row is None else grant_from_row(row)

    async def active(
        self, principal_id: str, resource_type: str, resource_id: str, now: datetime
    ) -> list[GrantRecord]:
        """Grants of ``principal_id`` on the resource that are neither revoked nor expired at ``now``."""
        aware(now, "now")
        g = t.grants.c
        rows = await self._tx._all(
            select(t.grants)
            .where(
                g.principal_id == principal_id,
                g.resource_type == resource_type,
                g.resource_id == resource_id,
                g.revoked_at.is_(None),
                or_(g.expires_at.is_(None), g.expires_at > now),
            )
            .order_by(g.created_at, g.id)
        )
        return [grant_from_row(r) for r in rows]

    async def all(self, principal_id: str | None = None) -> list[GrantRecord]:
        """Every grant (revoked and expired included), optionally of one principal."""
        query: Select[Any] = select(t.grants)
        if principal_id is not None:
            query = query.where(t.grants.c.principal_id == principal_id)
        rows = await self._tx._all(query.order_by(t.grants.c.created_at, t.grants.c.id))
        return [grant_from_row(r) for r in rows]

    async def for_principal(
        self, principal_id: str, groups: frozenset[str], now: datetime
    ) -> list[GrantRecord]:
        """Live grants (not revoked, not expired at ``now``) to the principal or any of its groups."""
        tz_aware(now, "now")
        g = t.grants.c
        subject = g.principal_id == principal_id
        if groups:
            subject = or_(subject, g.group_name.in_(sorted(groups)))
        rows = await self._tx._all(
            select(t.grants)
            .where(subject, g.revoked_at.is_(None), or_(g.expires_at.is_(None), g.expires_at > now))
            .order_by(g.created_at, g.id)
        )
        return [grant_from_row(r) for r in rows]

    async def about(
        self, resource_type: str, resource_id: str, scopes: list[str], now: datetime
    ) -> list[GrantRecord]:
        """Live grants (not revoked, not expired at ``now``) that name the resource itself or one of
        ``scopes`` (the folders at and above it): whoever holds them, by ``ix_grants_resource``."""
        tz_aware(now, "now")
        g = t.grants.c
        named = and_(g.resource_type == resource_type, g.resource_id == resource_id)
        if scopes:
            named = or_(named, and_(g.resource_type == "scope", g.resource_id.in_(sorted(set(scopes)))))
        rows = await self._tx._all(
            select(t.grants)
            .where(named, g.revoked_at.is_(None), or_(g.expires_at.is_(None), g.expires_at > now))
            .order_by(g.created_at, g.id)
        )
        return [grant_from_row(r) for r in rows]


class GrantWrites(GrantReads):
    """Writes of ``grants`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, grant: GrantRecord) -> None:
        """Insert a grant and bump the epoch.

        ``Conflict(grant_exists)`` on a taken id, ``NotFound(principal_not_found)`` for an unknown principal.
        """
        nonempty(grant.id, "grant id")
        if (grant.principal_id is None) == (grant.group_name is None):
            raise ValueError("a grant names exactly one principal or group")
        nonempty(grant.principal_id, "principal id", optional=True)
        nonempty(grant.group_name, "group name", optional=True)
        nonempty(grant.resource_id, "resource id")
        if grant.max_uses is not None and (isinstance(grant.max_uses, bool) or grant.max_uses < 0):
            raise ValueError("max_uses must be a non-negative integer")
        # Any registered kind of resource, or "scope": the grants service checks the kind against the
        # registry (``signer.services.resources``), so a new kind needs nothing here.
        nonempty(grant.resource_type, "resource type")
        if isinstance(grant.operations, str) or not all(isinstance(op, str) for op in grant.operations):
            raise ValueError("operations must be a list of strings")
        if grant.no_access and (grant.operations or grant.max_uses is not None or grant.value_budgets):
            raise ValueError("a no-access grant lists no operations and carries no limits")
        aware(grant.created_at, "created_at")
        aware(grant.expires_at, "expires_at", optional=True)
        aware(grant.revoked_at, "revoked_at", optional=True)
        await self._tx._insert_new(
            t.grants,
            {
                "id": grant.id,
                "principal_id": grant.principal_id,
                "resource_type": grant.resource_type,
                "resource_id": grant.resource_id,
                "operations": list(grant.operations),
                "expires_at": grant.expires_at,
                "created_by": grant.created_by,
                "created_at": grant.created_at,
                "revoked_at": grant.revoked_at,
                "group_name": grant.group_name,
                "max_uses": grant.max_uses,
                "value_budgets": {k: str(v) for k, v in grant.value_budgets.items()},
                "no_access": grant.no_access,
            },
            Conflict("a grant with that id exists", code="grant_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )
        self._tx.bump_epoch()

    async def revoke(self, grant_id: str, now: datetime) -> bool:
        """Revoke a grant; True if it was live, False if already revoked; NotFound if unknown."""
        aware(now, "now")
        c = t.grants.c
        result = await self._tx._write(
            update(t.grants).where(c.id == grant_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        if result.rowcount:
            self._tx.bump_epoch()
            return True
        if await self.get(grant_id) is None:
            raise NotFound("no such grant", code="grant_not_found")
        return False
