"""Alembic environment for the signer's database (SQLite via aiosqlite, PostgreSQL via asyncpg).

Run through ``signer.store.migrate(url)`` (or ``alembic -c signer/store/migrations/alembic.ini`` with
``-x url=...``). All revisions run in one transaction: SQLite and PostgreSQL both have transactional DDL,
so a failed upgrade leaves the previous schema intact. On PostgreSQL an advisory lock serialises two
processes migrating at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import event, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from signer.store.schema import metadata

config = context.config

# Any fixed 64-bit number; only migrations take it.
_PG_MIGRATION_LOCK = 0x5167_6E65_7231


def _url() -> str:
    url = config.attributes.get("signer_url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL given to the migrations")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.get_backend_name() in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _do_run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        context.run_migrations()


async def _run_online() -> None:
    url = _url()
    engine = create_async_engine(url, poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # WAL is a property of the file: set once here, it holds for every later connection.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Any) -> None:
            # With the driver's implicit transactions off, DDL runs inside this one transaction.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_online())
