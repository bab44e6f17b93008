"""Shared database fixtures: a clean, migrated database for every test, on SQLite and on PostgreSQL.

Reuse from any test package's ``conftest.py``::

    from tests.dbfixtures import (  # noqa: F401
        pg_database_url, pg_server_url, pg_store_url, sqlite_store_url, sqlite_template, store, store_url,
    )

Then a test takes ``store_url`` (a URL string) or ``store`` (an open ``Store`` on that URL), or for a
one-backend test ``sqlite_store_url`` / ``pg_store_url``::

    async def test_something(store):                  # runs twice: [sqlite] and [postgres]
        ...
    async def test_two_processes(store_url):
        async with fresh_store(store_url) as a, fresh_store(store_url) as b:
            ...

- ``store_url`` is parametrised over ``STORE_BACKENDS`` = ["sqlite", "postgres"]. SQLite: a copy of a
  database migrated once per session, in the test's ``tmp_path``. PostgreSQL: one database per session
  (``CREATE DATABASE signer_test_<random>`` through the server named by ``SIGNER_TEST_PG_URL``,
  migrated once, dropped at the end), emptied before each test (every table truncated, the audit head and
  ``meta`` put back as migrated), so no test sees another's rows.
- ``SIGNER_TEST_PG_URL`` (e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) unset: the
  postgres cases are skipped. Set but unreachable: they FAIL, so a CI that means to test PostgreSQL
  cannot silently skip it.
- ``fresh_store(url, **open_store_kwargs)`` opens a ``Store`` and always closes it (no leaked pool
  threads or connections). It does not empty the database: ``store_url`` already did.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from signer.audit import GENESIS_HASH
from signer.store import Store, migrate, open_store

PG_ENV = "SIGNER_TEST_PG_URL"
STORE_BACKENDS = ["sqlite", "postgres"]
_KEEP_TABLES = {"alembic_version", "audit_head", "meta"}

R = TypeVar("R")


def run_sync(factory: Callable[[], Awaitable[R]]) -> R:
    """Run a coroutine to completion on a private thread and loop (safe inside or outside a loop)."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append((True, asyncio.run(_call(factory))))
        except BaseException as exc:
            result.append((False, exc))

    worker = threading.Thread(target=target, name="dbfixtures")
    worker.start()
    worker.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


async def _call(factory: Callable[[], Awaitable[R]]) -> R:
    return await factory()


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a DSN asyncpg accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_execute(url: str, *statements: str) -> list[Any]:
    """Run statements on a short-lived asyncpg connection; returns the rows of the last one."""
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        rows: list[Any] = []
        for statement in statements:
            rows = await connection.fetch(statement)
        return rows
    finally:
        await connection.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set")
    return url


@contextmanager
def private_pg_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (``<prefix>_<random>``) on the server ``PG_ENV`` names,
    dropped afterwards. Skipped when ``PG_ENV`` is unset; failed when it is set but the server cannot be
    used, so a CI that means to test PostgreSQL cannot skip it silently."""
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        pytest.skip(f"{PG_ENV} is not set")
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        run_sync(lambda: pg_execute(server_url, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.fail(f"{PG_ENV} is set but PostgreSQL cannot be used: {type(exc).__name__}: {exc}")
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        run_sync(lambda: pg_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_database_url(pg_server_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database private to this test session."""
    with private_pg_database("signer_test") as url:
        try:
            migrate(url)
            meta_rows = run_sync(lambda: pg_execute(url, "SELECT name, value FROM meta"))
            _PG_META[url] = [(r["name"], r["value"]) for r in meta_rows]
            yield url
        finally:
            _PG_META.pop(url, None)


_PG_META: dict[str, list[tuple[str, str]]] = {}


async def _pg_reset(url: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        tables = [
            r["tablename"]
            for r in await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if r["tablename"] not in _KEEP_TABLES
        ]
        async with connection.transaction():
            if tables:
                await connection.execute(
                    "TRUNCATE " + ", ".join(f'"{name}"' for name in tables) + " RESTART IDENTITY CASCADE"
                )
            await connection.execute(
                "UPDATE audit_head SET seq = 0, hash = $1, epoch = 0 WHERE id = 1", GENESIS_HASH
            )
            await connection.execute("DELETE FROM meta")
            await connection.executemany("INSERT INTO meta (name, value) VALUES ($1, $2)", _PG_META[url])
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; tests get copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "signer.db"
    migrate(sqlite_url(path))
    return path


@pytest.fixture
def sqlite_store_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A clean, migrated SQLite database (a copy of the session template) in this test's tmp_path."""
    path = tmp_path / "db" / "signer.db"
    path.parent.mkdir()
    shutil.copyfile(sqlite_template, path)
    return sqlite_url(path)


@pytest.fixture
def pg_store_url(pg_database_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    run_sync(lambda: _pg_reset(pg_database_url))
    return pg_database_url


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of a clean, migrated database for this test, once per backend (see the module docstring)."""
    name = "sqlite_store_url" if request.param == "sqlite" else "pg_store_url"
    url: str = request.getfixturevalue(name)
    return url


@asynccontextmanager
async def fresh_store(url: str, **kwargs: Any) -> AsyncIterator[Store]:
    """An open Store on ``url``, closed on exit whatever happens."""
    store = await open_store(url, **kwargs)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with fresh_store(store_url) as opened:
        yield opened
