"""Console sessions (tables/console_sessions.py): the contract both backends pass."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from signer.errors import Conflict
from signer.store import ConsoleSessionRecord, Store
from tests.store.store_testkit import T0, principal, token, uid


def session(principal_id: str, token_id: str, *, idle_minutes: int = 0, **kw) -> ConsoleSessionRecord:  # type: ignore[no-untyped-def]
    return ConsoleSessionRecord(
        id=kw.pop("id", uid("cs")),
        digest=kw.pop("digest", secrets.token_bytes(32)),
        principal_id=principal_id,
        token_id=token_id,
        created_at=T0,
        last_seen_at=T0 + timedelta(minutes=idle_minutes),
        expires_at=kw.pop("expires_at", T0 + timedelta(hours=8)),
    )


async def test_sessions_found_by_digest_touched_deleted_and_purged(store: Store) -> None:
    person = principal(role="approver")
    tok = token(person.id)
    fresh, idle = session(person.id, tok.id, idle_minutes=50), session(person.id, tok.id)
    expired = session(person.id, tok.id, idle_minutes=50, expires_at=T0 + timedelta(minutes=30))
    async with store.write() as w:
        await w.principals.insert(person)
        await w.tokens.insert(tok)
        for record in (fresh, idle, expired):
            await w.console_sessions.insert(record)
        with pytest.raises(Conflict) as again:
            await w.console_sessions.insert(session(person.id, tok.id, id=fresh.id))
        with pytest.raises(ValueError):
            await w.console_sessions.insert(session(person.id, tok.id, digest=b"short"))
    assert again.value.code == "console_session_exists"
    async with store.read() as r:
        assert await r.console_sessions.get(fresh.digest) == fresh
        assert await r.console_sessions.get(secrets.token_bytes(32)) is None
    now = T0 + timedelta(hours=1)
    async with store.write() as w:
        assert await w.console_sessions.touch(fresh.id, now) is True
        assert await w.console_sessions.touch("cs_missing", now) is False
        # idle since before now - 30 min, or past its absolute expiry: both go
        assert await w.console_sessions.purge(now, now - timedelta(minutes=30)) == 2
    async with store.read() as r:
        kept = await r.console_sessions.get(fresh.digest)
        assert kept is not None and kept.last_seen_at == now
        assert await r.console_sessions.get(idle.digest) is None
    async with store.write() as w:
        assert await w.console_sessions.delete(fresh.id) is True
        assert await w.console_sessions.delete(fresh.id) is False
