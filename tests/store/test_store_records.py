"""CRUD of every record type, conflicts, validation, timestamps and the facts epoch: on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from signer.errors import Conflict, NotFound
from signer.store import Store, Writer
from tests.store.store_testkit import T0, event, grant, key, principal, token


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


async def test_key_roundtrip_listing_and_state(store: Store) -> None:
    keys = [key(id=f"key_{i:02d}", state="active" if i % 2 else "disabled") for i in range(7)]
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
        await w.keys.set_state("key_01", "disabled", changed_at)
        await w.keys.set_state("key_01", "disabled", changed_at)  # no change, no bump
        assert w.epoch == 1
        with pytest.raises(NotFound) as missing:
            await w.keys.set_state("key_missing", "active", changed_at)
        with pytest.raises(ValueError):
            await w.keys.set_state("key_01", "destroyed", changed_at)
    assert missing.value.code == "key_not_found"
    async with store.read() as r:
        got = await r.keys.get("key_01")
        assert got is not None and got.state == "disabled" and got.updated_at == changed_at
        assert got.created_at == T0
        assert await r.epoch() == 1


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


async def test_meta(store: Store) -> None:
    async with store.read() as r:
        install_id = await r.meta.get("install_id")
        assert install_id is not None and len(install_id) == 32
        assert await r.meta.get("audit_salt") is None
    async with store.write() as w:
        await w.meta.set("audit_salt", "aa")
        with pytest.raises(Conflict) as dup:
            await w.meta.set("audit_salt", "bb")
        assert dup.value.code == "meta_exists"
        await w.meta.set("audit_salt", "cc", replace=True)
        await w.meta.set("fresh", "dd", replace=True)
    async with store.read() as r:
        assert (await r.meta.get("audit_salt"), await r.meta.get("fresh")) == ("cc", "dd")


async def test_timestamps_are_aware_utc_and_exact(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=plus_two)
    alice = principal("alice", created_at=local)
    async with store.write() as w:
        await w.principals.insert(alice)
    async with store.read() as r:
        got = await r.principals.get(alice.id)
    assert got is not None
    assert got.created_at == local and got.created_at.tzinfo == UTC
    assert got.created_at.hour == 10 and got.created_at.microsecond == 999999


@pytest.mark.parametrize(
    "bad",
    [
        lambda w: w.principals.insert(principal(created_at=datetime(2026, 1, 1))),  # naive
        lambda w: w.principals.insert(principal(role="root")),
        lambda w: w.principals.insert(principal(name="")),
        lambda w: w.tokens.insert(token("prn_x", digest=b"short")),
        lambda w: w.tokens.insert(token("prn_x", kind="session")),
        lambda w: w.keys.insert(key(state="lost")),
        lambda w: w.grants.insert(grant("prn_x", "k", resource_type="planet")),
        lambda w: w.grants.insert(grant("prn_x", "k", operations="sign")),
        lambda w: w.tokens.revoke("tok", datetime(2026, 1, 1)),
        lambda w: w.grants.active("p", "key", "k", datetime(2026, 1, 1)),
    ],
)
async def test_validation_refuses_before_writing(store: Store, bad) -> None:  # type: ignore[no-untyped-def]
    async with store.write() as w:
        with pytest.raises(ValueError):
            await bad(w)
        # A refused call did not reach the database: the transaction is still fine.
        await w.principals.insert(principal("after"))
    async with store.read() as r:
        assert [p.name for p in await r.principals.all()] == ["after"]


async def test_write_rolls_back_on_exception(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.write() as w:
            await w.principals.insert(principal("ghost"))
            w.append_audit(event())
            w.bump_epoch()
            raise Boom
    async with store.read() as r:
        assert await r.principals.all() == []
        assert await r.audit_head() == (0, "0" * 64)
        assert await r.epoch() == 0
        assert await r.audit.events() == []


async def test_writer_sees_its_own_writes_and_readers_do_not(store: Store) -> None:
    alice = principal("alice")
    async with store.write() as w:
        await w.principals.insert(alice)
        assert await w.principals.get(alice.id) == alice
        record = w.append_audit(event())
        assert w.head == (1, record.hash)
        assert await w.audit_head() == (1, record.hash)
        async with store.read() as r:
            assert await r.principals.get(alice.id) is None
            assert await r.audit_head() == (0, "0" * 64)
    async with store.read() as r:
        assert await r.principals.get(alice.id) == alice
        assert await r.audit_head() == (1, record.hash)


async def test_writer_with_a_swallowed_failed_statement_refuses_to_commit(store: Store) -> None:
    with pytest.raises(Conflict):
        async with store.write() as w:
            await w.principals.insert(principal("alice"))
            try:
                await w.tokens.insert(token("prn_missing"))
            except NotFound:
                pass  # swallowed: the writer must still refuse to commit
    async with store.read() as r:
        assert await r.principals.all() == []


async def test_epoch_is_shared_through_the_database(store_url: str) -> None:
    from tests.dbfixtures import fresh_store

    async with fresh_store(store_url) as a, fresh_store(store_url) as b:

        async def bump(w: Writer) -> int:
            return w.bump_epoch()

        assert await a.submit(bump) == 1
        assert await b.submit(bump) == 2
        async with a.read() as r:
            assert await r.epoch() == 2
