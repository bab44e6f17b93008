"""Injected PKCS#11 faults (the compiled shim in front of the real SoftHSM): busy tokens (L-11), device
errors (F-02), slow signing past the deadline (F-03), sessions that stay broken (F-04: no retry storm)."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import pytest

from signer.errors import DeadlineExceeded, HsmUnavailable
from signer.hsm import Curve, Hsm
from signer.hsm.provision import SoftHsmToken
from tests.hsm.conftest import MakeHsm
from tests.hsm.support import (
    CKR_DEVICE_ERROR,
    CKR_FUNCTION_FAILED,
    CKR_OPERATION_ACTIVE,
    CKR_SESSION_HANDLE_INVALID,
    CKR_TOKEN_NOT_PRESENT,
    FaultShim,
    verify,
)

DIGEST = hashlib.sha256(b"fault tests").digest()


@pytest.mark.parametrize(
    "rv", [CKR_FUNCTION_FAILED, CKR_OPERATION_ACTIVE], ids=["FUNCTION_FAILED", "OPERATION_ACTIVE"]
)
async def test_transient_errors_get_three_retries_then_unavailable(
    faulty: tuple[Hsm, FaultShim], rv: int
) -> None:
    hsm, shim = faulty
    key = await hsm.generate_key(Curve.SECP256K1, "transient")

    shim.fail_sign_init(rv, count=3)  # three failures, then the token answers
    signature = await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
    assert verify(Curve.SECP256K1, key.public_key, DIGEST, signature)
    assert (shim.sign_init_calls, hsm.stats.transient_retries) == (4, 3)

    shim.reset()
    shim.fail_sign_init(rv, count=-1)  # never answers
    with pytest.raises(HsmUnavailable) as info:
        await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
    assert info.value.code == "hsm_unavailable" and info.value.status == 503
    assert shim.sign_init_calls == 4  # one try and three retries, no more
    assert hsm.stats.transient_retries == 6

    shim.reset()
    assert verify(
        Curve.SECP256K1, key.public_key, DIGEST, await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
    )
    assert hsm.stats.reconnects == 0  # busy is not broken


async def test_busy_token_on_30_percent_of_calls(faulty: tuple[Hsm, FaultShim]) -> None:
    """L-11: every answer is a verified signature or hsm_unavailable; never more than 4 attempts a job."""
    hsm, shim = faulty
    key = await hsm.generate_key(Curve.SECP256K1, "busy")
    shim.fail_sign_init(CKR_FUNCTION_FAILED, count=-1, percent=30, seed=20240611)
    outcomes: Counter[str] = Counter()
    jobs = 200
    for i in range(jobs):
        digest = hashlib.sha256(b"busy %d" % i).digest()
        try:
            signature = await hsm.sign(key.hsm_id, Curve.SECP256K1, digest)
        except HsmUnavailable:
            outcomes["unavailable"] += 1
        else:
            assert verify(Curve.SECP256K1, key.public_key, digest, signature)
            outcomes["signed"] += 1
    stats = hsm.stats
    assert outcomes["signed"] + outcomes["unavailable"] == jobs
    assert outcomes["signed"] >= jobs * 0.9
    assert shim.injected > 0
    assert shim.sign_init_calls == jobs + stats.transient_retries
    assert stats.transient_retries <= 3 * jobs
    assert outcomes["unavailable"] * 4 <= shim.injected  # each refusal took exactly four failed attempts


async def test_device_error_fails_fast_then_recovers(faulty: tuple[Hsm, FaultShim]) -> None:
    """F-02: the token signed, then reported CKR_DEVICE_ERROR: nothing is returned, nothing retried."""
    hsm, shim = faulty
    key = await hsm.generate_key(Curve.P256, "device-error")
    shim.fail_after_sign(CKR_DEVICE_ERROR, count=1)
    with pytest.raises(HsmUnavailable) as info:
        await hsm.sign(key.hsm_id, Curve.P256, DIGEST)
    assert info.value.code == "hsm_unavailable"
    assert "DEVICE" not in str(info.value)  # generic message, no module detail
    assert shim.sign_init_calls == 1 and shim.injected == 1
    signature = await hsm.sign(key.hsm_id, Curve.P256, DIGEST)  # reconnects first
    assert verify(Curve.P256, key.public_key, DIGEST, signature)
    assert hsm.stats.reconnects == 1


async def test_token_not_present_then_back(faulty: tuple[Hsm, FaultShim]) -> None:
    hsm, shim = faulty
    key = await hsm.generate_key(Curve.ED25519, "not-present")
    shim.fail_sign_init(CKR_TOKEN_NOT_PRESENT, count=1)
    with pytest.raises(HsmUnavailable):
        await hsm.sign(key.hsm_id, Curve.ED25519, b"m")
    assert verify(Curve.ED25519, key.public_key, b"m", await hsm.sign(key.hsm_id, Curve.ED25519, b"m"))
    assert hsm.stats.reconnects == 1


async def test_session_that_stays_broken_gets_one_relogin_per_job(faulty: tuple[Hsm, FaultShim]) -> None:
    """F-04: no retry storm. A job gets one re-login and one retry; the next job reconnects once."""
    hsm, shim = faulty
    key = await hsm.generate_key(Curve.SECP256K1, "broken-session")
    shim.fail_sign_init(CKR_SESSION_HANDLE_INVALID, count=-1)
    for job in range(1, 4):
        with pytest.raises(HsmUnavailable):
            await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
        assert shim.sign_init_calls == 2 * job
        assert hsm.stats.relogins == job
    assert hsm.stats.reconnects == 2  # before jobs 2 and 3
    shim.reset()
    assert verify(
        Curve.SECP256K1, key.public_key, DIGEST, await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
    )


async def test_slow_token_past_the_deadline(faultshim: FaultShim, make_hsm: MakeHsm) -> None:
    """F-03: the token takes longer than the deadline; the caller gets hsm_timeout and the signature
    the token produced later is dropped on arrival, never handed to anyone."""
    faultshim.reset()
    # Set-up and the final check use a generous deadline (same module, token and thread): only the
    # call under test is short, so a loaded machine cannot turn the rest into timeouts.
    patient = await make_hsm("hsm-faults", module=str(faultshim.path), deadline_seconds=30)
    hsm = await make_hsm("hsm-faults", module=str(faultshim.path), deadline_seconds=0.5)
    key = await patient.generate_key(Curve.SECP256K1, "slow")
    faultshim.sign_delay_ms(1500)
    try:
        with pytest.raises(DeadlineExceeded) as info:
            await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
        assert info.value.code == "hsm_timeout" and info.value.status == 504
        await hsm._run_on_worker(lambda ctx: None, deadline=30)  # barrier behind the slow signature
        stats = hsm.stats
        assert stats.discarded_late == 1  # the token did sign; nobody received it
        assert stats.completed >= 2
    finally:
        faultshim.reset()
    signature = await patient.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
    assert verify(Curve.SECP256K1, key.public_key, DIGEST, signature)


async def test_pin_refused_at_run_time_is_never_tried_again(
    faulty: tuple[Hsm, FaultShim], hsm: Hsm, softhsm_tokens: dict[str, SoftHsmToken]
) -> None:
    """The PIN changes under a running worker and its session is lost: one login attempt is refused,
    and then the worker stops logging in (a real HSM locks the PIN after a few wrong tries)."""
    worker, shim = faulty
    token = softhsm_tokens["hsm-faults"]
    key = await worker.generate_key(Curve.SECP256K1, "pin-latch")
    old_pin, new_pin = token.user_pin.reveal(), "changed-under-the-worker"
    await worker._run_on_worker(lambda ctx: ctx.session.set_pin(old_pin, new_pin))
    try:
        await worker._run_on_worker(lambda ctx: ctx.ckapi.close_all_sessions(ctx.slot_id))
        logins = shim.login_calls
        for _ in range(4):
            with pytest.raises(HsmUnavailable) as info:
                await worker.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
            assert info.value.code == "hsm_unavailable"
        with pytest.raises(HsmUnavailable):
            await worker.ping()
        assert shim.login_calls == logins + 1
    finally:
        # Put the PIN back for the rest of the session (through the one PKCS#11 thread, like all).
        def restore(ctx: Any) -> None:
            session = ctx.lib.get_token(token_label=token.label).open(rw=True, user_pin=new_pin)
            try:
                session.set_pin(new_pin, old_pin)
            finally:
                session.close()

        await hsm._run_on_worker(restore)
