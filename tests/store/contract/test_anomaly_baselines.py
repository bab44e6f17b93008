"""Anomaly baselines (tables/anomaly_baselines.py, migration 0020): the contract both databases pass.
Counts added to a slot sum, whoever adds them; a read takes each kind from its own start and width
only; pruning goes by kind and age; an unknown kind is refused."""

from __future__ import annotations

import pytest

from signer.store import BaselineCount, Store
from tests.store.store_testkit import uid


async def test_counts_sum_per_slot_and_read_by_kind_width_and_start(store: Store) -> None:
    a, b = uid("prn"), uid("prn")
    async with store.write() as w:
        await w.baselines.add(
            [
                BaselineCount(a, "burst", 60, 600, 2),
                BaselineCount(a, "burst", 60, 660, 1),
                BaselineCount(a, "hour", 3600, 7200, 3),
                BaselineCount(b, "denial", 1, 700, 1),
            ]
        )
        await w.baselines.add([])
    # Another worker adds to the same slots: one row each, the counts summed.
    async with store.write() as w:
        await w.baselines.add([BaselineCount(a, "burst", 60, 600, 5), BaselineCount(a, "burst", 10, 600, 9)])
    since = {"burst": (60, 600), "hour": (3600, 0), "denial": (1, 0)}
    async with store.read() as r:
        mine = {(c.kind, c.width, c.start): c.count for c in await r.baselines.of(a, since)}
        assert mine == {("burst", 60, 600): 7, ("burst", 60, 660): 1, ("hour", 3600, 7200): 3}
        later = await r.baselines.of(a, {"burst": (60, 650)})
        assert [(c.start, c.count) for c in later] == [(660, 1)]
        assert await r.baselines.of(a, {}) == []
        everyone = {(c.principal_id, c.kind, c.start) for c in await r.baselines.recent(since)}
        assert everyone == {(a, "burst", 600), (a, "burst", 660), (a, "hour", 7200), (b, "denial", 700)}
    async with store.write() as w:
        assert await w.baselines.prune({"burst": 650, "denial": 701}) == 3  # both widths at 600, b's denial
    async with store.read() as r:
        left = {(c.kind, c.width, c.start) for c in await r.baselines.recent(since)}
        assert left == {("burst", 60, 660), ("hour", 3600, 7200)}
        assert await r.baselines.recent({"burst": (10, 0)}) == []


async def test_an_unknown_kind_is_refused(store: Store) -> None:
    async with store.write() as w:
        with pytest.raises(ValueError):
            await w.baselines.add([BaselineCount(uid("prn"), "weekly", 60, 0, 1)])
    async with store.read() as r:
        with pytest.raises(ValueError):
            await r.baselines.recent({"weekly": (60, 0)})
