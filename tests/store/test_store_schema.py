"""Migrations: they build exactly the schema the code uses, run idempotently, and unmigrated databases
are refused at open."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from signer.audit import GENESIS_HASH
from signer.errors import ConfigurationError
from signer.store import Store, migrate, open_store
from signer.store.migrate import head_revision
from signer.store.schema import metadata
from tests.dbfixtures import fresh_store, sqlite_url


async def schema_differences(url: str) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()


async def test_migrated_schema_matches_the_table_definitions(store_url: str) -> None:
    assert await schema_differences(store_url) == []


async def test_a_fresh_database_starts_empty_at_genesis(store: Store) -> None:
    async with store.read() as r:
        assert await r.audit_head() == (0, GENESIS_HASH)
        assert await r.epoch() == 0
        assert await r.audit.events() == []
        assert await r.principals.all() == []
    assert await store.schema_revision() == head_revision()
    assert await store.integrity_check()


async def test_migrate_is_idempotent_and_keeps_data(store_url: str) -> None:
    async with fresh_store(store_url) as store:
        async with store.write() as w:
            w.append_audit({"kind": "x", "at": "2026-01-01T00:00:00Z"})
    await asyncio.to_thread(migrate, store_url)
    async with fresh_store(store_url) as store, store.read() as r:
        assert (await r.audit_head())[0] == 1


def test_migrate_creates_the_sqlite_parent_directory_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "signer.db"
    migrate(sqlite_url(path))
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)


async def test_unmigrated_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    with pytest.raises(ConfigurationError) as refused:
        await open_store(sqlite_url(path))
    assert "signer init" in str(refused.value)
    store = await open_store(sqlite_url(path), check_schema=False)
    try:
        assert await store.schema_revision() is None
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "mysql+aiomysql://u@h/db",
        "not a url",
    ],
)
async def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        await open_store(url)


async def test_bad_options_are_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "x.db")
    with pytest.raises(ValueError):
        await open_store(url, pool_size=0)
    with pytest.raises(ValueError):
        await open_store(url, sqlite_pragmas={"journal_mode": 1})
    with pytest.raises(ValueError):
        await open_store(url, sqlite_pragmas={"max_page_count": "1; DROP TABLE keys"})  # type: ignore[dict-item]


async def test_repr_names_no_url(store: Store, store_url: str) -> None:
    assert repr(store) in ("<Store backend=sqlite>", "<Store backend=postgresql>")
    assert store_url not in repr(store)
