"""Approval requests, votes and approver keys in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from signer.errors import Conflict, NotFound
from signer.store import ApprovalRequestRecord, ApprovalVoteRecord, ApproverKeyRecord, Store
from tests.store.store_testkit import T0, principal, token, uid


def request_record(requester_id: str, **kw) -> ApprovalRequestRecord:
    return ApprovalRequestRecord(
        id=kw.pop("id", uid("apr")),
        kind="sign_transaction",
        resource_id="key_x",
        requester_id=requester_id,
        payload={"operation": "sign_transaction", "body": {"transaction": {"chainId": "1"}}},
        payload_digest="ab" * 32,
        view={"chain_id": 1},
        requirements={"approvals": [{"group": "treasury", "quorum": 2}]},
        state=kw.pop("state", "pending"),
        created_at=T0,
        expires_at=T0 + timedelta(hours=1),
        updated_at=T0,
    )


async def _people(store: Store):
    requester, approver = principal(), principal(role="approver")
    tok = token(approver.id)

    async def unit(writer):
        await writer.principals.insert(requester)
        await writer.principals.insert(approver)
        await writer.tokens.insert(tok)

    await store.submit(unit)
    return requester, approver, tok


def vote(request_id: str, approver_id: str, token_id: str, decision: str = "approve") -> ApprovalVoteRecord:
    return ApprovalVoteRecord(
        request_id=request_id,
        approver_id=approver_id,
        token_id=token_id,
        decision=decision,
        digest="ab" * 32,
        created_at=T0,
    )


async def test_request_round_trip_and_votes_dedupe_per_identity(store: Store) -> None:
    requester, approver, tok = await _people(store)
    record = request_record(requester.id)

    async def create(writer):
        await writer.approvals.insert(record)
        await writer.approvals.insert_vote(vote(record.id, approver.id, tok.id))

    await store.submit(create)
    async with store.read() as reader:
        assert await reader.approvals.get(record.id) == record
        votes = await reader.approvals.votes(record.id)
    assert [(v.approver_id, v.decision, v.token_found, v.token_revoked_at) for v in votes] == [
        (approver.id, "approve", True, None)
    ]

    async def again(writer):
        await writer.approvals.insert_vote(vote(record.id, approver.id, tok.id, "reject"))

    with pytest.raises(Conflict) as caught:
        await store.submit(again)
    assert caught.value.code == "approval_already_voted"

    async def revoke(writer):
        await writer.tokens.revoke(tok.id, T0 + timedelta(minutes=1))

    await store.submit(revoke)
    async with store.read() as reader:
        (after,) = await reader.approvals.votes(record.id)
    assert after.token_revoked_at == T0 + timedelta(minutes=1)


async def test_transition_is_compare_and_set(store: Store) -> None:
    requester, _, _ = await _people(store)
    record = request_record(requester.id)

    async def create(writer):
        await writer.approvals.insert(record)

    await store.submit(create)

    async def approve(writer):
        locked = await writer.approvals.lock(record.id)
        assert locked is not None
        return await writer.approvals.transition(record.id, ["pending"], "approved", T0)

    # Racing units: exactly one moves the request.
    moved = await asyncio.gather(*(store.submit(approve) for _ in range(4)))
    assert sorted(moved) == [False, False, False, True]

    async def sign(writer):
        return await writer.approvals.transition(record.id, ["approved"], "signed", T0, result={"r": "0x1"})

    assert await store.submit(sign) is True

    async def fetch(writer):
        return await writer.approvals.mark_result_fetched(record.id, T0)

    assert [await store.submit(fetch), await store.submit(fetch)] == [True, False]
    async with store.read() as reader:
        stored = await reader.approvals.get(record.id)
        listed = await reader.approvals.all(states=["signed"], requester_id=requester.id)
    assert stored is not None and stored.state == "signed" and stored.result == {"r": "0x1"}
    assert [r.id for r in listed] == [record.id]


async def test_vote_on_unknown_request_and_approver_keys(store: Store) -> None:
    _, approver, tok = await _people(store)

    async def stray(writer):
        await writer.approvals.insert_vote(vote("apr_missing", approver.id, tok.id))

    with pytest.raises(NotFound):
        await store.submit(stray)

    async def register(writer):
        await writer.approvals.set_approver_key(ApproverKeyRecord(approver.id, "ed25519", "aa" * 32, T0))
        await writer.approvals.set_approver_key(
            ApproverKeyRecord(approver.id, "secp256k1", "02" + "bb" * 32, T0)
        )

    await store.submit(register)
    async with store.read() as reader:
        stored = await reader.approvals.get_approver_key(approver.id)
    assert stored == ApproverKeyRecord(approver.id, "secp256k1", "02" + "bb" * 32, T0)
