"""Measurement, not a test of speed: submit() units per second with 1, 16 and 64 concurrent callers,
each unit appending one audit event. Prints the numbers (run with ``-m slow -s``); asserts only
correctness (a gapless, verifying chain), never a time."""

from __future__ import annotations

import asyncio
import time

import pytest

from signer.audit import verify_chain
from signer.store import Store, Writer
from tests.store.store_testkit import event

pytestmark = pytest.mark.slow

UNITS = {1: 400, 16: 3000, 64: 6000}


async def measure(store: Store, callers: int, units: int) -> float:
    per_caller = units // callers

    async def unit(w: Writer) -> None:
        w.append_audit(event("sign.transaction", request_id="r", key_id="key_1", outcome="allowed"))

    async def caller() -> None:
        for _ in range(per_caller):
            await store.submit(unit)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return per_caller * callers / (time.perf_counter() - started)


async def test_submit_throughput(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    results = {}
    for callers, units in UNITS.items():
        results[callers] = await measure(store, callers, units)
    async with store.read() as r:
        records = await r.audit.events(limit=100_000)
        head = await r.audit_head()
    assert len(records) == sum((u // c) * c for c, u in UNITS.items())
    assert verify_chain(records, expected_head=head).ok
    with capsys.disabled():
        line = ", ".join(f"{c} callers: {rate:,.0f} units/s" for c, rate in results.items())
        print(f"\n[{store.backend}] submit(): {line}")
