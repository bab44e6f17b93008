"""Principals and tokens (tables/principals.py): the contract both backends pass."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signer.errors import Conflict, NotFound
from signer.store import Store
from tests.store.store_testkit import T0, principal, token


async def test_principal_roundtrip_and_lookup(store: Store) -> None:
    alice = principal("alice", role="admin")
    bob = principal("bob", role="auditor", created_by=None)
    async with store.write() as w:
        assert await w.principals.insert(alice) == alice
        await w.principals.insert(bob)
    async with store.read() as r:
        assert await r.principals.get(alice.id) == alice
        assert await r.principals.by_name("bob") == bob
        assert await r.principals.get("prn_missing") is None
        assert await r.principals.by_name("nobody") is None
        assert await r.principals.all() == [alice, bob]


async def test_principal_conflicts_keep_the_transaction_usable(store: Store) -> None:
    alice = principal("alice")
    async with store.write() as w:
        await w.principals.insert(alice)
        with pytest.raises(Conflict) as same_name:
            await w.principals.insert(principal("alice"))
        with pytest.raises(Conflict) as same_id:
            await w.principals.insert(principal("other", id=alice.id))
        # No statement failed, so the transaction goes on and commits.
        await w.principals.insert(principal("carol"))
    assert same_name.value.code == same_id.value.code == "principal_exists"
    async with store.read() as r:
        assert [p.name for p in await r.principals.all()] == ["alice", "carol"]


async def test_principal_disable_enable_bumps_epoch_only_on_change(store: Store) -> None:
    alice = principal("alice")
    async with store.write() as w:
        await w.principals.insert(alice)
        assert w.epoch == 0
        await w.principals.set_disabled(alice.id, T0)
        assert w.epoch == 1
        await w.principals.set_disabled(alice.id, T0 + timedelta(seconds=1))  # already disabled
        assert w.epoch == 1
    async with store.read() as r:
        assert await r.epoch() == 1
        got = await r.principals.get(alice.id)
        assert got is not None and got.disabled and got.disabled_at == T0
    async with store.write() as w:
        await w.principals.set_disabled(alice.id, None)
        with pytest.raises(NotFound) as missing:
            await w.principals.set_disabled("prn_missing", T0)
    assert missing.value.code == "principal_not_found"
    async with store.read() as r:
        assert await r.epoch() == 2
        got = await r.principals.get(alice.id)
        assert got is not None and not got.disabled


async def test_token_roundtrip_joined_with_principal(store: Store) -> None:
    alice = principal("alice", role="approver")
    tok = token(alice.id, kind="refresh", expires_at=None)
    async with store.write() as w:
        await w.principals.insert(alice)
        await w.tokens.insert(tok)
        with pytest.raises(Conflict) as dup:
            await w.tokens.insert(token(alice.id, id=tok.id))
    assert dup.value.code == "token_exists"
    async with store.read() as r:
        got = await r.tokens.get(tok.id)
        assert await r.tokens.get("tok_missing") is None
    assert got is not None
    assert (got.id, got.principal_id, got.kind, got.digest, got.family_id) == (
        tok.id,
        alice.id,
        "refresh",
        tok.digest,
        tok.family_id,
    )
    assert (got.created_at, got.expires_at, got.revoked_at) == (T0, None, None)
    assert (got.principal_name, got.principal_role, got.principal_disabled_at) == ("alice", "approver", None)
    assert not got.principal_disabled
    assert tok.digest.hex() not in repr(got)  # the digest never prints


async def test_token_for_unknown_principal_is_not_found_and_spoils_only_that_writer(store: Store) -> None:
    with pytest.raises(NotFound) as missing:
        async with store.write() as w:
            await w.tokens.insert(token("prn_missing"))
    assert missing.value.code == "principal_not_found"
    async with store.read() as r:
        assert await r.audit_head() == (0, "0" * 64)


async def test_revoke_token_and_family(store: Store) -> None:
    alice = principal("alice")
    a1, a2 = token(alice.id, family_id="fam_a"), token(alice.id, family_id="fam_a", kind="refresh")
    other = token(alice.id, family_id="fam_b")
    async with store.write() as w:
        await w.principals.insert(alice)
        for tok in (a1, a2, other):
            await w.tokens.insert(tok)
    later = T0 + timedelta(minutes=5)
    async with store.write() as w:
        assert await w.tokens.revoke(a1.id, later) is True
        assert await w.tokens.revoke(a1.id, later) is False
        assert w.epoch == 1
        with pytest.raises(NotFound) as missing:
            await w.tokens.revoke("tok_missing", later)
        assert missing.value.code == "token_not_found"
        assert await w.tokens.revoke_family("fam_a", later) == 1  # a1 already revoked
        assert await w.tokens.revoke_family("fam_a", later) == 0
        assert await w.tokens.revoke_family("fam_none", later) == 0
        assert w.epoch == 2
    async with store.read() as r:
        revoked = [(await r.tokens.get(t.id)).revoked_at for t in (a1, a2, other)]  # type: ignore[union-attr]
        assert revoked == [later, later, None]
        assert await r.epoch() == 2


async def test_token_shows_principal_disabled(store: Store) -> None:
    alice = principal("alice")
    tok = token(alice.id)
    async with store.write() as w:
        await w.principals.insert(alice)
        await w.tokens.insert(tok)
        await w.principals.set_disabled(alice.id, T0)
    async with store.read() as r:
        got = await r.tokens.get(tok.id)
    assert got is not None and got.principal_disabled_at == T0 and got.principal_disabled


async def test_tokens_of_a_principal_by_kind(store: Store) -> None:
    alice, bob = principal("alice"), principal("bob")
    first = token(alice.id, kind="cert", id="a" * 64, created_at=T0)
    second = token(alice.id, kind="cert", id="b" * 64, created_at=T0 + timedelta(seconds=1))
    async with store.write() as w:
        await w.principals.insert(alice)
        await w.principals.insert(bob)
        for tok in (second, first, token(alice.id), token(bob.id, kind="cert")):
            await w.tokens.insert(tok)
    async with store.read() as r:
        assert [t.id for t in await r.tokens.of_principal(alice.id, "cert")] == [first.id, second.id]
        assert await r.tokens.of_principal("prn_missing", "cert") == []


async def test_rotated_with_live_successor(store: Store) -> None:
    """A refresh at instant t revokes the old refresh token at t and issues its successor at t; an
    admin's revoke issues nothing; a revoked family has no live refresh token."""
    alice = principal("alice")
    rotated_at = T0 + timedelta(minutes=1)
    used = token(alice.id, kind="refresh", family_id="fam_a", revoked_at=rotated_at)
    successor = token(alice.id, kind="refresh", family_id="fam_a", created_at=rotated_at)
    access = token(alice.id, family_id="fam_b", created_at=rotated_at)  # not a refresh token
    admin_revoked = token(alice.id, kind="refresh", family_id="fam_b", revoked_at=rotated_at)
    async with store.write() as w:
        await w.principals.insert(alice)
        for tok in (used, successor, access, admin_revoked):
            await w.tokens.insert(tok)
    now = rotated_at + timedelta(seconds=5)
    async with store.read() as r:
        assert await r.tokens.rotated_with_live_successor("fam_a", rotated_at, now) is True
        assert await r.tokens.rotated_with_live_successor("fam_b", rotated_at, now) is False
        # The successor past its expiry (an hour after T0) is not live.
        assert (
            await r.tokens.rotated_with_live_successor("fam_a", rotated_at, T0 + timedelta(hours=2)) is False
        )
    async with store.write() as w:
        await w.tokens.revoke_family("fam_a", now)
    async with store.read() as r:
        assert await r.tokens.rotated_with_live_successor("fam_a", rotated_at, now) is False
