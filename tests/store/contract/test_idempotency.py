"""Idempotency claims in the store, on SQLite and PostgreSQL: the reservation a request takes on its key
before the HSM is asked, replaced by the response in the signing commit, released on failure, and
taken over once stale. What a reader sees must always be either a claim or the stored response."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from signer.errors import Conflict
from signer.store import IdempotencyRecord, Store, Writer
from tests.store.store_testkit import T0, submit_all

P = "prn_claims"
LONG_AGO = T0 - timedelta(days=1)


async def claim(store: Store, key: str, token: str, *, at: Any = T0, digest: str = "d" * 64) -> Any:
    async def unit(w: Writer) -> Any:
        return await w.idempotency.claim(P, key, digest, token, at, at - timedelta(seconds=30))

    return await store.submit(unit)


async def read(store: Store, key: str) -> IdempotencyRecord | None:
    async with store.read() as r:
        return await r.idempotency.get(P, key)


def answer(key: str, **extra: Any) -> IdempotencyRecord:
    return IdempotencyRecord(P, key, "d" * 64, {"signature": "0x01", **extra}, T0)


async def test_one_claim_wins_and_others_see_it(store: Store) -> None:
    async def contender(token: str) -> Any:
        async def unit(w: Writer) -> Any:
            return await w.idempotency.claim(P, "k", "d" * 64, token, T0, LONG_AGO)

        return unit

    # Several claims in one batch: the first wins, the rest see its (buffered) claim.
    results = await submit_all(store, [await contender(f"c{n}") for n in range(5)])
    assert results[0] is None
    for held in results[1:]:
        assert isinstance(held, IdempotencyRecord) and held.claim == "c0" and held.response == {}
    stored = await read(store, "k")
    assert stored is not None and stored.claim == "c0" and stored.response == {}


async def test_the_response_replaces_only_its_own_claim(store: Store) -> None:
    assert await claim(store, "k", "mine") is None

    async def someone_else(w: Writer) -> None:
        await w.idempotency.insert(answer("k"), claim="theirs")

    async def unclaimed(w: Writer) -> None:
        await w.idempotency.insert(answer("k"))

    async def mine(w: Writer) -> None:
        await w.idempotency.insert(answer("k", n=1), claim="mine")

    results = await submit_all(store, [someone_else, unclaimed, mine])
    assert [getattr(r, "code", r) for r in results] == ["idempotency_key_used", "idempotency_key_used", None]
    stored = await read(store, "k")
    assert stored is not None and stored.claim is None and stored.response == {"signature": "0x01", "n": 1}
    # A stored response is never claimed again, not even when it is old.
    held = await claim(store, "k", "late", at=T0 + timedelta(days=2))
    assert held is not None and held.claim is None and held.response == stored.response


async def test_release_frees_the_key_and_only_for_its_holder(store: Store) -> None:
    assert await claim(store, "k", "mine") is None

    async def release(token: str) -> Any:
        async def unit(w: Writer) -> bool:
            return await w.idempotency.release_claim(P, "k", token)

        return await store.submit(unit)

    assert await release("theirs") is False
    assert (await read(store, "k")) is not None
    assert await release("mine") is True
    assert await read(store, "k") is None
    assert await claim(store, "k", "next") is None


@pytest.mark.parametrize("age", [timedelta(seconds=29), timedelta(seconds=31)])
async def test_a_claim_goes_stale_and_is_taken_over(store: Store, age: timedelta) -> None:
    assert await claim(store, "k", "dead", at=T0 - age) is None
    held = await claim(store, "k", "alive", digest="e" * 64)
    if age < timedelta(seconds=30):
        assert held is not None and held.claim == "dead"
        return
    assert held is None
    stored = await read(store, "k")
    assert stored is not None and stored.claim == "alive" and stored.request_digest == "e" * 64

    async def dead_finishes(w: Writer) -> None:
        # The old claimant came back after all: its response must not be stored over the new claim.
        await w.idempotency.insert(answer("k"), claim="dead")

    with pytest.raises(Conflict):
        await store.submit(dead_finishes)
