"""Migration 0004_console_sessions on a database that already has webhooks: the rows keep working (no
salt: the secret stays the one derived from the group name alone) and rotate to salted secrets."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command

from signer.store import migrate
from signer.store.migrate import _config
from tests.dbfixtures import fresh_store, sqlite_url


def _upgrade_to(url: str, revision: str) -> None:
    failure: list[BaseException] = []

    def run() -> None:  # Alembic's environment runs its own event loop: not on the caller's.
        try:
            command.upgrade(_config(url), revision)
        except BaseException as exc:  # re-raised below
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def test_webhooks_from_before_0004_keep_their_secret_and_rotate(tmp_path: Path) -> None:
    path = tmp_path / "signer.db"
    url = sqlite_url(path)
    _upgrade_to(url, "0003")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO approval_webhooks (group_name, url, created_at, created_by) VALUES (?, ?, ?, ?)",
            ("treasury", "https://hooks.example.com/h", "2026-11-30 00:00:00.000000", None),
        )
    migrate(url)

    async def check() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                before = await reader.webhooks.get("treasury")
            assert before is not None and before.secret_salt is None and before.previous_secret_until is None
            until = datetime.now(UTC) + timedelta(hours=1)
            async with store.write() as writer:
                rotated = await writer.webhooks.rotate_secret("treasury", "a1" * 16, until)
                assert await writer.webhooks.rotate_secret("nobody", "b2" * 16, until) is None
            assert rotated is not None
            assert rotated.secret_salt == "a1" * 16 and rotated.previous_secret_salt is None
            async with store.read() as reader:
                after = await reader.webhooks.get("treasury")
            assert after == rotated

    asyncio.run(check())
