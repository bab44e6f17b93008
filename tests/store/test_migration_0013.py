"""Migration 0013 (secret versions) on a real SQLite file: versions and secrets from before it read as
enabled, revision 1, unpinned; a downgrade below it is refused while a version is not enabled (it would
come back readable), and goes through once none is, dropping the columns and the folder defaults."""

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


def test_versions_from_before_0013_and_the_guarded_downgrade(tmp_path: Path) -> None:
    path = tmp_path / "signer.db"
    url = sqlite_url(path)
    _alembic("upgrade", url, "0012_audit_sinks")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO secrets (id, name, folder, description, tags, category, owner_type, owner, "
            "consumers, origin, current_version, created_at, updated_at) VALUES "
            "('sec_old', 'old', 'acme', '', '[]', 'other', 'group', 'g', '[]', 'provided', 2, ?, ?)",
            (STAMP, STAMP),
        )
        for number in (1, 2):
            connection.execute(
                "INSERT INTO secret_versions (secret_id, version, kek_id, wrapped_key, sealed_fields, "
                "created_at) VALUES ('sec_old', ?, 'kek', ?, '{\"f\": \"AAAA\"}', ?)",
                (number, os.urandom(40), STAMP),
            )
    migrate(url)
    now = datetime(2026, 12, 7, tzinfo=UTC)

    async def check_and_destroy() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                old = await reader.secrets.get("sec_old")
                assert old is not None and (old.revision, old.pins, old.overlap_seconds) == (1, {}, None)
                assert [v.state for v in await reader.secrets.versions("sec_old")] == ["enabled"] * 2
            async with store.write() as writer:
                assert await writer.secrets.set_version_state(
                    "sec_old",
                    1,
                    "destroyed",
                    from_states=frozenset({"enabled"}),
                    now=now,
                    by=None,
                    reason="x",
                )

    asyncio.run(check_and_destroy())
    with pytest.raises(RuntimeError, match="not enabled"):
        _alembic("downgrade", url, "0012_audit_sinks")
    migrate(url)
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM secret_versions WHERE state <> 'enabled'")
    _alembic("downgrade", url, "0012_audit_sinks")
    with sqlite3.connect(path) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(secret_versions)")}
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "state" not in columns and "wrapped_key" in columns
    assert "secret_folder_defaults" not in tables
