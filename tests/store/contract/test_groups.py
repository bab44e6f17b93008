"""Group membership (tables/groups.py): the contract both backends pass."""

from __future__ import annotations

import pytest

from signer.errors import NotFound
from signer.store import Store, Writer
from tests.store.store_testkit import T0, principal


async def test_membership_add_remove_and_reads(store: Store) -> None:
    ann, bob = principal("ann"), principal("bob")
    async with store.write() as w:
        await w.principals.insert(ann)
        await w.principals.insert(bob)
        before = w.epoch
        assert await w.groups.add("treasury", ann.id, T0, "prn_admin") is True
        assert await w.groups.add("treasury", ann.id, T0, "prn_admin") is False  # already a member
        assert await w.groups.add("treasury", bob.id, T0, None) is True
        assert await w.groups.add("ops", bob.id, T0, None) is True
        assert w.epoch == before + 3  # a membership is a decision fact; a no-op is not
    async with store.read() as r:
        assert await r.groups.of(bob.id) == frozenset({"treasury", "ops"})
        assert await r.groups.members("treasury") == sorted([ann.id, bob.id])
        assert await r.groups.all() == {"ops": [bob.id], "treasury": sorted([ann.id, bob.id])}
        assert await r.groups.of("prn_nobody") == frozenset()
    async with store.write() as w:
        before = w.epoch
        assert await w.groups.remove("treasury", ann.id) is True
        assert await w.groups.remove("treasury", ann.id) is False
        assert w.epoch == before + 1
    async with store.read() as r:
        assert await r.groups.members("treasury") == [bob.id]


async def test_an_unknown_principal_cannot_join(store: Store) -> None:
    async def unit(w: Writer) -> bool:
        return await w.groups.add("treasury", "prn_missing", T0, None)

    # The failed statement is undone with its unit (a savepoint); the batch still commits.
    with pytest.raises(NotFound) as missing:
        await store.submit(unit)
    assert missing.value.code == "principal_not_found"
    async with store.read() as r:
        assert await r.groups.members("treasury") == []
