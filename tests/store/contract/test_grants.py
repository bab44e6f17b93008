"""Grants (tables/grants.py): the contract both backends pass."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signer.errors import Conflict, NotFound
from signer.store import Store
from tests.store.store_testkit import T0, grant, principal


async def test_grants_active_and_listing(store: Store) -> None:
    alice, bob = principal("alice"), principal("bob")
    now = T0 + timedelta(days=1)
    live = grant(alice.id, "key_1", operations=["sign_transaction", "sign_message"])
    expiring = grant(alice.id, "key_1", expires_at=now + timedelta(seconds=1))
    expired = grant(alice.id, "key_1", expires_at=now)  # expires exactly now: no longer active
    revoked = grant(alice.id, "key_1")
    other_key = grant(alice.id, "key_2")
    bobs = grant(bob.id, "key_1")
    async with store.write() as w:
        await w.principals.insert(alice)
        await w.principals.insert(bob)
        for g in (live, expiring, expired, revoked, other_key, bobs):
            await w.grants.insert(g)
        assert w.epoch == 6
        with pytest.raises(Conflict) as dup:
            await w.grants.insert(grant(alice.id, "key_1", id=live.id))
        assert dup.value.code == "grant_exists"
        assert await w.grants.revoke(revoked.id, now) is True
        assert await w.grants.revoke(revoked.id, now) is False
        with pytest.raises(NotFound) as missing:
            await w.grants.revoke("grt_missing", now)
        assert missing.value.code == "grant_not_found"
        assert w.epoch == 7
    async with store.read() as r:
        active = await r.grants.active(alice.id, "key", "key_1", now)
        assert {g.id for g in active} == {live.id, expiring.id}
        assert await r.grants.active(alice.id, "key", "key_1", now + timedelta(seconds=1)) == [live]
        assert await r.grants.active(alice.id, "scope", "key_1", now) == []
        assert len(await r.grants.all()) == 6
        assert {g.id for g in await r.grants.all(principal_id=bob.id)} == {bobs.id}
        got = await r.grants.get(live.id)
        assert got == live and got.operations == ["sign_transaction", "sign_message"]
        assert (await r.grants.get(revoked.id)).revoked_at == now  # type: ignore[union-attr]


async def test_grant_for_unknown_principal(store: Store) -> None:
    with pytest.raises(NotFound) as missing:
        async with store.write() as w:
            await w.grants.insert(grant("prn_missing", "key_1"))
    assert missing.value.code == "principal_not_found"
