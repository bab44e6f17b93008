"""Key records (tables/keys.py): the contract both backends pass."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signer.errors import Conflict, NotFound
from signer.store import Store
from tests.store.store_testkit import T0, key


async def test_key_roundtrip_listing_and_state(store: Store) -> None:
    keys = [key(id=f"key_{i:02d}", state="active" if i % 2 else "suspended") for i in range(7)]
    keys.append(key(id="key_p256", curve="p256", address=None, tags=[], attributes={}))
    async with store.write() as w:
        for k in keys:
            await w.keys.insert(k)
        with pytest.raises(Conflict) as by_id:
            await w.keys.insert(key(id="key_00"))
        with pytest.raises(Conflict) as by_hsm:
            await w.keys.insert(key(hsm_id=keys[0].hsm_id))
        assert w.epoch == 0  # registering a key changes no decision already made
    assert by_id.value.code == by_hsm.value.code == "key_exists"
    async with store.read() as r:
        assert await r.keys.get("key_03") == keys[3]
        assert await r.keys.get("key_p256") == keys[-1]
        assert await r.keys.by_hsm_id(keys[5].hsm_id) == keys[5]
        assert await r.keys.get("key_missing") is None
        assert await r.keys.by_hsm_id("nope") is None
        page1 = await r.keys.all(limit=3)
        page2 = await r.keys.all(limit=3, after=page1[-1].id)
        page3 = await r.keys.all(limit=3, after=page2[-1].id)
        assert [k.id for k in page1 + page2 + page3] == sorted(k.id for k in keys)
        active = await r.keys.all(state="active", limit=100)
        assert [k.id for k in active] == ["key_01", "key_03", "key_05", "key_p256"]
        with pytest.raises(ValueError):
            await r.keys.all(limit=0)
    changed_at = T0 + timedelta(days=1)
    async with store.write() as w:
        await w.keys.set_state("key_01", "suspended", changed_at)
        await w.keys.set_state("key_01", "suspended", changed_at)  # no change, no bump
        assert w.epoch == 1
        with pytest.raises(NotFound) as missing:
            await w.keys.set_state("key_missing", "active", changed_at)
        with pytest.raises(ValueError):
            await w.keys.set_state("key_01", "disabled", changed_at)  # gone since 0018
    assert missing.value.code == "key_not_found"
    async with store.read() as r:
        got = await r.keys.get("key_01")
        assert got is not None and got.state == "suspended" and got.updated_at == changed_at
        assert got.created_at == T0
        assert await r.epoch() == 1


async def test_key_state_compare_and_set_and_compromise_date(store: Store) -> None:
    k = key()
    async with store.write() as w:
        await w.keys.insert(k)
    later = T0 + timedelta(hours=1)
    seen = T0 - timedelta(days=3)
    async with store.write() as w:
        with pytest.raises(Conflict) as moved:
            await w.keys.set_state(k.id, "suspended", later, expected="deactivated")
        await w.keys.set_state(k.id, "compromised", later, expected="active", compromised_at=seen)
        with pytest.raises(ValueError):
            await w.keys.set_state(k.id, "destroyed", later, compromised_at=seen.replace(tzinfo=None))
    assert moved.value.code == "key_state_changed"
    async with store.read() as r:
        got = await r.keys.get(k.id)
    assert got is not None and got.state == "compromised" and got.compromised_at == seen
    assert got.updated_at == later
