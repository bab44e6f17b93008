"""Requests that policy sends for approval through the real SigningService: the rule's rejection limit
and its demand for signed approvals reach the stored request; the policy's own parsing and merging."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from policy import PolicyDocumentError, parse_policy_document
from signer.errors import Unprocessable
from signer.services.approvals import approval_message
from tests.approvals.support import World, recover_sender, tx_fields


def _doc(approval: dict) -> dict:
    rule = {
        "id": "big",
        "kind": "value_cap",
        "effect": "require_approval",
        "max_value": "1",
        "approval": approval,
    }
    return {"id": "p", "version": 1, "rules": [rule]}


def test_policy_parses_rejections_and_signed_and_keeps_old_digests() -> None:
    base = {"quorum": 2, "group": "treasury", "expires_in_seconds": 60}
    plain = parse_policy_document(_doc(base))
    explicit_defaults = parse_policy_document(_doc({**base, "rejections": 1, "signed": False}))
    assert plain.digest == explicit_defaults.digest  # documents written before these fields keep their digest
    strict = parse_policy_document(_doc({**base, "rejections": 2, "signed": True}))
    spec = strict.rules[0].approval
    assert spec is not None and (spec.rejections, spec.signed) == (2, True)
    assert strict.digest != plain.digest
    for bad in ({**base, "rejections": 0}, {**base, "signed": "yes"}):
        with pytest.raises(PolicyDocumentError):
            parse_policy_document(_doc(bad))


async def _setup(world: World, **approval):
    key = await world.key()
    requester = await world.requester(key)
    people = [await world.person() for _ in range(3)]
    group = f"g-{key.id[-8:]}"
    for p in people:
        await world.join(group, p)
    await world.require_approval(key, group, 2, **approval)
    body = await world.signing.sign_transaction(requester.ctx, key.id, tx_fields(), None)
    assert body["state"] == "pending_approval", body
    return key, requester, people, body["approval"]["id"], body["payload_digest"]


async def test_two_rejections_end_the_request(world: World) -> None:
    _, _, (a, b, _), approval_id, digest = await _setup(world, rejections=2)
    assert (await world.approvals.reject(a.ctx, approval_id, digest))["state"] == "pending"
    assert (await world.approvals.reject(b.ctx, approval_id, digest))["state"] == "rejected"


async def test_a_rule_that_demands_signed_approvals(world: World) -> None:
    key, requester, (a, b, _), approval_id, digest = await _setup(world, signed=True)
    with pytest.raises(Unprocessable) as caught:
        await world.approvals.approve(a.ctx, approval_id, digest)
    assert caught.value.code == "approval_signature_required"
    wallets = {p.id: Account.create() for p in (a, b)}
    for p in (a, b):
        await world.approvals.register_key(
            p.ctx, "secp256k1", "04" + wallets[p.id]._key_obj.public_key.to_bytes().hex()
        )
        message = encode_defunct(approval_message(approval_id, "approve", digest))
        signature = wallets[p.id].sign_message(message).signature.hex()
        shown = await world.approvals.approve(p.ctx, approval_id, digest, signature=signature)
    assert shown["state"] == "signed"
    status, result = await world.approvals.result(requester.ctx, approval_id)
    assert status == 200 and recover_sender(result["result"]) == key.address
    assert datetime.fromisoformat(shown["expires_at"].replace("Z", "+00:00")) > datetime.now(UTC)
