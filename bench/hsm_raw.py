"""Raw SoftHSM secp256k1 signing rate (python-pkcs11 loop) on 1 and N processes, next to the Hsm worker.

    .venv/bin/python bench/hsm_raw.py [--processes N] [--seconds S] [--rounds R] [--concurrency 1,8,64]

Creates its own temporary SoftHSM installation and token (random PINs, removed at the end). Every
measurement runs in freshly spawned processes, so no process ever shares PKCS#11 state with another:

- raw: each process opens a logged-in session, finds the key, and calls ``key.sign(digest, ECDSA)`` in a
  tight loop for S seconds (the ceiling: no queue, no event loop, no checks);
- worker: one process runs ``signer.hsm.Hsm`` and C concurrent asyncio callers awaiting ``hsm.sign`` for
  S seconds (what the service gets from one process).

Runs are interleaved and repeated R times; the best and the median of each are printed, because other
work on a 2-core machine moves single runs a lot. Figures are signatures per second.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from signer.config import Secret  # noqa: E402
from signer.hsm.provision import provision_softhsm  # noqa: E402

DIGEST = hashlib.sha256(b"bench").digest()
LABEL = "bench"


def _setup_key(module: str, conf: str, pin: Secret) -> tuple[str, bytes]:
    os.environ["SOFTHSM2_CONF"] = conf
    from signer.hsm import Curve, Hsm

    async def run() -> tuple[str, bytes]:
        hsm = Hsm(module, LABEL, pin)
        await hsm.start()
        try:
            key = await hsm.generate_key(Curve.SECP256K1, "bench-key")
            return key.hsm_id, key.public_key
        finally:
            await hsm.close()

    return asyncio.run(run())


def _raw_child(
    module: str, conf: str, pin: Secret, hsm_id: str, seconds: float, barrier: Barrier, out: Any
) -> None:
    os.environ["SOFTHSM2_CONF"] = conf
    import pkcs11
    from pkcs11 import Attribute, Mechanism, ObjectClass

    lib = pkcs11.lib(module)
    session = lib.get_token(token_label=LABEL).open(rw=True, user_pin=pin.reveal())
    key = next(
        session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: bytes.fromhex(hsm_id)})
    )
    key.sign(DIGEST, mechanism=Mechanism.ECDSA)  # warm
    barrier.wait()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            key.sign(DIGEST, mechanism=Mechanism.ECDSA)
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            break
    session.close()
    out.put((count, now - start))


def _worker_child(
    module: str, conf: str, pin: Secret, hsm_id: str, seconds: float, concurrency: int, out: Any
) -> None:
    os.environ["SOFTHSM2_CONF"] = conf
    from signer.hsm import Curve, Hsm

    async def run() -> tuple[int, float, bytes]:
        hsm = Hsm(module, LABEL, pin, deadline_seconds=30.0, queue_size=max(1024, concurrency))
        await hsm.start()
        try:
            sample = await hsm.sign(hsm_id, Curve.SECP256K1, DIGEST)
            deadline = time.perf_counter() + seconds
            counts = [0] * concurrency

            async def caller(i: int) -> None:
                while time.perf_counter() < deadline:
                    await hsm.sign(hsm_id, Curve.SECP256K1, DIGEST)
                    counts[i] += 1

            start = time.perf_counter()
            await asyncio.gather(*(caller(i) for i in range(concurrency)))
            return sum(counts), time.perf_counter() - start, sample
        finally:
            await hsm.close()

    out.put(asyncio.run(run()))


def measure_raw(ctx: Any, token: Any, hsm_id: str, processes: int, seconds: float) -> float:
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    children = [
        ctx.Process(
            target=_raw_child,
            args=(token.module_path, str(token.conf_path), token.user_pin, hsm_id, seconds, barrier, out),
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    results = [out.get(timeout=seconds + 120) for _ in children]
    for child in children:
        child.join(timeout=30)
    return sum(count / elapsed for count, elapsed in results)


def measure_worker(
    ctx: Any, token: Any, hsm_id: str, public_key: bytes, seconds: float, concurrency: int
) -> float:
    out = ctx.Queue()
    child = ctx.Process(
        target=_worker_child,
        args=(token.module_path, str(token.conf_path), token.user_pin, hsm_id, seconds, concurrency, out),
    )
    child.start()
    count, elapsed, sample = out.get(timeout=seconds + 120)
    child.join(timeout=30)
    _check_sample(public_key, sample)
    return float(count / elapsed)


def _check_sample(public_key: bytes, signature: bytes) -> None:
    import coincurve
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    der = encode_dss_signature(r, min(s, n - s))
    if not coincurve.PublicKey(public_key).verify(der, DIGEST, hasher=None):
        raise SystemExit("the worker's signature does not verify: the figures are meaningless")


def summary(values: list[float]) -> str:
    return f"best {max(values):8,.0f}   median {statistics.median(values):8,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="N for the multi-process raw run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (interleaved)")
    parser.add_argument("--concurrency", default="1,8,64", help="async callers for the worker runs")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="hsm-bench-") as tmp:
        (token,) = provision_softhsm(Path(tmp), [LABEL])
        hsm_id, public_key = _setup_key(token.module_path, str(token.conf_path), token.user_pin)
        os.environ.pop("SOFTHSM2_CONF", None)
        rows: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            rows.setdefault("raw python-pkcs11 loop, 1 process", []).append(
                measure_raw(ctx, token, hsm_id, 1, args.seconds)
            )
            if args.processes > 1:
                rows.setdefault(f"raw python-pkcs11 loop, {args.processes} processes (total)", []).append(
                    measure_raw(ctx, token, hsm_id, args.processes, args.seconds)
                )
            for concurrency in concurrencies:
                rows.setdefault(f"Hsm worker, 1 process, {concurrency} async callers", []).append(
                    measure_worker(ctx, token, hsm_id, public_key, args.seconds, concurrency)
                )
    setup = f"{os.cpu_count()} CPUs, {args.seconds:g} s x {args.rounds}"
    print(f"SoftHSM secp256k1 CKM_ECDSA signatures/s ({setup})")
    width = max(len(name) for name in rows)
    for name, values in rows.items():
        print(f"  {name:<{width}}  {summary(values)}")


if __name__ == "__main__":
    main()
