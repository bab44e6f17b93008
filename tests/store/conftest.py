"""Store conformance suite: every test runs on SQLite and on PostgreSQL (see tests/dbfixtures.py)."""

from __future__ import annotations

from tests.dbfixtures import (  # noqa: F401
    pg_database_url,
    pg_server_url,
    pg_store_url,
    sqlite_store_url,
    sqlite_template,
    store,
    store_url,
)
