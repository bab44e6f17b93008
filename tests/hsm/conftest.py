"""Fixtures for the HSM suite: a real SoftHSM2 installation made per test session, and Hsm workers on it.

Every token this process will use is created up front, in subprocesses, before the module is first
initialised here: SoftHSM only sees the tokens that existed at ``C_Initialize``. ``SOFTHSM2_CONF`` is set
for the whole session (SoftHSM reads it at ``C_Initialize``); any other suite running in the same pytest
process must use these tokens rather than a configuration of its own.

Tokens: ``hsm-main`` (the session ``hsm``), ``hsm-aux`` (per-test workers that break things and count),
``hsm-faults`` (reached through the compiled fault shim).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from signer.hsm import Hsm
from signer.hsm.provision import SoftHsmToken, provision_softhsm
from signer.hsm.worker import _Pkcs11Thread
from tests.hsm.support import FaultShim

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
def faultshim(
    tmp_path_factory: pytest.TempPathFactory, softhsm_tokens: dict[str, SoftHsmToken]
) -> Iterator[FaultShim]:
    shim = FaultShim.build(tmp_path_factory.mktemp("faultshim"))
    if shim is None:
        pytest.skip("no C compiler or PKCS#11 header to build the fault shim")
    patch = pytest.MonkeyPatch()
    # Read by the shim when python-pkcs11 first loads it: forward to the very module the tests use.
    patch.setenv("FAULTSHIM_TARGET", softhsm_tokens["hsm-main"].module_path)
    yield shim
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


@pytest.fixture(autouse=True)
def no_pin_in_logs(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A-14 for this suite: whatever a test did, no token PIN shows up in any log record of ours."""
    caplog.set_level(logging.DEBUG, logger="signer")
    yield
    if "softhsm_tokens" in request.fixturenames:
        tokens: dict[str, SoftHsmToken] = request.getfixturevalue("softhsm_tokens")
        logged = caplog.text
        for token in tokens.values():
            assert token.user_pin.reveal() not in logged
            assert token.so_pin.reveal() not in logged


MakeHsm = Callable[..., Awaitable[Hsm]]


@pytest.fixture
async def make_hsm(softhsm_tokens: dict[str, SoftHsmToken], hsm: Hsm) -> AsyncIterator[MakeHsm]:
    """Start extra workers for one test (closed at its end). Depends on ``hsm`` so that the real module
    is already initialised in this process (the fault shim then borrows it)."""
    made: list[Hsm] = []

    async def factory(label: str = "hsm-aux", *, module: str | None = None, **options: Any) -> Hsm:
        token = softhsm_tokens[label]
        options.setdefault("deadline_seconds", RELAXED_DEADLINE)
        worker = Hsm(module or token.module_path, token.label, token.user_pin, **options)
        await worker.start()
        made.append(worker)
        return worker

    yield factory
    for worker in made:
        await worker.close()


@pytest.fixture
async def faulty(faultshim: FaultShim, make_hsm: MakeHsm) -> AsyncIterator[tuple[Hsm, FaultShim]]:
    """A worker on ``hsm-faults`` through the fault shim, faults off; reconnects are not throttled."""
    faultshim.reset()
    worker = await make_hsm("hsm-faults", module=str(faultshim.path), reconnect_interval=0.0)
    yield worker, faultshim
    faultshim.reset()
