"""Approvals suite: the real services in process, on a real SoftHSM token and a real database (SQLite and
PostgreSQL), with a clock the test controls. The HSM fixtures are the HSM suite's own (one SoftHSM
configuration per pytest process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import signer.services.approvals as approvals_module
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
from tests.hsm.conftest import hsm, softhsm_tokens  # noqa: F401


@pytest.fixture
async def world(store: Store, hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:  # noqa: F811
    made = await make_world(store, hsm)

    # TEMPORARY until main's principal groups are merged: membership from the world's dict.
    async def groups_of(reader, principal_id):
        return frozenset(g for g, members in made.groups.items() if principal_id in members)

    monkeypatch.setattr(approvals_module, "_groups_of", groups_of)
    yield made
