"""The approval lifecycle end to end in process: request, votes, quorum, signature, result once."""

from __future__ import annotations

from datetime import datetime

import pytest

from signer.errors import Conflict, Forbidden, NotFound
from tests.approvals.support import RECIPIENT, World, recover_sender, signed_fields


async def test_two_of_three_signs_exactly_the_stored_payload_once(world: World) -> None:
    key = await world.key()
    requester = await world.requester(key)
    alice, bob, carol = [await world.person() for _ in range(3)]
    for p in (alice, bob, carol):
        await world.join("treasury", p)
    record = await world.request(requester, key)
    assert record.state == "pending"

    shown = await world.approvals.show(alice.ctx, record.id)
    assert shown["view"]["to"] == RECIPIENT
    assert shown["view"]["value_eth"] == "5"
    assert shown["view"]["chainId"] == "1"
    assert shown["view"]["from"] == key.address
    assert shown["view"]["requested_by"]["principal_id"] == requester.id

    after_one = await world.approvals.approve(alice.ctx, record.id, record.payload_digest)
    assert after_one["state"] == "pending" and after_one["progress"] == {"treasury": 1}
    status, body = await world.approvals.result(requester.ctx, record.id)
    assert (status, body["state"]) == (202, "pending")

    done = await world.approvals.approve(bob.ctx, record.id, record.payload_digest)
    assert done["state"] == "signed"
    with pytest.raises(Conflict) as late:
        await world.approvals.approve(carol.ctx, record.id, record.payload_digest)
    assert late.value.code == "approval_closed"

    status, body = await world.approvals.result(requester.ctx, record.id)
    assert status == 200
    result = body["result"]
    assert recover_sender(result) == key.address
    signed = signed_fields(result)
    assert "0x" + bytes(signed["to"]).hex() == RECIPIENT.lower()
    assert (signed["value"], signed["chainId"]) == (5 * 10**18, 1)
    # The requester may fetch it again (a replica that lost the answer) until it expires.
    status, again = await world.approvals.result(requester.ctx, record.id)
    assert status == 200 and again["result"] == result
    fetchable_until = datetime.fromisoformat(again["fetchable_until"].replace("Z", "+00:00"))
    assert fetchable_until >= record.expires_at
    world.clock.jump(seconds=(fetchable_until - world.clock()).total_seconds() + 1)
    with pytest.raises(Conflict) as late:
        await world.approvals.result(requester.ctx, record.id)
    assert late.value.code == "result_already_fetched"

    async with world.store.read() as reader:
        kinds = [e.kind for e in await reader.audit.events(limit=1000)]
    for kind in (
        "approval.requested",
        "approval.vote",
        "approval.approved",
        "sign.transaction",
        "approval.signed",
        "approval.result_fetched",
    ):
        assert kind in kinds
    assert kinds.count("sign.transaction") == 1


async def test_visibility_reject_and_cancel(world: World) -> None:
    key = await world.key()
    requester = await world.requester(key)
    other_service = await world.requester(key)
    alice, outsider = await world.person(), await world.person()
    await world.join("treasury", alice)
    await world.join("security", outsider)
    record = await world.request(requester, key)

    for stranger in (other_service, outsider):
        with pytest.raises(NotFound):
            await world.approvals.show(stranger.ctx, record.id)
        assert await world.approvals.list_requests(stranger.ctx) == []
    assert [r["id"] for r in await world.approvals.list_requests(alice.ctx)] == [record.id]
    assert [r["id"] for r in await world.approvals.list_requests(requester.ctx)] == [record.id]
    assert [r["id"] for r in await world.approvals.list_requests(world.admin_person.ctx)] == [record.id]

    rejected = await world.approvals.reject(alice.ctx, record.id, record.payload_digest)
    assert rejected["state"] == "rejected"
    status, body = await world.approvals.result(requester.ctx, record.id)
    assert (status, body["state"]) == (200, "rejected")

    second = await world.request(requester, key)
    with pytest.raises(Forbidden):
        await world.approvals.cancel(alice.ctx, second.id)
    assert (await world.approvals.cancel(requester.ctx, second.id))["state"] == "cancelled"
    with pytest.raises(Conflict):
        await world.approvals.approve(alice.ctx, second.id, second.payload_digest)


async def test_signed_approvals_secp256k1_required_and_verified(world: World) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from signer.errors import Unprocessable
    from signer.services.approvals import approval_message

    key = await world.key()
    requester = await world.requester(key)
    alice, bob = await world.person(), await world.person()
    for p in (alice, bob):
        await world.join("treasury", p)
    record = await world.request(requester, key, signed_approvals=True)

    with pytest.raises(Unprocessable) as unsigned:
        await world.approvals.approve(alice.ctx, record.id, record.payload_digest)
    assert unsigned.value.code == "approval_signature_required"

    wallets = {p.id: Account.create() for p in (alice, bob)}
    for p in (alice, bob):
        public = "04" + wallets[p.id]._key_obj.public_key.to_bytes().hex()
        await world.approvals.register_key(p.ctx, "secp256k1", public)

    def sign(person, decision: str = "approve", digest: str = record.payload_digest) -> str:
        message = approval_message(record.id, decision, digest)
        return wallets[person.id].sign_message(encode_defunct(message)).signature.hex()

    with pytest.raises(Unprocessable) as forged:
        await world.approvals.approve(alice.ctx, record.id, record.payload_digest, signature=sign(bob))
    assert forged.value.code == "approval_signature_invalid"
    with pytest.raises(Unprocessable):
        await world.approvals.approve(
            alice.ctx, record.id, record.payload_digest, signature=sign(alice, "reject")
        )
    await world.approvals.approve(alice.ctx, record.id, record.payload_digest, signature=sign(alice))
    done = await world.approvals.approve(bob.ctx, record.id, record.payload_digest, signature=sign(bob))
    assert done["state"] == "signed"
    for vote in done["votes"]:
        message = encode_defunct(approval_message(record.id, "approve", record.payload_digest))
        recovered = Account.recover_message(message, signature=bytes.fromhex(vote["signature"]))
        assert recovered == wallets[vote["approver_id"]].address
