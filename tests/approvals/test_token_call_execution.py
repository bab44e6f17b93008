"""Approved execution re-decodes the stored body strictly (issue 10 section 1): a pending request whose
stored calldata is not canonical (one written before strict decoding, or by any other path) is never
signed once approved: it ends ``failed`` with ``calldata_not_canonical``. A canonical token call that
waited for approvers is signed, and eth-account recovers the key's address from it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from signer.services.payloads import prepare_payload
from signer.store import Writer
from tests.approvals.support import World, approval_decision, recover_sender, tx_fields

TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
CANONICAL = "0xa9059cbb" + BOB[2:].lower().rjust(64, "0") + format(11, "064x")


def _body(data: str) -> dict:
    return {"transaction": {**tx_fields(value=0, to=TOKEN), "gas": 90000, "data": data}}


async def _pending(world: World, data: str):
    key = await world.key()
    requester = await world.requester(key)
    people = [await world.person() for _ in range(2)]
    for person in people:
        await world.join("treasury", person)
    prepared = prepare_payload("sign_transaction", _body(CANONICAL), key)
    # The stored body is what execution prepares again; here it is not the canonical call.
    if data != CANONICAL:
        prepared = dataclasses.replace(prepared, body=_body(data))
    now = world.clock()
    decision = approval_decision({"treasury": 2}, now + timedelta(hours=1))

    async def unit(writer: Writer):
        return await world.pending.open(
            writer,
            requester.ctx,
            operation="sign_transaction",
            resource=key,
            prepared=prepared,
            decision=decision,
            now=now,
        )

    record = await world.store.submit(unit)
    return key, requester, people, record


async def test_stored_non_canonical_calldata_is_never_signed_on_approval(world: World) -> None:
    _, requester, (a, b), record = await _pending(world, CANONICAL + "00")
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    shown = await world.approvals.approve(b.ctx, record.id, record.payload_digest)
    assert shown["state"] == "failed", shown
    status, body = await world.approvals.result(requester.ctx, record.id)
    assert body["state"] == "failed" and body["error"]["code"] == "calldata_not_canonical", (status, body)
    assert "result" not in body or not body["result"]


async def test_a_canonical_token_call_is_signed_on_approval(world: World) -> None:
    key, requester, (a, b), record = await _pending(world, CANONICAL)
    await world.approvals.approve(a.ctx, record.id, record.payload_digest)
    shown = await world.approvals.approve(b.ctx, record.id, record.payload_digest)
    assert shown["state"] == "signed", await world.approvals.result(requester.ctx, record.id)
    assert shown["view"]["token_call"]["amount"] == "11"
    status, body = await world.approvals.result(requester.ctx, record.id)
    assert status == 200 and recover_sender(body["result"]) == key.address


async def test_approvers_see_a_permit_decoded(world: World) -> None:
    key = await world.key()
    requester = await world.requester(key)
    approver = await world.person()
    await world.join("treasury", approver)
    from tests.system.test_token_calls import permit

    record = await world.request(
        requester, key, {"typed_data": permit(2**256 - 1)}, operation="sign_typed_data"
    )
    shown = await world.approvals.show(approver.ctx, record.id)
    (decoded,) = shown["view"]["permits"]
    assert (decoded["standard"], decoded["token"], decoded["spender"]) == ("eip2612", TOKEN, BOB)
    assert decoded["amount"] == str(2**256 - 1) and decoded["unbounded"] is True
