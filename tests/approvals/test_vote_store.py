"""The store's side of "a vote is counted or refused": on SQLite and PostgreSQL the store refuses to
record a vote whose digest is not the request's stored digest byte for byte (another spelling included),
and the tally compares canonical forms, so a row written in another spelling before that rule still
counts. Plus the service's edge: every spelling of the digest reaches the store as the canonical one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from signer.errors import InvalidRequest, SignerError
from signer.services.approvals import canonical_digest
from signer.store import ApprovalVoteRecord, Writer
from tests.approvals.support import World


async def test_the_store_refuses_a_vote_in_another_spelling(world: World) -> None:
    key = await world.key()
    requester = await world.requester(key)
    alice = await world.person()
    await world.join("treasury", alice)
    record = await world.request(requester, key)
    digest = record.payload_digest

    for named in ("0x" + digest, digest.upper(), "0X" + digest.upper(), "00" * 32):

        async def unit(writer: Writer, named: str = named) -> None:
            await writer.approvals.insert_vote(
                ApprovalVoteRecord(
                    record.id, alice.id, alice.ctx.caller.token_id, "reject", named, datetime.now(UTC)
                )
            )

        with pytest.raises(SignerError) as caught:
            await world.store.submit(unit)
        assert caught.value.code == "approval_mismatch"
    async with world.store.read() as reader:
        assert await reader.approvals.votes(record.id) == []

    # Through the service the same spelling is canonicalised first, so it is recorded and counted.
    shown = await world.approvals.reject(alice.ctx, record.id, "0X" + digest.upper())
    assert shown["state"] == "rejected" and shown["votes"][0]["digest"] == digest


async def test_a_row_stored_in_another_spelling_before_the_rule_still_counts(world: World) -> None:
    key = await world.key()
    requester = await world.requester(key)
    alice, bob = await world.person(), await world.person()
    for person in (alice, bob):
        await world.join("treasury", person)
    record = await world.request(requester, key, quorum={"treasury": 2})

    async def legacy(writer: Writer) -> None:
        # What the service stored before canonicalising: the voter's own spelling.
        await writer._execute(
            text(
                "INSERT INTO approval_votes (request_id, approver_id, token_id, decision, digest, created_at)"
                " VALUES (:r, :a, :t, 'approve', :d, :c)"
            ),
            {
                "r": record.id,
                "a": alice.id,
                "t": alice.ctx.caller.token_id,
                "d": "0X" + record.payload_digest.upper(),
                "c": datetime.now(UTC),
            },
        )

    await world.store.submit(legacy)
    shown = await world.approvals.show(world.admin_person.ctx, record.id)
    assert shown["progress"] == {"treasury": 1} and shown["votes"][0]["counted"] is True
    assert shown["votes"][0]["digest"] == record.payload_digest  # shown in the one spelling
    done = await world.approvals.approve(bob.ctx, record.id, record.payload_digest)
    assert done["state"] == "signed"


def _refusal() -> InvalidRequest:
    try:
        canonical_digest("")
    except InvalidRequest as exc:
        return exc
    raise AssertionError("the empty string is not a digest")


_REFUSAL = _refusal()


@given(st.text(max_size=80))
def test_canonical_digest_accepts_exactly_the_spellings_of_64_hex_digits(named: str) -> None:
    bare = named[2:] if named[:2] in ("0x", "0X") else named
    spelled = len(bare) == 64 and all(c in "0123456789abcdefABCDEF" for c in bare)
    try:
        canonical = canonical_digest(named)
    except InvalidRequest as exc:
        # One fixed message: nothing of what was sent is echoed.
        assert not spelled and exc.code == "invalid_digest" and exc.message == _REFUSAL.message
    else:
        assert spelled and canonical == bare.lower()


@given(st.binary(min_size=32, max_size=32), st.lists(st.booleans(), min_size=64, max_size=64))
def test_every_spelling_of_a_digest_is_the_digest(raw: bytes, upper: list[bool]) -> None:
    digest = raw.hex()
    spelled = "".join(c.upper() if up else c for c, up in zip(digest, upper, strict=True))
    for prefix in ("", "0x", "0X"):
        assert canonical_digest(prefix + spelled) == digest
