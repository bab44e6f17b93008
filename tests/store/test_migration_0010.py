"""Migration 0010_policy_attachment_resources, on SQLite and PostgreSQL: attachments to keys from before it
become key references (same place, same judging), scope attachments stay; a row naming two places or half
a reference is refused by the database; attaching to a secret round-trips; downgrading refuses while an
attachment to a secret is in force and otherwise gives the key attachments their ``key_id`` back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from signer.store import AttachmentRecord, migrate
from signer.store.migrate import _config
from tests.dbfixtures import fresh_store, private_pg_database, sqlite_url

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BEFORE = "0009_audit_checkpoints"


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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "signer.db")
    else:
        with private_pg_database("signer_m0010") as url:
            yield url


def _execute(url: str, *statements: tuple[str, dict[str, object]]) -> list[list[tuple[object, ...]]]:
    async def run() -> list[list[tuple[object, ...]]]:
        engine = create_async_engine(url)
        try:
            out = []
            async with engine.begin() as connection:
                for sql, params in statements:
                    result = await connection.execute(sa.text(sql), params)
                    out.append([tuple(r) for r in result] if result.returns_rows else [])
            return out
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_key_attachments_become_references_and_downgrade_guards_secret_ones(database_url: str) -> None:
    url = database_url
    _alembic("upgrade", url, BEFORE)
    _execute(
        url,
        (
            "INSERT INTO policy_versions (policy_id, version, document, digest, created_at) "
            "VALUES ('limits', 1, '{}', 'sha256:00', :at)",
            {"at": NOW},
        ),
        (
            "INSERT INTO policy_attachments (id, policy_id, version, scope, key_id, mode, created_at) "
            "VALUES ('att_key', 'limits', 1, NULL, 'key_old', 'live', :at), "
            "('att_scope', 'limits', 1, 'acme', NULL, 'shadow', :at)",
            {"at": NOW},
        ),
    )
    migrate(url)

    secret = AttachmentRecord("att_secret", "limits", 1, None, "secret", "sec_1", "live", None, NOW)

    async def store_side() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                old = await reader.policies.get_attachment("att_key")
                scoped = await reader.policies.get_attachment("att_scope")
            assert old is not None and (old.resource_type, old.resource_id, old.scope) == (
                "key",
                "key_old",
                None,
            )
            assert old.key_id == "key_old"
            assert scoped is not None and (scoped.scope, scoped.resource_type, scoped.resource_id) == (
                "acme",
                None,
                None,
            )
            async with store.write() as writer:
                assert await writer.policies.attach(secret) == []
            async with store.read() as reader:
                assert await reader.policies.get_attachment("att_secret") == secret
                in_force = [a.id for a, _ in await reader.policies.attached_documents()]
            assert in_force == ["att_key", "att_scope", "att_secret"]

    asyncio.run(store_side())

    # The database itself refuses two places, or half a reference.
    for values in ("'acme', 'key', 'key_x'", "NULL, 'key', NULL", "NULL, NULL, 'key_x'"):
        with pytest.raises(sa.exc.IntegrityError):
            _execute(
                url,
                (
                    "INSERT INTO policy_attachments (id, policy_id, version, scope, resource_type, "
                    f"resource_id, mode, created_at) VALUES ('att_bad', 'limits', 1, {values}, 'live', :at)",
                    {"at": NOW},
                ),
            )

    with pytest.raises(RuntimeError, match="other resources than keys"):
        _alembic("downgrade", url, BEFORE)
    migrate(url)  # anything stepped down before 0010 refused comes back
    _execute(url, ("UPDATE policy_attachments SET detached_at = :at WHERE id = 'att_secret'", {"at": NOW}))
    _alembic("downgrade", url, BEFORE)
    (rows,) = _execute(url, ("SELECT id, scope, key_id FROM policy_attachments ORDER BY id", {}))
    assert rows == [("att_key", None, "key_old"), ("att_scope", "acme", None)]
    migrate(url)
