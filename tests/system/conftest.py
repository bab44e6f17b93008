"""Fixtures for the system tests: servers started per test and always stopped, fresh PostgreSQL databases.

``launch`` starts ``signer serve`` through the lead's harness and, at teardown, stops every server it
started, makes sure no worker process outlived its supervisor, and scans each server's log for the
installation's PINs and the admin's tokens (invariant I3). ``pg_url`` makes a throw-away PostgreSQL
database on the server named by ``SIGNER_TEST_PG_URL`` (unset: skip; set but unreachable: fail) and
drops it afterwards, whatever state the test left it in.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import PG_ENV, private_pg_database
from tests.service_harness import Installation, Server, init_installation, start_server
from tests.system.support import (
    assert_no_secret,
    children_of,
    installation_secrets,
    wait_exited,
)


@pytest.fixture
def own_installation(tmp_path: Path) -> Installation:
    """A fresh data directory, token and SQLite database for this test alone."""
    return init_installation(tmp_path / "data")


@pytest.fixture
def launch() -> Iterator[Callable[..., Server]]:
    started: list[tuple[Server, list[int]]] = []

    def start(installation: Installation, **kwargs: Any) -> Server:
        server = start_server(installation, **kwargs)
        workers = children_of(server.process.pid) if kwargs.get("workers", 1) > 1 else []
        started.append((server, workers))
        return server

    yield start

    problems = []
    for server, workers in started:
        server.stop()
        # Shown by pytest only when the test failed: the server's side of the story.
        tail = "\n".join(server.log_text().splitlines()[-40:])
        print(f"--- {server.log_path.name} (last lines) ---\n{tail}")
        for pid in workers:
            try:
                wait_exited(pid, 30, f"worker {pid} to exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)  # our own orphan: never leave it behind
                problems.append(f"worker {pid} outlived its supervisor")
        assert_no_secret(server.log_text(), installation_secrets(server.installation), "the server log")
    assert not problems, problems


@pytest.fixture
def pg_url() -> Iterator[str]:
    with private_pg_database("signer_sys") as url:
        yield url


@pytest.fixture
def pg_admin_url() -> str:
    """The PostgreSQL server's own database: where a test stands to act on another database."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set")
    return url
