"""Shared fixtures: one initialised installation and one running server per test session (SQLite).

Tests that need their own server (faults, several workers, PostgreSQL) start one through
``tests.service_harness`` and stop it themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.service_harness import Installation, Server, init_installation, start_server

_names = itertools.count()


@pytest.fixture(scope="session")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    return init_installation(tmp_path_factory.mktemp("signer-data"))


@pytest.fixture(scope="session")
def server(installation: Installation) -> Iterator[Server]:
    running = start_server(installation)
    yield running
    running.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"{base}-{next(_names)}"
