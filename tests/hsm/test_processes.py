"""F-05: PKCS#11 state never crosses ``fork``; processes that start their own worker share the token,
and see each other's keys.

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
from typing import Any

import pytest
from pkcs11 import Attribute

from signer.config import Secret
from signer.errors import ConfigurationError, NotFound, SignerError
from signer.hsm import Curve, Hsm
from signer.hsm.curves import decode_ec_point
from signer.hsm.provision import SoftHsmToken
from tests.hsm.conftest import MakeHsm
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


def _serving_process(token: SoftHsmToken, name: str, commands: Any, replies: Any) -> None:
    """A long-lived worker process (like one of `signer serve --workers N`), driven by the test."""
    os.environ["SOFTHSM2_CONF"] = str(token.conf_path)

    async def serve() -> None:
        worker = Hsm(token.module_path, token.label, token.user_pin)
        await worker.start()
        replies.put(("ready", name))
        try:
            while True:
                command, argument = await asyncio.to_thread(commands.get)
                if command == "generate":
                    key = await worker.generate_key(Curve.SECP256K1, f"{name}-{argument}")
                    replies.put((key.hsm_id, key.public_key))
                elif command == "generate_racing":
                    # A write that lands while another process writes too: the race the worker's
                    # catch-up before writing cannot close (generated here without that catch-up).
                    def racing_write(ctx: Any) -> tuple[str, bytes]:
                        key_id, public, _ = worker._token._generate(
                            Curve.SECP256K1, f"{name}-race", token=True
                        )
                        return key_id.hex(), decode_ec_point(Curve.SECP256K1, public[Attribute.EC_POINT])

                    replies.put(await worker._run_on_worker(racing_write))
                elif command == "sign":
                    try:
                        replies.put(await worker.sign(argument, Curve.SECP256K1, DIGEST))
                    except SignerError as exc:
                        replies.put(exc.code)
                elif command == "destroy":
                    await worker.destroy_key(argument)
                    replies.put("destroyed")
                elif command == "list":
                    replies.put(sorted(hsm_id for hsm_id, _, _ in await worker.list_keys()))
                else:
                    return
        finally:
            await worker.close()

    asyncio.run(serve())


async def test_keys_made_by_other_processes_are_found(
    hsm: Hsm, softhsm_tokens: dict[str, SoftHsmToken]
) -> None:
    """Two serving processes create keys in turn (A, B, B, A); each then signs with all four; a key
    one of them destroys is refused by all.

    SoftHSM 2.6 alone gets this wrong: A's own write moves the token's generation counter past B's
    writes without A re-reading the object list, so A would answer key_not_found for B's keys forever.
    The worker re-reads the list before it writes, and rescans once on a miss for the writes that
    race (A's last key is made racing, i.e. without the re-read).
    """
    token = softhsm_tokens["hsm-main"]
    ctx = multiprocessing.get_context("spawn")
    channels = {name: (ctx.Queue(), ctx.Queue()) for name in "AB"}
    children = {
        name: ctx.Process(target=_serving_process, args=(token, name, *channels[name])) for name in "AB"
    }

    async def ask(name: str, command: str, argument: Any = None) -> Any:
        commands, replies = channels[name]
        commands.put((command, argument))
        return await asyncio.to_thread(replies.get, True, 60)

    for child in children.values():
        child.start()
    try:
        for name in "AB":
            assert await asyncio.to_thread(channels[name][1].get, True, 60) == ("ready", name)
        keys = [await ask(name, "generate", n) for n, name in enumerate("ABB")]
        keys.append(await ask("A", "generate_racing"))
        for name in "AB":
            for hsm_id, public_key in keys:
                signature = await ask(name, "sign", hsm_id)
                assert isinstance(signature, bytes), f"{name} could not sign with {hsm_id}: {signature}"
                assert verify(Curve.SECP256K1, public_key, DIGEST, signature)
            listed = await ask(name, "list")
            assert {hsm_id for hsm_id, _ in keys} <= set(listed)
        # And this process, which made none of them, signs with all four too.
        for hsm_id, public_key in keys:
            assert verify(
                Curve.SECP256K1, public_key, DIGEST, await hsm.sign(hsm_id, Curve.SECP256K1, DIGEST)
            )
    finally:
        for name, child in children.items():
            channels[name][0].put(("stop", None))
            await asyncio.to_thread(child.join, 60)
            if child.is_alive():
                child.kill()
    assert all(child.exitcode == 0 for child in children.values())


async def test_rescans_on_a_miss_are_rate_limited(make_hsm: MakeHsm) -> None:
    never = "ab" * 16
    patient = await make_hsm(rescan_interval=3600)
    for _ in range(5):
        with pytest.raises(NotFound):
            await patient.sign(never, Curve.SECP256K1, DIGEST)
    assert patient.stats.rescans == 1  # the first miss looks again; the storm after it does not

    eager = await make_hsm(rescan_interval=0)
    for _ in range(5):
        with pytest.raises(NotFound):
            await eager.sign(never, Curve.SECP256K1, DIGEST)
    assert eager.stats.rescans == 5  # one per job, never a loop


def _start_stop_cycles(token: SoftHsmToken, hsm_id: str, cycles: int, barrier: Any) -> list[str]:
    os.environ["SOFTHSM2_CONF"] = str(token.conf_path)

    async def cycle() -> str:
        worker = Hsm(token.module_path, token.label, token.user_pin, deadline_seconds=30)
        try:
            await worker.start()
        except ConfigurationError as exc:
            return f"start refused: {exc}"
        try:
            await worker.sign(hsm_id, Curve.SECP256K1, DIGEST)
            return "ok"
        except SignerError as exc:
            return f"sign failed: {exc.code}"
        finally:
            await worker.close()

    barrier.wait(timeout=60)
    return [asyncio.run(cycle()) for _ in range(cycles)]


@pytest.mark.slow
async def test_processes_starting_together_all_start(
    hsm: Hsm, softhsm_tokens: dict[str, SoftHsmToken]
) -> None:
    """`signer serve --workers N` starts N processes at once; each login rewrites SoftHSM's token file
    and a process reading it at that moment fails to find the token or to log in. Start-up retries
    that; here 4 processes start, sign and stop 8 times each, all at the same time."""
    token = softhsm_tokens["hsm-main"]
    key = await hsm.generate_key(Curve.SECP256K1, "starting-together")
    processes, cycles = 4, 8
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()
    try:
        barrier = manager.Barrier(processes)
        with ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as pool:
            loop = asyncio.get_running_loop()
            runs = [
                loop.run_in_executor(pool, _start_stop_cycles, token, key.hsm_id, cycles, barrier)
                for _ in range(processes)
            ]
            outcomes = [outcome for run in await asyncio.gather(*runs) for outcome in run]
    finally:
        manager.shutdown()
    assert outcomes == ["ok"] * (processes * cycles)
    await hsm.ping()
