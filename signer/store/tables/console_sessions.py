"""Console sessions' rows: insert, find by keyed digest, touch, end (one or all of a token's), purge.

Owns the ``console_sessions`` table. The digest is computed by the caller
(``signer.services.console_sessions``) under the token key; the store never sees a session secret. A
session is found only by its digest, and only while its absolute expiry is ahead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update

from signer.errors import Conflict
from signer.store import schema as t
from signer.store.checks import tz_aware
from signer.store.records import ConsoleSessionRecord
from signer.store.tx import Statements, WriteStatements


def _session(row: Any) -> ConsoleSessionRecord:
    m = row._mapping
    return ConsoleSessionRecord(
        id=m["id"],
        digest=bytes(m["digest"]),
        principal_id=m["principal_id"],
        token_id=m["token_id"],
        created_at=m["created_at"],
        last_seen_at=m["last_seen_at"],
        expires_at=m["expires_at"],
    )


class ConsoleSessionReads:
    """Reads of ``console_sessions``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, digest: bytes) -> ConsoleSessionRecord | None:
        row = await self._tx._first(select(t.console_sessions).where(t.console_sessions.c.digest == digest))
        return None if row is None else _session(row)


class ConsoleSessionWrites(ConsoleSessionReads):
    """Writes of ``console_sessions`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, record: ConsoleSessionRecord) -> None:
        for name in ("created_at", "last_seen_at", "expires_at"):
            tz_aware(getattr(record, name), name)
        if len(record.digest) != 32:
            raise ValueError("a console session digest is 32 bytes")
        await self._tx._insert_new(
            t.console_sessions,
            {
                "id": record.id,
                "digest": record.digest,
                "principal_id": record.principal_id,
                "token_id": record.token_id,
                "created_at": record.created_at,
                "last_seen_at": record.last_seen_at,
                "expires_at": record.expires_at,
            },
            Conflict("a console session with that id exists", code="console_session_exists"),
        )

    async def touch(self, session_id: str, now: datetime) -> bool:
        """Record activity (for the idle expiry); False when the session is gone."""
        tz_aware(now, "now")
        c = t.console_sessions.c
        result = await self._tx._write(
            update(t.console_sessions).where(c.id == session_id).values(last_seen_at=now)
        )
        return bool(result.rowcount)

    async def delete(self, session_id: str) -> bool:
        result = await self._tx._write(
            delete(t.console_sessions).where(t.console_sessions.c.id == session_id)
        )
        return bool(result.rowcount)

    async def purge(self, now: datetime, idle_since: datetime) -> int:
        """Delete sessions past their absolute expiry or idle since before ``idle_since``."""
        tz_aware(now, "now")
        tz_aware(idle_since, "idle_since")
        c = t.console_sessions.c
        result = await self._tx._write(
            delete(t.console_sessions).where(or_(c.expires_at <= now, c.last_seen_at < idle_since))
        )
        return int(result.rowcount or 0)
