"""F-05: PKCS#11 state never crosses ``fork``; processes that start their own worker share the token.

A forked child inherits the parent's ``Hsm`` (and SoftHSM's memory) but must not use it: every call is
refused before anything inherited is touched, and so is starting a new worker in that child. A spawned
child initialises the module itself and works, alongside the parent, on the same token.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection

from signer.config import Secret
from signer.errors import ConfigurationError
from signer.hsm import Curve, Hsm
from signer.hsm.provision import SoftHsmToken
from tests.hsm.support import verify

DIGEST = hashlib.sha256(b"process tests").digest()


def _forked_child(parent_hsm: Hsm, hsm_id: str, token: SoftHsmToken, conn: Connection) -> None:
    report: dict[str, str] = {}

    async def attempts() -> None:
        for name, call in (
            ("sign", lambda: parent_hsm.sign(hsm_id, Curve.SECP256K1, DIGEST)),
            ("ping", parent_hsm.ping),
            ("start_new", lambda: Hsm(token.module_path, token.label, token.user_pin).start()),
        ):
            try:
                await call()
                report[name] = "allowed"
            except ConfigurationError as exc:
                report[name] = "refused: " + str(exc)
            except BaseException as exc:
                report[name] = "other: " + type(exc).__name__
        await parent_hsm.close()  # a no-op in the child: inherited handles are never touched
        report["close"] = "ok"

    try:
        asyncio.run(attempts())
    finally:
        conn.send(report)
        conn.close()


async def test_forked_child_cannot_use_the_parents_hsm(
    hsm: Hsm, softhsm_tokens: dict[str, SoftHsmToken]
) -> None:
    key = await hsm.generate_key(Curve.SECP256K1, "fork")
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_forked_child, args=(hsm, key.hsm_id, softhsm_tokens["hsm-main"], send))
    child.start()
    send.close()
    assert await asyncio.to_thread(receive.poll, 60)
    report = receive.recv()
    await asyncio.to_thread(child.join, 60)
    assert child.exitcode == 0
    assert report["sign"].startswith("refused: this HSM handle belongs to the process that started it")
    assert report["ping"].startswith("refused")
    assert report["start_new"].startswith("refused: PKCS#11 was initialised before this process was forked")
    assert report["close"] == "ok"
    # The parent is untouched by the child's attempts.
    assert verify(
        Curve.SECP256K1, key.public_key, DIGEST, await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)
    )


def _spawned_worker(module: str, label: str, pin: Secret, conf: str, hsm_id: str, rounds: int) -> list[bytes]:
    os.environ["SOFTHSM2_CONF"] = conf

    async def run() -> list[bytes]:
        worker = Hsm(module, label, pin)
        await worker.start()
        try:
            return [await worker.sign(hsm_id, Curve.SECP256K1, DIGEST) for _ in range(rounds)]
        finally:
            await worker.close()

    return asyncio.run(run())


async def test_spawned_children_start_their_own_worker_on_the_same_token(
    hsm: Hsm, softhsm_tokens: dict[str, SoftHsmToken]
) -> None:
    token = softhsm_tokens["hsm-main"]
    key = await hsm.generate_key(Curve.SECP256K1, "spawn")
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            loop.run_in_executor(
                pool,
                _spawned_worker,
                token.module_path,
                token.label,
                token.user_pin,
                str(token.conf_path),
                key.hsm_id,
                50,
            )
            for _ in range(2)
        ]
        # The parent keeps signing with the same key while the children do.
        mine = [await hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST) for _ in range(50)]
        theirs = [sig for batch in await asyncio.gather(*futures) for sig in batch]
    assert len(theirs) == 100
    for signature in mine + theirs:
        assert verify(Curve.SECP256K1, key.public_key, DIGEST, signature)
    await hsm.ping()  # the children's logins and logouts did not log the parent out
