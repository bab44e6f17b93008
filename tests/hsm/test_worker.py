"""The worker's contract: start-up refusals (F-16), lifecycle, deadlines (F-03), the queue bound,
caller cancellation and session churn (L-02, F-04), all against the real SoftHSM token."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from signer.config import Secret
from signer.errors import ConfigurationError, DeadlineExceeded, HsmUnavailable, Unavailable
from signer.hsm import Curve, Hsm
from signer.hsm.provision import SoftHsmToken
from tests.hsm.conftest import MakeHsm
from tests.hsm.support import verify

DIGEST = hashlib.sha256(b"worker tests").digest()


class Gate:
    """Holds the PKCS#11 thread inside a job until released (bounded, so a bug cannot hang the run)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def hold(self, ctx: Any) -> str:
        self.entered.set()
        self.released.wait(timeout=30)
        return "late result"

    async def wait_entered(self) -> None:
        # Waits on a helper thread so the event loop keeps running meanwhile.
        assert await asyncio.to_thread(self.entered.wait, 30)


# -- F-16: refusing to start ---------------------------------------------------------------------------


async def test_wrong_pin_missing_token_and_bad_module_refuse_to_start(
    softhsm_tokens: dict[str, SoftHsmToken], hsm: Hsm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    aux = softhsm_tokens["hsm-aux"]
    wrong_pin = Secret("wrong-pin-canary-7f3a9c")
    cases = [
        (Hsm(aux.module_path, aux.label, wrong_pin), "wrong PIN for token 'hsm-aux'"),
        (Hsm(aux.module_path, "no-such-token", aux.user_pin), "token 'no-such-token' not found"),
        (
            Hsm("/nonexistent/libpkcs11-missing.so", aux.label, aux.user_pin),
            "PKCS#11 module cannot be loaded: /nonexistent/libpkcs11-missing.so",
        ),
        (
            Hsm("/usr/lib/x86_64-linux-gnu/libc.so.6", aux.label, aux.user_pin),
            "PKCS#11 module cannot be loaded",
        ),
    ]
    for worker, message in cases:
        with pytest.raises(ConfigurationError) as info:
            await worker.start()
        assert message in str(info.value)
        for pin in (wrong_pin, aux.user_pin):
            assert pin.reveal() not in str(info.value)
            assert pin.reveal() not in repr(info.value)
            assert pin.reveal() not in repr(worker)
        with pytest.raises(HsmUnavailable):
            await worker.ping()
        await worker.close()
    for pin in (wrong_pin, aux.user_pin, softhsm_tokens["hsm-main"].user_pin):
        assert pin.reveal() not in caplog.text
    await hsm.ping()  # the failed starts left the session worker alone


async def test_lifecycle(softhsm_tokens: dict[str, SoftHsmToken]) -> None:
    token = softhsm_tokens["hsm-aux"]
    worker = Hsm(token.module_path, token.label, token.user_pin)
    with pytest.raises(HsmUnavailable):
        await worker.ping()  # not started
    await worker.start()
    with pytest.raises(ConfigurationError):
        await worker.start()
    await worker.ping()
    await worker.close()
    await worker.close()  # idempotent
    with pytest.raises(HsmUnavailable):
        await worker.sign("00" * 16, Curve.SECP256K1, DIGEST)


def test_constructor_refuses_bad_settings(softhsm_tokens: dict[str, SoftHsmToken]) -> None:
    token = softhsm_tokens["hsm-aux"]
    with pytest.raises(ConfigurationError):
        Hsm(token.module_path, token.label, token.user_pin.reveal())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Hsm(token.module_path, token.label, token.user_pin, deadline_seconds=0)
    with pytest.raises(ConfigurationError):
        Hsm(token.module_path, token.label, token.user_pin, queue_size=0)


async def test_another_spelling_of_the_module_path_is_the_same_module(
    hsm: Hsm, make_hsm: MakeHsm, tmp_path: Path
) -> None:
    """A symlink to the running module must not initialise it a second time (CKR_ALREADY_INITIALIZED)."""
    alias = tmp_path / "libalias-pkcs11.so"
    alias.symlink_to(os.path.realpath(hsm.module_path))
    aux = await make_hsm(module=str(alias))
    key = await aux.generate_key(Curve.ED25519, "alias")
    signature = await aux.sign(key.hsm_id, Curve.ED25519, b"alias")
    assert verify(Curve.ED25519, key.public_key, b"alias", signature)
    await hsm.ping()


def test_usable_from_several_event_loops(hsm: Hsm) -> None:
    """The session worker was started on another loop; each asyncio.run here is a new one."""

    async def one() -> bytes:
        key = await hsm.generate_key(Curve.P256, "loops")
        signature = await hsm.sign(key.hsm_id, Curve.P256, DIGEST)
        assert verify(Curve.P256, key.public_key, DIGEST, signature)
        return signature

    assert asyncio.run(one()) != asyncio.run(one())


# -- F-03: deadlines; late results are dropped, never delivered -------------------------------------


async def test_deadline_skips_queued_jobs_and_discards_late_results(make_hsm: MakeHsm) -> None:
    # Set-up and the final health check go through a worker with a generous deadline (same thread,
    # same token), so a loaded machine cannot turn them into timeouts; only the test's calls are short.
    patient = await make_hsm(deadline_seconds=30)
    aux = await make_hsm(deadline_seconds=0.3)
    key = await patient.generate_key(Curve.SECP256K1, "deadline")
    gate = Gate()
    held = asyncio.create_task(aux._run_on_worker(gate.hold))
    await gate.wait_entered()
    queued = asyncio.create_task(aux.sign(key.hsm_id, Curve.SECP256K1, DIGEST))

    for task in (held, queued):
        with pytest.raises(DeadlineExceeded) as info:
            await task
        assert info.value.code == "hsm_timeout"
    before = aux.stats
    gate.released.set()
    await aux._run_on_worker(lambda ctx: None, deadline=30)  # barrier: everything before it is done
    after = aux.stats
    assert after.discarded_late == before.discarded_late + 1  # the held job's "late result"
    assert after.skipped_expired == before.skipped_expired + 1  # the sign never reached the token

    signature = await patient.sign(key.hsm_id, Curve.SECP256K1, DIGEST)  # the thread is healthy
    assert verify(Curve.SECP256K1, key.public_key, DIGEST, signature)


async def test_cancelled_caller_job_is_skipped(make_hsm: MakeHsm) -> None:
    aux = await make_hsm(deadline_seconds=30)
    key = await aux.generate_key(Curve.ED25519, "cancelled")
    gate = Gate()
    held = asyncio.create_task(aux._run_on_worker(gate.hold))
    await gate.wait_entered()
    cancelled = asyncio.create_task(aux.sign(key.hsm_id, Curve.ED25519, b"never signed"))
    await asyncio.sleep(0)  # let it enqueue
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gate.released.set()
    assert await held == "late result"
    await aux.ping()
    assert aux.stats.skipped_expired == 1


async def test_queue_is_bounded(make_hsm: MakeHsm) -> None:
    aux = await make_hsm(queue_size=3, deadline_seconds=30)
    key = await aux.generate_key(Curve.P256, "bounded")
    gate = Gate()
    held = asyncio.create_task(aux._run_on_worker(gate.hold))  # slot 1
    await gate.wait_entered()
    waiting = [asyncio.create_task(aux.sign(key.hsm_id, Curve.P256, DIGEST)) for _ in range(2)]  # slots 2, 3
    await asyncio.sleep(0)
    with pytest.raises(Unavailable) as info:
        await aux.sign(key.hsm_id, Curve.P256, DIGEST)
    assert info.value.code == "hsm_overloaded" and info.value.status == 503
    assert aux.stats.overloaded == 1
    gate.released.set()
    await held
    for signature in await asyncio.gather(*waiting):
        assert verify(Curve.P256, key.public_key, DIGEST, signature)
    again = await asyncio.gather(*(aux.sign(key.hsm_id, Curve.P256, DIGEST) for _ in range(3)))
    assert len(again) == 3  # slots were given back


# -- L-02 / F-04: sessions closed or logged out under the worker's feet --------------------------------

BREAKERS = {
    "C_CloseAllSessions": lambda ctx: ctx.ckapi.close_all_sessions(ctx.slot_id),
    "C_CloseSession": lambda ctx: ctx.ckapi.close_session(ctx.session.handle),
    "C_Logout": lambda ctx: ctx.ckapi.logout(ctx.session.handle),
    "python-pkcs11 Session.close": lambda ctx: ctx.session.close(),
}


@pytest.mark.parametrize("breaker", list(BREAKERS), ids=list(BREAKERS))
async def test_lost_session_costs_one_relogin(make_hsm: MakeHsm, breaker: str) -> None:
    aux = await make_hsm()
    keys = [await aux.generate_key(curve, f"churn-{curve.value}") for curve in Curve]
    await aux._run_on_worker(BREAKERS[breaker])
    for key in keys:  # the first call repairs the session; the others find it repaired
        data = DIGEST if key.curve is not Curve.ED25519 else b"after churn"
        assert verify(key.curve, key.public_key, data, await aux.sign(key.hsm_id, key.curve, data))
    stats = aux.stats
    assert stats.relogins == 1
    assert stats.failed == 0 and stats.reconnects == 0


async def test_module_reinitialised_under_every_worker(hsm: Hsm, make_hsm: MakeHsm) -> None:
    """F-04, "SoftHSM state reset": C_Finalize + C_Initialize in this process (what a reconnect does)
    invalidates every session of every worker; each recovers with one re-login on its next call."""
    aux = await make_hsm()
    mine = await hsm.generate_key(Curve.SECP256K1, "reset-main")
    theirs = await aux.generate_key(Curve.P256, "reset-aux")
    before = hsm.stats.relogins

    def reset(ctx: Any) -> None:
        ctx.lib.finalize()
        ctx.lib.initialize()

    await aux._run_on_worker(reset)
    assert verify(
        Curve.SECP256K1, mine.public_key, DIGEST, await hsm.sign(mine.hsm_id, Curve.SECP256K1, DIGEST)
    )
    assert verify(Curve.P256, theirs.public_key, DIGEST, await aux.sign(theirs.hsm_id, Curve.P256, DIGEST))
    assert hsm.stats.relogins == before + 1
    assert aux.stats.relogins == 1


async def test_session_churn_under_load_never_reaches_callers(make_hsm: MakeHsm) -> None:
    aux = await make_hsm(deadline_seconds=10)
    key = await aux.generate_key(Curve.SECP256K1, "churn-load")
    breaks = 8

    async def signer(n: int) -> int:
        for i in range(40):
            digest = hashlib.sha256(b"%d/%d" % (n, i)).digest()
            assert verify(
                Curve.SECP256K1, key.public_key, digest, await aux.sign(key.hsm_id, Curve.SECP256K1, digest)
            )
        return 40

    async def breaker() -> None:
        for i in range(breaks):
            name = list(BREAKERS)[i % len(BREAKERS)]
            await aux._run_on_worker(BREAKERS[name])
            # One signature of our own between breaks: each break is repaired before the next one.
            await aux.sign(key.hsm_id, Curve.SECP256K1, DIGEST)

    done = await asyncio.gather(breaker(), *(signer(n) for n in range(16)))
    assert sum(done[1:]) == 640
    stats = aux.stats
    assert stats.relogins == breaks  # exactly one re-login per break: no retry storm
    assert stats.failed == 0
