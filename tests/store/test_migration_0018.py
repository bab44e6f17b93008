"""Migration 0018 (key states) on a real SQLite file: a key disabled before it is suspended after it
(it signs nothing, and activate brings it back as enable did), an active one stays active, and the new
``compromised_at`` is empty; a downgrade keeps active keys active and makes every other state disabled
(a deactivated, compromised or destroyed key must not sign under the old code either)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from signer.store import migrate
from tests.dbfixtures import fresh_store, sqlite_url
from tests.store.test_migration_0005 import _alembic

STAMP = "2026-12-01 00:00:00.000000"


def _insert(connection: sqlite3.Connection, key_id: str, state: str) -> None:
    connection.execute(
        "INSERT INTO keys (id, label, curve, public_key, address, scope, tags, state, hsm_id, attributes, "
        "created_by, created_at, updated_at) VALUES (?, 'old', 'secp256k1', '04aa', NULL, 'default', '[]', "
        "?, ?, '{}', NULL, ?, ?)",
        (key_id, state, key_id + "-hsm", STAMP, STAMP),
    )


def test_disabled_keys_become_suspended_and_the_downgrade_never_activates(tmp_path: Path) -> None:
    path = tmp_path / "signer.db"
    url = sqlite_url(path)
    _alembic("upgrade", url, "0017_console_books")
    with sqlite3.connect(path) as connection:
        _insert(connection, "key_on", "active")
        _insert(connection, "key_off", "disabled")
    migrate(url)
    now = datetime(2026, 12, 7, tzinfo=UTC)

    async def check_and_compromise() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                on, off = await reader.keys.get("key_on"), await reader.keys.get("key_off")
            assert on is not None and (on.state, on.compromised_at) == ("active", None)
            assert off is not None and (off.state, off.compromised_at) == ("suspended", None)
            async with store.write() as writer:
                await writer.keys.set_state(
                    "key_off", "compromised", now, expected="suspended", compromised_at=now
                )

    asyncio.run(check_and_compromise())
    _alembic("downgrade", url, "0017_console_books")
    with sqlite3.connect(path) as connection:
        states = dict(connection.execute("SELECT id, state FROM keys"))
        columns = {row[1] for row in connection.execute("PRAGMA table_info(keys)")}
    assert states == {"key_on": "active", "key_off": "disabled"}
    assert "compromised_at" not in columns
    migrate(url)
