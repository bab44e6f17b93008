"""Fixtures for the HSM suite: a real SoftHSM2 installation made per test session, and Hsm workers on it.

Every token this process will use is created up front, in subprocesses, before the module is first
initialised here: SoftHSM only sees the tokens that existed at ``C_Initialize``. ``SOFTHSM2_CONF`` is set
for the whole session (SoftHSM reads it at ``C_Initialize``); any other suite running in the same pytest
process must use these tokens rather than a configuration of its own.

Tokens: ``hsm-main`` (the session ``hsm``), ``hsm-aux`` (per-test workers that break things and count),
``hsm-faults`` (reached through the compiled fault shim). ``softhsm_tokens`` and ``hsm`` themselves live in
``tests/conftest.py``: every suite in the process must share one SoftHSM configuration (the approvals
suite uses them too).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from signer.hsm import Hsm
from signer.hsm.provision import SoftHsmToken
from tests.conftest import LABELS, RELAXED_DEADLINE, WORKER_THREAD  # noqa: F401 - shared with the root
from tests.hsm.support import FaultShim


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
