"""L-01: many threads and many asyncio tasks sign at once; nothing crashes and every signature verifies.

Unserialised, 32 threads signing through python-pkcs11 crash SoftHSM 2.6.1 most of the time. Here 32
threads (each with an event loop of its own) and 256 tasks on the test's loop share one ``Hsm`` and mix
signing on all three curves with key searches. Through the fault shim (pass-through) the module itself
reports how many threads ever called into it: exactly one.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from signer.hsm import Curve, GeneratedKey, Hsm
from tests.hsm.conftest import WORKER_THREAD, MakeHsm
from tests.hsm.support import FaultShim, verify

THREADS, PER_THREAD = 32, 40
TASKS, PER_TASK = 256, 8

Signed = tuple[GeneratedKey, bytes, bytes]


def payload(curve: Curve, *parts: int) -> bytes:
    seed = b"stress" + b"/".join(b"%d" % p for p in parts)
    return hashlib.sha256(seed).digest() if curve is not Curve.ED25519 else seed


async def sign_many(worker: Hsm, keys: list[GeneratedKey], who: int, count: int) -> list[Signed]:
    out = []
    for i in range(count):
        key = keys[(who + i) % len(keys)]
        data = payload(key.curve, who, i)
        out.append((key, data, await worker.sign(key.hsm_id, key.curve, data)))
        if i % 16 == 0:
            await worker.list_keys()  # C_FindObjects* and attribute reads in the mix
    return out


async def stress(worker: Hsm) -> list[Signed]:
    keys = [
        await worker.generate_key(curve, f"stress-{curve.value}-{i}") for i in range(2) for curve in Curve
    ]

    def in_thread(who: int) -> list[Signed]:
        return asyncio.run(sign_many(worker, keys, who, PER_THREAD))

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="stress-caller") as pool:
        threaded = [loop.run_in_executor(pool, in_thread, who) for who in range(THREADS)]
        tasks = [sign_many(worker, keys, 1000 + who, PER_TASK) for who in range(TASKS)]
        results = await asyncio.gather(*tasks, *threaded)
        assert [t.name for t in threading.enumerate()].count(WORKER_THREAD) == 1
    return [item for batch in results for item in batch]


def check_all(signed: list[Signed]) -> None:
    assert len(signed) == THREADS * PER_THREAD + TASKS * PER_TASK
    bad = [
        (key.curve, data.hex())
        for key, data, sig in signed
        if not verify(key.curve, key.public_key, data, sig)
    ]
    assert bad == []


@pytest.mark.slow
async def test_concurrent_threads_and_tasks_on_the_real_module(make_hsm: MakeHsm) -> None:
    worker = await make_hsm(deadline_seconds=60, queue_size=4096)
    check_all(await stress(worker))
    stats = worker.stats
    assert stats.failed == 0 and stats.relogins == 0 and stats.discarded_late == 0


@pytest.mark.slow
async def test_only_one_thread_ever_enters_the_module(faultshim: FaultShim, make_hsm: MakeHsm) -> None:
    faultshim.reset()
    worker = await make_hsm("hsm-faults", module=str(faultshim.path), deadline_seconds=60, queue_size=4096)
    check_all(await stress(worker))
    assert faultshim.sign_init_calls >= THREADS * PER_THREAD + TASKS * PER_TASK
    assert faultshim.threads_seen == 1
