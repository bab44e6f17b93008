"""Shared fixtures: one initialised installation and one running server per test session (SQLite).

Tests that need their own server (faults, several workers, PostgreSQL) start one through
``tests.service_harness`` and stop it themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator

import pytest

from signer.hsm import Hsm
from signer.hsm.provision import SoftHsmToken, provision_softhsm
from signer.hsm.worker import _Pkcs11Thread
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


# -- the SoftHSM installation every in-process suite shares (tests/hsm, tests/approvals) --------------
#
# SoftHSM reads SOFTHSM2_CONF once, at C_Initialize, and sees only the tokens that existed then: one
# session-wide installation, made before the module is first initialised in this process.

LABELS = ("hsm-main", "hsm-aux", "hsm-faults")
WORKER_THREAD = "signer-hsm-pkcs11"
RELAXED_DEADLINE = 10.0


@pytest.fixture(scope="session")
def softhsm_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SoftHsmToken]]:
    tokens = provision_softhsm(tmp_path_factory.mktemp("softhsm"), LABELS)
    patch = pytest.MonkeyPatch()
    patch.setenv("SOFTHSM2_CONF", str(tokens[0].conf_path))
    yield {token.label: token for token in tokens}
    patch.undo()


@pytest.fixture(scope="session")
def hsm(softhsm_tokens: dict[str, SoftHsmToken]) -> Iterator[Hsm]:
    """The session's worker on ``hsm-main``; started on a loop of its own, usable from every test's loop."""
    token = softhsm_tokens["hsm-main"]
    # Deadlines are tested where a test sets them; elsewhere a loaded 2-core machine must not flake.
    worker = Hsm(token.module_path, token.label, token.user_pin, deadline_seconds=RELAXED_DEADLINE)
    asyncio.run(worker.start())
    yield worker
    asyncio.run(worker.close())
    if _Pkcs11Thread._current is None:  # no other suite's Hsm is still running in this process
        leftover = [t.name for t in threading.enumerate() if t.name == WORKER_THREAD]
        assert not leftover, "the PKCS#11 thread outlived every Hsm"
