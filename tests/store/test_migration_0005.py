"""Migration 0005_grant_no_access: grants from before it are allow grants; a no-access grant is stored
and read back; downgrading refuses while one is live (it would read as an allow of nothing)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command

from signer.store import GrantRecord, migrate
from signer.store.migrate import _config
from tests.dbfixtures import fresh_store, sqlite_url

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _alembic(action: str, url: str, revision: str) -> None:
    failure: list[BaseException] = []

    def run() -> None:  # Alembic's environment runs its own event loop: not on the caller's.
        try:
            getattr(command, action)(_config(url), revision)
        except BaseException as exc:  # re-raised below
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def test_grants_from_before_0005_allow_and_no_access_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "signer.db"
    url = sqlite_url(path)
    _alembic("upgrade", url, "0004_console_sessions")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO grants (id, principal_id, resource_type, resource_id, operations, created_at, "
            "group_name, value_budgets) VALUES (?, NULL, 'scope', 'acme', ?, ?, 'developers', '{}')",
            ("grt_old", '["sign_message"]', "2026-11-30 00:00:00.000000"),
        )
    migrate(url)
    closed = GrantRecord(
        id="grt_closed",
        principal_id=None,
        resource_type="scope",
        resource_id="acme/payments/prod",
        operations=[],
        expires_at=None,
        created_by=None,
        created_at=NOW,
        group_name="developers",
        no_access=True,
    )

    async def store_side() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                old = await reader.grants.get("grt_old")
            assert old is not None and old.no_access is False and old.operations == ["sign_message"]
            async with store.write() as writer:
                await writer.grants.insert(closed)
                with pytest.raises(ValueError):
                    await writer.grants.insert(replace(closed, id="grt_bad", operations=["sign_message"]))
            async with store.read() as reader:
                assert await reader.grants.get("grt_closed") == closed
                live = await reader.grants.for_principal("nobody", frozenset({"developers"}), NOW)
            assert [g.id for g in live] == ["grt_old", "grt_closed"]

    asyncio.run(store_side())
    with pytest.raises(RuntimeError, match="no-access"):
        _alembic("downgrade", url, "0004_console_sessions")
    # The later revisions above 0005 were stepped down before 0005 refused: bring them back.
    migrate(url)

    async def revoke() -> None:
        async with fresh_store(url) as store, store.write() as writer:
            assert await writer.grants.revoke("grt_closed", NOW)

    asyncio.run(revoke())
    _alembic("downgrade", url, "0004_console_sessions")
    with sqlite3.connect(path) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(grants)")}
    assert "no_access" not in columns and "value_budgets" in columns
