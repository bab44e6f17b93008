"""Migration 0019 (a whole secret's state) on a real SQLite file: secrets from before it read as active;
a downgrade below it is refused while a secret is disabled (it would answer reads again), and goes
through once none is, dropping the columns."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from signer.store import migrate
from tests.dbfixtures import fresh_store, sqlite_url
from tests.store.test_migration_0005 import _alembic

STAMP = "2026-12-01 00:00:00.000000"


def test_secrets_from_before_0019_are_active_and_the_downgrade_is_guarded(tmp_path: Path) -> None:
    path = tmp_path / "signer.db"
    url = sqlite_url(path)
    _alembic("upgrade", url, "0018_key_states")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO secrets (id, name, folder, description, tags, category, owner_type, owner, "
            "consumers, origin, current_version, created_at, updated_at) VALUES "
            "('sec_old', 'old', 'acme', '', '[]', 'other', 'group', 'g', '[]', 'provided', 1, ?, ?)",
            (STAMP, STAMP),
        )
        connection.execute(
            "INSERT INTO secret_versions (secret_id, version, kek_id, wrapped_key, sealed_fields, "
            "created_at) VALUES ('sec_old', 1, 'kek', ?, '{\"f\": \"AAAA\"}', ?)",
            (os.urandom(40), STAMP),
        )
    migrate(url)
    now = datetime(2026, 12, 7, tzinfo=UTC)

    async def check_and_disable() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                old = await reader.secrets.get("sec_old")
                assert old is not None and (old.state, old.state_changed_at, old.state_reason) == (
                    "active",
                    None,
                    None,
                )
            async with store.write() as writer:
                assert await writer.secrets.set_state("sec_old", "disabled", now=now, by=None, reason="x")

    asyncio.run(check_and_disable())
    with pytest.raises(RuntimeError, match="disabled"):
        _alembic("downgrade", url, "0018_key_states")
    migrate(url)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE secrets SET state = 'active'")
    _alembic("downgrade", url, "0018_key_states")
    with sqlite3.connect(path) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(secrets)")}
    assert "state" not in columns and "state_reason" not in columns and "revision" in columns
