"""The spend and rate ledger: running totals equal exact rolling sums, on SQLite and PostgreSQL.

A hypothesis-free model check: a sequence of reservations and checks at moving instants (forwards,
backwards, across unit failures and across transactions) must give exactly what summing the
committed rows in memory gives.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from signer.store import LedgerEntry, Store, Writer
from tests.dbfixtures import fresh_store
from tests.store.store_testkit import T0

BIG = 2**200  # wei amounts far beyond 64 bits


def exact(rows: list[LedgerEntry], limit_key: str, since) -> int:  # type: ignore[no-untyped-def]
    return sum(
        r.amount for r in rows if r.limit_key == limit_key and (since is None or r.window_start > since)
    )


@pytest.mark.parametrize("sub_second", [False, True], ids=["whole-seconds", "microseconds"])
async def test_usage_is_the_exact_rolling_sum_under_random_histories(store: Store, sub_second: bool) -> None:
    rng = random.Random(7)
    committed: list[LedgerEntry] = []
    now = T0
    windows = [timedelta(seconds=10), timedelta(seconds=60), None]
    keys = ["spend:key:k1:native", "rate:principal:p1"]
    for step in range(60):
        # Mostly forwards, sometimes a backwards step (a clock jump) of up to 30 s.
        now += timedelta(seconds=rng.choice([0, 1, 3, 7, 20, -30 if step % 9 == 8 else 2]))
        if sub_second:
            # Window starts inside a second: the cache sums whole seconds plus that second's rows.
            now += timedelta(microseconds=rng.randint(-999_999, 999_999))
        batch = [
            LedgerEntry(rng.choice(keys), rng.choice([1, 5, BIG]), now, now + timedelta(seconds=60))
            for _ in range(rng.randint(0, 3))
        ]
        fail = rng.random() < 0.2

        async def unit(w: Writer, batch=batch, fail=fail, now=now) -> dict:  # type: ignore[no-untyped-def]
            seen = {}
            for key in keys:
                for window in windows:
                    since = None if window is None else now - window
                    seen[(key, window)] = await w.ledger.usage(key, since, now)
            await w.ledger.reserve(batch)
            for key in keys:
                for window in windows:
                    since = None if window is None else now - window
                    seen[(key, window, "after")] = await w.ledger.usage(key, since, now)
            if fail:
                raise RuntimeError("unit fails after reserving")
            return seen

        if fail:
            with pytest.raises(RuntimeError):
                await store.submit(unit)
            continue
        seen = await store.submit(unit)
        for key in keys:
            for window in windows:
                since = None if window is None else now - window
                assert seen[(key, window)] == exact(committed, key, since), (step, key, window)
                assert seen[(key, window, "after")] == exact(committed + batch, key, since)
        committed += batch


async def test_a_failed_unit_leaves_no_reservation_and_its_batch_neighbours_keep_theirs(store: Store) -> None:
    key = "spend:key:k:native"

    async def good(w: Writer) -> None:
        await w.ledger.reserve([LedgerEntry(key, 3, T0, None)])

    async def bad(w: Writer) -> None:
        await w.ledger.usage(key, None, T0)
        await w.ledger.reserve([LedgerEntry(key, 100, T0, None)])
        raise RuntimeError("after reserving")

    results = await asyncio.gather(
        store.submit(good), store.submit(bad), store.submit(good), return_exceptions=True
    )
    assert isinstance(results[1], RuntimeError)

    async def read(w: Writer) -> int:
        return await w.ledger.usage(key, None, T0)

    assert await store.submit(read) == 6


@pytest.mark.parametrize("amount", [0, 2**256 - 1])
async def test_extreme_amounts_round_trip(store: Store, amount: int) -> None:
    key = "spend:scope:a:native"

    async def unit(w: Writer) -> None:
        await w.ledger.reserve([LedgerEntry(key, amount, T0, None), LedgerEntry(key, amount, T0, None)])

    await store.submit(unit)

    async def read(w: Writer) -> int:
        return await w.ledger.usage(key, T0 - timedelta(seconds=1), T0)

    assert await store.submit(read) == 2 * amount


async def test_negative_or_non_integer_amounts_are_refused(store: Store) -> None:
    async def unit(w: Writer) -> None:
        await w.ledger.reserve([LedgerEntry("k", -1, T0, None)])

    with pytest.raises(ValueError):
        await store.submit(unit)


async def test_two_stores_on_one_database_see_each_others_reservations(store_url: str) -> None:
    """Two processes' caches stay exact: each transaction reads what the other committed."""
    rng = random.Random(11)
    committed: list[LedgerEntry] = []
    key = "spend:key:shared:native"
    async with fresh_store(store_url) as one, fresh_store(store_url) as two:
        now = T0
        for step in range(40):
            now += timedelta(seconds=rng.choice([0, 1, 5, -3]))
            store = (one, two)[rng.randrange(2)]
            batch = [LedgerEntry(key, rng.choice([1, BIG]), now, None) for _ in range(rng.randint(0, 2))]

            async def unit(w: Writer, batch=batch, now=now) -> tuple[int, int]:  # type: ignore[no-untyped-def]
                short = await w.ledger.usage(key, now - timedelta(seconds=8), now)
                total = await w.ledger.usage(key, None, now)
                await w.ledger.reserve(batch)
                return short, total

            short, total = await store.submit(unit)
            assert short == exact(committed, key, now - timedelta(seconds=8)), step
            assert total == exact(committed, key, None), step
            committed += batch
