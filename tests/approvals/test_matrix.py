"""Matrix rows L-07 (raced final approvals), A-08 (bait and switch), A-09 (approval abuse) and F-15
(clock jumps), against the real services, token and database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text

from signer.errors import Conflict, Forbidden, SignerError
from signer.services.approvals import ApprovalsService
from signer.services.signing import SigningService
from signer.store import Store
from tests.approvals.support import World, recover_sender, signed_fields, tx_fields
from tests.dbfixtures import fresh_store


async def _audit_kinds(store: Store) -> list[str]:
    async with store.read() as reader:
        return [e.kind for e in await reader.audit.events(limit=10_000)]


async def _signatures_released(store: Store) -> int:
    """Signing events with outcome "allowed": the only way a signature leaves the service."""
    async with store.read() as reader:
        events = [json.loads(e.event) for e in await reader.audit.events(limit=10_000)]
    return sum(1 for e in events if e["kind"].startswith("sign.") and e.get("outcome") == "allowed")


async def _setup(world: World, approvers: int = 3, quorum: int = 2, **request):
    key = await world.key()
    requester = await world.requester(key)
    people = [await world.person() for _ in range(approvers)]
    for p in people:
        await world.join("treasury", p)
    record = await world.request(requester, key, quorum={"treasury": quorum}, **request)
    return key, requester, people, record


async def _settle(results):
    out = []
    for item in results:
        out.append(item.code if isinstance(item, SignerError) else item["state"])
    return sorted(out)


# -- L-07 -------------------------------------------------------------------------------------------


async def test_l07_last_two_approvers_at_once_sign_once(world: World) -> None:
    key, requester, (a, b, c), record = await _setup(world, quorum=3)
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    results = await asyncio.gather(
        world.approvals.approve(b.ctx, record.id, record.payload_digest),
        world.approvals.approve(c.ctx, record.id, record.payload_digest),
        return_exceptions=True,
    )
    assert all(not isinstance(r, BaseException) or isinstance(r, SignerError) for r in results), results
    assert "signed" in await _settle(results)
    kinds = await _audit_kinds(world.store)
    assert await _signatures_released(world.store) == 1 and kinds.count("approval.signed") == 1
    status, body = await world.approvals.result(requester.ctx, record.id)
    assert status == 200 and recover_sender(body["result"]) == key.address


async def test_l07_same_approver_double_submits(world: World) -> None:
    _, _, (a, b, _), record = await _setup(world)
    twice = await asyncio.gather(
        world.approvals.approve(a.ctx, record.id, record.payload_digest),
        world.approvals.approve(a.ctx, record.id, record.payload_digest),
        return_exceptions=True,
    )
    assert await _settle(twice) == ["approval_already_voted", "pending"]
    second_token = await world.new_token(a)
    with pytest.raises(Conflict) as dup:
        await world.approvals.approve(second_token.ctx, record.id, record.payload_digest)
    assert dup.value.code == "approval_already_voted"
    assert (await world.approvals.show(a.ctx, record.id))["progress"] == {"treasury": 1}
    assert (await world.approvals.approve(b.ctx, record.id, record.payload_digest))["state"] == "signed"
    assert await _signatures_released(world.store) == 1


async def test_l07_two_processes_race_the_final_approval(world: World, store_url: str) -> None:
    """Two services on two stores (two pools, as two worker processes have) on the same database."""
    _, _requester, (a, b, c), record = await _setup(world, quorum=2)
    async with fresh_store(store_url) as other_store:
        other = ApprovalsService(
            other_store,
            SigningService(other_store, world.hsm, world.signing._facts, world.auth),
            clock=world.clock,
        )
        results = await asyncio.gather(
            world.approvals.approve(a.ctx, record.id, record.payload_digest),
            other.approve(b.ctx, record.id, record.payload_digest),
            other.approve(c.ctx, record.id, record.payload_digest),
            return_exceptions=True,
        )
    settled = await _settle(results)
    assert settled.count("signed") >= 1, settled
    # A vote that lands first may read the request back while another's execution is under way.
    assert set(settled) <= {"signed", "pending", "approved", "approval_closed"}, settled
    assert (await world.approvals.show(a.ctx, record.id))["state"] == "signed"
    kinds = await _audit_kinds(world.store)
    assert await _signatures_released(world.store) == 1 and kinds.count("approval.signed") == 1


# -- A-08 -------------------------------------------------------------------------------------------


async def test_a08_vote_naming_another_digest_is_refused(world: World) -> None:
    key, requester, (a, _b, _), record = await _setup(world)
    other = await world.request(requester, key, {"transaction": tx_fields(value=6 * 10**18)})
    assert other.payload_digest != record.payload_digest
    with pytest.raises(Conflict) as caught:
        await world.approvals.approve(a.ctx, record.id, other.payload_digest)
    assert caught.value.code == "approval_mismatch"
    assert (await world.approvals.show(a.ctx, record.id))["progress"] == {"treasury": 0}
    assert "approval.vote_refused" in await _audit_kinds(world.store)


@pytest.mark.parametrize(
    "field,value",
    [("to", "0x" + "11" * 20), ("value", "1"), ("chainId", "5"), ("gas", "50000"), ("data", "0xa9059cbb")],
)
async def test_a08_payload_edited_after_approval_never_signs(world: World, field: str, value: str) -> None:
    _, requester, (a, b, _), record = await _setup(world)
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    payload = dict(record.payload)
    payload["body"] = {"transaction": {**payload["body"]["transaction"], field: value}}
    async with world.store.write() as writer:
        await writer._execute(
            text("UPDATE approval_requests SET payload = :p WHERE id = :i"),
            {"p": json.dumps(payload), "i": record.id},
        )
    final = await world.approvals.approve(b.ctx, record.id, record.payload_digest)
    # A bare token selector is not a canonical token call: refused while decoding, before the digest.
    expected = "calldata_not_canonical" if field == "data" else "approval_mismatch"
    assert final["state"] == "failed" and final["error"]["code"] == expected
    status, body = await world.approvals.result(requester.ctx, record.id)
    assert status == 200 and "result" not in body
    assert await _signatures_released(world.store) == 0


async def test_a08_payload_and_digest_edited_together_voids_the_votes(world: World) -> None:
    key, requester, (a, b, _), record = await _setup(world)
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    swapped = await world.request(requester, key, {"transaction": tx_fields(to="0x" + "22" * 20)})
    async with world.store.write() as writer:
        await writer._execute(
            text(
                "UPDATE approval_requests SET payload_digest = :d,"
                " payload = (SELECT payload FROM approval_requests WHERE id = :s) WHERE id = :i"
            ),
            {"s": swapped.id, "d": swapped.payload_digest, "i": record.id},
        )
    # Alice's vote named the old digest: it no longer counts, so Bob alone is not a quorum.
    after = await world.approvals.approve(b.ctx, record.id, swapped.payload_digest)
    assert after["state"] == "pending" and after["progress"] == {"treasury": 1}
    assert await _signatures_released(world.store) == 0


# -- A-09 -------------------------------------------------------------------------------------------


async def test_a09_requester_never_counts(world: World) -> None:
    _, requester, (a, _, _), record = await _setup(world)
    await world.join("treasury", requester)
    with pytest.raises(Forbidden) as caught:
        await world.approvals.approve(requester.ctx, record.id, record.payload_digest)
    assert caught.value.code == "self_approval"
    assert (await world.approvals.approve(a.ctx, record.id, record.payload_digest))["state"] == "pending"


@pytest.mark.parametrize("how", ["revoke_token", "disable_principal", "leave_group"])
async def test_a09_revoked_approver_stops_counting_at_once(world: World, how: str) -> None:
    key, requester, (a, b, c), record = await _setup(world)
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    if how == "revoke_token":
        await world.auth.revoke(world.admin_person.ctx, a.ctx.caller.token_id)
    elif how == "disable_principal":
        await world.admin.set_principal_disabled(world.admin_person.ctx, a.id, True)
    else:
        await world.leave("treasury", a)
    shown = await world.approvals.show(b.ctx, record.id)
    assert shown["progress"] == {"treasury": 0}
    assert [v["counted"] for v in shown["votes"]] == [False]
    assert (await world.approvals.approve(b.ctx, record.id, record.payload_digest))["state"] == "pending"
    assert (await world.approvals.approve(c.ctx, record.id, record.payload_digest))["state"] == "signed"
    _, body = await world.approvals.result(requester.ctx, record.id)
    assert recover_sender(body["result"]) == key.address


async def test_a09_approval_after_expiry_and_quorum_snapshot(world: World) -> None:
    key, requester, (a, b, _), record = await _setup(world, expires_in=60)
    # Policy changed afterwards: new requests need one approval; this one keeps its two.
    lowered = await world.request(requester, key, quorum={"treasury": 1})
    assert (await world.approvals.approve(a.ctx, record.id, record.payload_digest))["state"] == "pending"
    assert (await world.approvals.approve(a.ctx, lowered.id, lowered.payload_digest))["state"] == "signed"
    world.clock.jump(seconds=61)
    with pytest.raises(Conflict) as caught:
        await world.approvals.approve(b.ctx, record.id, record.payload_digest)
    assert caught.value.code == "approval_expired"
    assert (await world.approvals.show(a.ctx, record.id))["state"] == "expired"
    assert await _signatures_released(world.store) == 1
    assert "approval.expired" in await _audit_kinds(world.store)


# -- F-15 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jump_days", [1, -1])
async def test_f15_expired_stays_expired_whatever_the_clock_does(world: World, jump_days: int) -> None:
    _, requester, (a, b, _), record = await _setup(world, expires_in=3600)
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    world.clock.jump(hours=2)
    status, body = await world.approvals.result(requester.ctx, record.id)
    assert (status, body["state"]) == (200, "expired")
    world.clock.jump(days=jump_days, hours=-2)  # back to "before expiry", or a day later
    with pytest.raises(Conflict) as caught:
        await world.approvals.approve(b.ctx, record.id, record.payload_digest)
    assert caught.value.code in ("approval_closed", "approval_expired")
    assert (await world.approvals.show(a.ctx, record.id))["state"] == "expired"
    assert await _signatures_released(world.store) == 0


async def test_f15_backwards_jump_does_not_extend_a_window(world: World) -> None:
    """The expiry is an instant fixed at creation: a clock set back an hour does not move it."""
    _, _, (a, b, _), record = await _setup(world, expires_in=60)
    world.clock.jump(hours=-1)
    assert (await world.approvals.approve(a.ctx, record.id, record.payload_digest))["state"] == "pending"
    shown = await world.approvals.show(b.ctx, record.id)
    assert shown["expires_at"].startswith(record.expires_at.isoformat()[:19])
    world.clock.jump(hours=1, seconds=61)
    with pytest.raises(Conflict):
        await world.approvals.approve(b.ctx, record.id, record.payload_digest)


async def test_long_poll_wakes_on_the_final_approval(world: World) -> None:
    key, requester, (a, b, _), record = await _setup(world)
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    waiter = asyncio.create_task(world.approvals.result(requester.ctx, record.id, wait=30))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await world.approvals.approve(b.ctx, record.id, record.payload_digest)
    status, body = await asyncio.wait_for(waiter, 10)
    assert status == 200 and signed_fields(body["result"])["nonce"] == 0
    assert recover_sender(body["result"]) == key.address
