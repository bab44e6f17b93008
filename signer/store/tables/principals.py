"""Principals (people and services that hold tokens) and their tokens.

Owns the ``principals`` and ``tokens`` tables: inserting a principal or a token, disabling a principal,
revoking one token or a whole refresh family, and reading them back (a token with its principal's name,
role and disabled time). Tokens are stored as HMAC digests the caller computed: this module never sees
a token's secret. Disabling a principal or revoking a token moves the facts epoch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.checks import aware, nonempty, one_of
from signer.store.records import ROLES, TOKEN_KINDS, PrincipalRecord, TokenRecord
from signer.store.tx import Statements, WriteStatements

_TOKEN_SELECT = select(
    t.tokens,
    t.principals.c.name.label("principal_name"),
    t.principals.c.role.label("principal_role"),
    t.principals.c.disabled_at.label("principal_disabled_at"),
).select_from(t.tokens.join(t.principals, t.tokens.c.principal_id == t.principals.c.id))


def _principal(row: Any) -> PrincipalRecord:
    m = row._mapping
    return PrincipalRecord(
        id=m["id"],
        name=m["name"],
        role=m["role"],
        created_at=m["created_at"],
        created_by=m["created_by"],
        disabled_at=m["disabled_at"],
    )


def _token(row: Any) -> TokenRecord:
    m = row._mapping
    return TokenRecord(
        id=m["id"],
        principal_id=m["principal_id"],
        kind=m["kind"],
        digest=bytes(m["digest"]),
        family_id=m["family_id"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        principal_name=m["principal_name"],
        principal_role=m["principal_role"],
        principal_disabled_at=m["principal_disabled_at"],
    )


class PrincipalReads:
    """Reads of ``principals``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, principal_id: str) -> PrincipalRecord | None:
        row = await self._tx._first(select(t.principals).where(t.principals.c.id == principal_id))
        return None if row is None else _principal(row)

    async def by_name(self, name: str) -> PrincipalRecord | None:
        row = await self._tx._first(select(t.principals).where(t.principals.c.name == name))
        return None if row is None else _principal(row)

    async def all(self) -> list[PrincipalRecord]:
        rows = await self._tx._all(select(t.principals).order_by(t.principals.c.name))
        return [_principal(r) for r in rows]


class PrincipalWrites(PrincipalReads):
    """Writes of ``principals`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, principal: PrincipalRecord) -> PrincipalRecord:
        """Insert ``principal``; ``Conflict(principal_exists)`` if its id or name is taken."""
        nonempty(principal.id, "principal id")
        nonempty(principal.name, "principal name")
        one_of(principal.role, ROLES, "role")
        aware(principal.created_at, "created_at")
        aware(principal.disabled_at, "disabled_at", optional=True)
        await self._tx._insert_new(
            t.principals,
            {
                "id": principal.id,
                "name": principal.name,
                "role": principal.role,
                "created_at": principal.created_at,
                "created_by": principal.created_by,
                "disabled_at": principal.disabled_at,
            },
            Conflict("a principal with that id or name exists", code="principal_exists"),
        )
        return principal

    async def set_disabled(self, principal_id: str, disabled_at: datetime | None) -> None:
        """Disable (an aware datetime) or re-enable (None) a principal; bumps the epoch on change."""
        aware(disabled_at, "disabled_at", optional=True)
        p = t.principals.c
        changed = (p.disabled_at.is_(None)) if disabled_at is not None else (p.disabled_at.is_not(None))
        result = await self._tx._write(
            update(t.principals).where(p.id == principal_id, changed).values(disabled_at=disabled_at)
        )
        if result.rowcount:
            self._tx.bump_epoch()
            return
        if await self.get(principal_id) is None:
            raise NotFound("no such principal", code="principal_not_found")


class TokenReads:
    """Reads of ``tokens``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, token_id: str) -> TokenRecord | None:
        row = await self._tx._first(_TOKEN_SELECT.where(t.tokens.c.id == token_id))
        return None if row is None else _token(row)

    async def of_principal(self, principal_id: str, kind: str) -> list[TokenRecord]:
        """A principal's tokens of one kind, oldest first (revoked and expired ones included)."""
        c = t.tokens.c
        rows = await self._tx._all(
            _TOKEN_SELECT.where(c.principal_id == principal_id, c.kind == kind).order_by(c.created_at, c.id)
        )
        return [_token(r) for r in rows]

    async def rotated_with_live_successor(self, family_id: str, rotated_at: datetime, now: datetime) -> bool:
        """Was a refresh token of ``family_id`` issued at ``rotated_at`` (the instant a refresh used its
        predecessor), and does the family still hold a live refresh token? False after an admin's revoke
        (nothing was issued then) and after the family was revoked."""
        c = t.tokens.c
        refresh = (c.family_id == family_id, c.kind == "refresh")
        issued = await self._tx._first(select(c.id).where(*refresh, c.created_at == rotated_at).limit(1))
        if issued is None:
            return False
        live = await self._tx._first(
            select(c.id)
            .where(*refresh, c.revoked_at.is_(None), or_(c.expires_at.is_(None), c.expires_at > now))
            .limit(1)
        )
        return live is not None


class TokenWrites(TokenReads):
    """Writes of ``tokens`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, token: TokenRecord) -> None:
        """Insert a token (its ``principal_*`` fields are ignored); ``Conflict(token_exists)`` on a
        taken id, ``NotFound(principal_not_found)`` for an unknown principal."""
        nonempty(token.id, "token id")
        nonempty(token.principal_id, "principal id")
        nonempty(token.family_id, "family id")
        one_of(token.kind, TOKEN_KINDS, "token kind")
        if not isinstance(token.digest, bytes | bytearray) or len(token.digest) != 32:
            raise ValueError("token digest must be 32 bytes")
        aware(token.created_at, "created_at")
        aware(token.expires_at, "expires_at", optional=True)
        aware(token.revoked_at, "revoked_at", optional=True)
        await self._tx._insert_new(
            t.tokens,
            {
                "id": token.id,
                "principal_id": token.principal_id,
                "kind": token.kind,
                "digest": bytes(token.digest),
                "family_id": token.family_id,
                "created_at": token.created_at,
                "expires_at": token.expires_at,
                "revoked_at": token.revoked_at,
            },
            Conflict("a token with that id exists", code="token_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )

    async def revoke(self, token_id: str, now: datetime) -> bool:
        """Revoke one token; True if it was live, False if already revoked; NotFound if unknown."""
        aware(now, "now")
        c = t.tokens.c
        result = await self._tx._write(
            update(t.tokens).where(c.id == token_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        if result.rowcount:
            self._tx.bump_epoch()
            return True
        row = await self._tx._first(select(c.id).where(c.id == token_id))
        if row is None:
            raise NotFound("no such token", code="token_not_found")
        return False

    async def revoke_family(self, family_id: str, now: datetime) -> int:
        """Revoke every live token of a refresh lineage; returns how many were revoked."""
        aware(now, "now")
        c = t.tokens.c
        result = await self._tx._write(
            update(t.tokens).where(c.family_id == family_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        count = int(result.rowcount or 0)
        if count:
            self._tx.bump_epoch()
        return count
