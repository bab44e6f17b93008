"""Migration 0007_secret_backends: secrets from before it are sealed; a secret held by reference is stored
without versions and read back; downgrading refuses while one exists (it would read as a sealed secret
with no version)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from signer.store import SecretRecord, migrate
from tests.dbfixtures import fresh_store, sqlite_url
from tests.store.test_migration_0005 import _alembic

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _record(**changes: object) -> SecretRecord:
    base = SecretRecord(
        id="sec_ref",
        name="stripe",
        folder="acme/payments",
        description="",
        tags=[],
        category="api_key",
        owner_type="group",
        owner="payments",
        consumers=[],
        origin="provided",
        generation=None,
        current_version=0,
        created_at=NOW,
        created_by=None,
        updated_at=NOW,
        updated_by=None,
        backend="openbao_kv2",
        reference="kv/data/payments/stripe",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_secrets_from_before_0007_are_sealed_and_references_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "signer.db"
    url = sqlite_url(path)
    _alembic("upgrade", url, "0006_secrets")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO secrets (id, name, folder, description, tags, category, owner_type, owner, "
            "consumers, origin, current_version, created_at, updated_at) VALUES "
            "('sec_old', 'old', 'acme', '', '[]', 'other', 'group', 'g', '[]', 'provided', 1, ?, ?)",
            ("2026-12-01 00:00:00.000000", "2026-12-01 00:00:00.000000"),
        )
    migrate(url)
    held = _record()

    async def store_side() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                old = await reader.secrets.get("sec_old")
            assert old is not None and (old.backend, old.reference) == ("sealed", None)
            async with store.write() as writer:
                await writer.secrets.insert(held, None)
                for bad in (
                    _record(id="sec_b1", name="b1", reference=None),  # a backend needs a reference
                    _record(id="sec_b2", name="b2", backend="sealed"),  # sealed has none
                    _record(id="sec_b3", name="b3", backend="elsewhere"),
                    _record(id="sec_b4", name="b4", current_version=1),  # no version to be current
                ):
                    with pytest.raises(ValueError):
                        await writer.secrets.insert(bad, None)
            async with store.read() as reader:
                assert await reader.secrets.get("sec_ref") == held
                assert await reader.secrets.versions("sec_ref") == []

    asyncio.run(store_side())
    with pytest.raises(RuntimeError, match="held by reference"):
        _alembic("downgrade", url, "0006_secrets")
    migrate(url)

    async def delete() -> None:
        async with fresh_store(url) as store, store.write() as writer:
            assert await writer.secrets.delete("sec_ref")

    asyncio.run(delete())
    _alembic("downgrade", url, "0006_secrets")
    with sqlite3.connect(path) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(secrets)")}
    assert "backend" not in columns and "reference" not in columns and "folder" in columns
