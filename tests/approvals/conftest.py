"""Approvals suite: the real services in process, on a real SoftHSM token and a real database (SQLite and
PostgreSQL), with a clock the test controls. ``hsm`` is the session's worker from ``tests/conftest.py``
(one SoftHSM configuration per pytest process, shared with the HSM suite)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from signer.hsm import Hsm
from signer.store import Store
from tests.approvals import webdriver
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


@pytest.fixture
def browser() -> Iterator[webdriver.Browser]:
    """Headless Chromium for the console's browser tests. scripts/setup --test installs it on Debian;
    elsewhere the tests skip, but under CI (CI set) a missing browser fails instead of skipping."""
    if not webdriver.available():
        message = "chromium and chromedriver are not installed (scripts/setup --test installs them on Debian)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    opened = webdriver.Browser()
    yield opened
    opened.close()
