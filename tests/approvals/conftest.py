"""Approvals suite: the real services in process, on a real SoftHSM token and a real database (SQLite and
PostgreSQL), with a clock the test controls. ``hsm`` is the session's worker from ``tests/conftest.py``
(one SoftHSM configuration per pytest process, shared with the HSM suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from signer.hsm import Hsm
from signer.store import Store
from tests.approvals.support import World, make_world
from tests.dbfixtures import (  # noqa: F401
    pg_database_url,
    pg_server_url,
    pg_store_url,
    sqlite_store_url,
    sqlite_template,
    store,
    store_url,
)


@pytest.fixture
async def world(store: Store, hsm: Hsm) -> AsyncIterator[World]:  # noqa: F811
    yield await make_world(store, hsm)
