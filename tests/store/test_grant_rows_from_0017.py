"""Grants written before grants took resource references (a database at 0017_console_books), upgraded
to the newest revision, on SQLite and PostgreSQL: key, secret and scope grants read back as references
(``resource`` / ``scope``, with the older ``resource_type`` / ``resource_id``), the policy engine takes
them, and authorisation reaches what they named.

The ``grants`` table has stored ``(resource_type, resource_id)`` since 0001_initial, so naming resources
by reference needed no migration of its rows; this test keeps that true whatever migrations follow.
"""

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

from signer.services.admin import grant_view
from signer.services.authorization import holds_any_grant, to_grant
from signer.services.resources import ResourceRef
from signer.services.secret_kind import SECRETS
from signer.store import migrate
from signer.store.migrate import _config
from tests.dbfixtures import fresh_store, private_pg_database, sqlite_url

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BEFORE = "0017_console_books"


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
        with private_pg_database("signer_grant_rows") as url:
            yield url


def _execute(url: str, *statements: tuple[str, dict[str, object]]) -> None:
    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                for sql, params in statements:
                    await connection.execute(sa.text(sql), params)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_key_and_secret_grants_from_0017_read_as_references(database_url: str) -> None:
    url = database_url
    _alembic("upgrade", url, BEFORE)
    grant = (
        "INSERT INTO grants (id, principal_id, group_name, resource_type, resource_id, operations, "
        "created_at, no_access, value_budgets) VALUES (:id, :principal, :group, :type, :rid, :ops, :at, "
        ":no_access, '{}')"
    )
    _execute(
        url,
        (
            "INSERT INTO principals (id, name, role, created_at) VALUES ('prn_old', 'old', 'service', :at)",
            {"at": NOW},
        ),
        *(
            (
                grant,
                {
                    "id": gid,
                    "principal": None if group else "prn_old",
                    "group": group,
                    "type": kind,
                    "rid": rid,
                    "ops": ops,
                    "at": NOW,
                    "no_access": ops == "[]",
                },
            )
            for gid, group, kind, rid, ops in (
                ("grt_key", None, "key", "key_old", '["sign_transaction"]'),
                ("grt_secret", None, "secret", "sec_old", '["read_value"]'),
                ("grt_scope", "ops", "scope", "acme", '["sign_message", "list"]'),
                ("grt_closed", "ops", "scope", "acme/closed", "[]"),  # the same group: it closes that part
            )
        ),
    )
    migrate(url)

    async def read() -> None:
        async with fresh_store(url) as store:
            async with store.read() as reader:
                grants = {g.id: g for g in await reader.grants.all()}
                held = await reader.grants.for_principal("prn_old", frozenset({"ops"}), NOW)
        views = {gid: (grant_view(g)["resource"], grant_view(g)["scope"]) for gid, g in grants.items()}
        assert views == {
            "grt_key": ({"type": "key", "id": "key_old"}, None),
            "grt_secret": ({"type": "secret", "id": "sec_old"}, None),
            "grt_scope": (None, "acme"),
            "grt_closed": (None, "acme/closed"),
        }
        assert (
            grant_view(grants["grt_key"])["resource_type"],
            grant_view(grants["grt_key"])["resource_id"],
        ) == (
            "key",
            "key_old",
        )
        for record in grants.values():
            to_grant(record)  # the policy engine takes every one
        assert SECRETS.operations >= {"read_value"}  # the secret kind is registered (imported above)
        reached = {
            ref: holds_any_grant(held, ref)
            for ref in (
                ResourceRef("key", "key_old", "elsewhere", "active"),
                ResourceRef("secret", "sec_old", "elsewhere", "active"),
                ResourceRef("secret", "sec_other", "elsewhere", "active"),
                ResourceRef("key", "key_other", "acme/payments", "active"),
                ResourceRef("key", "key_shut", "acme/closed", "active"),
            )
        }
        assert list(reached.values()) == [True, True, False, True, False]

    asyncio.run(read())
