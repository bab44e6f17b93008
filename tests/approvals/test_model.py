"""The approvals state machine against a model (hypothesis stateful): request, approve (the right digest
in any of its spellings, or another), reject, mutate the stored payload, let time pass, revoke an
approver's token, leave and rejoin the group, change the policy's quorum; one member of the group is a
service principal, whose votes are refused. Requests go through the real policy and SigningService.

The invariant: a signature is released only for a payload that M distinct eligible approvers approved
before expiry. The model predicts every outcome from that rule alone (M = the quorum when the request was
made; eligible = an approver, in the group now, voting token not revoked, never the requester; a vote
is counted whatever the spelling of its digest (``0x``, any case); and a policy made
stricter since does not accept fewer approvals than it now asks for), the service must
agree at every step, and every released signature must recover to the key and carry exactly the
transaction that was requested."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from signer.errors import SignerError
from signer.hsm import Hsm
from tests.approvals.support import Person, World, make_world, recover_sender, signed_fields, tx_fields
from tests.dbfixtures import fresh_store

EXPIRES_IN = 3600
PEOPLE = 5  # four approvers and, last, a service principal in the approver group
SPELLINGS = ("plain", "0x", "upper", "0X-upper", "mixed")


def spell(digest: str, style: str) -> str:
    """The same digest written another way: every one of these must count as the digest itself."""
    if style == "0x":
        return "0x" + digest
    if style == "upper":
        return digest.upper()
    if style == "0X-upper":
        return "0X" + digest.upper()
    if style == "mixed":
        return "".join(c.upper() if i % 2 else c for i, c in enumerate(digest))
    return digest


@dataclass
class Req:
    id: str
    digest: str
    fields: dict[str, Any]
    quorum: int
    expires_at: datetime
    state: str = "pending"
    votes: dict[str, tuple[str, str]] = field(default_factory=dict)  # principal -> (decision, token id)
    mutated: bool = False


class ApprovalMachine(RuleBasedStateMachine):
    world: World
    loop: asyncio.AbstractEventLoop
    requests = Bundle("requests")

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def setup(self) -> None:
        w = self.world
        w.clock.offset = timedelta(0)
        self.key = self.run(w.key())
        self.requester = self.run(w.requester(self.key))
        self.group = f"g-{self.key.id[-10:]}"
        self.people: list[Person] = [self.run(w.person()) for _ in range(PEOPLE - 1)]
        self.people.append(self.run(w.person("service")))
        self.service_id = self.people[-1].id
        for p in self.people:
            self.run(w.join(self.group, p))
        self.members = {p.id for p in self.people}
        self.revoked_tokens: set[str] = set()
        self.quorum = 2
        self.run(w.require_approval(self.key, self.group, self.quorum, expires_in=EXPIRES_IN))
        self.model: dict[str, Req] = {}
        self.released = 0
        self.nonce = 0

    # -- helpers ----------------------------------------------------------------------------------

    def _eligible_approvals(self, req: Req) -> int:
        return sum(
            1
            for pid, (decision, token) in req.votes.items()
            if decision == "approve" and pid in self.members and token not in self.revoked_tokens
        )

    def _due(self, req: Req) -> bool:
        return req.state == "pending" and self.world.clock() >= req.expires_at

    def _expect_refusal(self, call: Any, *codes: str) -> None:
        try:
            self.run(call)
        except SignerError as exc:
            assert exc.code in codes, (exc.code, codes)
        else:
            raise AssertionError(f"expected one of {codes}")

    # -- rules ------------------------------------------------------------------------------------

    @rule(target=requests, ether=st.integers(2, 50))
    def request(self, ether: int) -> Req:
        self.nonce += 1
        fields = tx_fields(nonce=self.nonce, value=ether * 10**18)
        body = self.run(self.world.signing.sign_transaction(self.requester.ctx, self.key.id, fields, None))
        assert body["state"] == "pending_approval", body
        req = Req(
            body["approval"]["id"],
            body["payload_digest"],
            fields,
            self.quorum,
            datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")),
        )
        assert body["requirements"][0]["quorum"] == self.quorum
        self.model[req.id] = req
        return req

    # Approving is most of what happens: three rules share it so that hypothesis picks it more often.
    def _pick(self, index: int) -> Req:
        """Mostly a request the model believes open (newest first), so that votes meet open requests."""
        open_ones = [r for r in reversed(self.model.values()) if r.state == "pending"]
        pool = open_ones or list(reversed(self.model.values()))
        return pool[index % len(pool)]

    @precondition(lambda self: bool(getattr(self, "model", None)))
    @rule(pick=st.integers(0, 3), who=st.integers(0, PEOPLE - 1), style=st.sampled_from(SPELLINGS))
    def approve(self, pick: int, who: int, style: str) -> None:
        self._approve(self._pick(pick), who, True, style)

    @precondition(lambda self: bool(getattr(self, "model", None)))
    @rule(pick=st.integers(0, 3), who=st.integers(0, PEOPLE - 1))
    def approve_too(self, pick: int, who: int) -> None:
        self._approve(self._pick(pick), who, True)

    @rule(req=requests, who=st.integers(0, PEOPLE - 1))
    def approve_another_digest(self, req: Req, who: int) -> None:
        self._approve(req, who, False)

    @rule(req=requests, who=st.integers(0, PEOPLE - 1), style=st.sampled_from(SPELLINGS))
    def approve_any(self, req: Req, who: int, style: str) -> None:
        self._approve(req, who, True, style)

    def _approve(self, req: Req, who: int, right_digest: bool, style: str = "plain") -> None:
        person = self.people[who]
        digest = spell(req.digest if right_digest else "0" * 64, style)
        call = self.world.approvals.approve(person.ctx, req.id, digest)
        if person.id not in self.members:
            self._expect_refusal(call, "approval_not_found")
            return
        if self._due(req):
            req.state = "expired"
            self._expect_refusal(call, "approval_expired")
            return
        if req.state != "pending":
            self._expect_refusal(call, "approval_closed", "approval_expired")
            return
        if person.id == self.service_id:
            self._expect_refusal(call, "approver_role_required")
            return
        if not right_digest:
            self._expect_refusal(call, "approval_mismatch")
            return
        if person.id in req.votes:
            self._expect_refusal(call, "approval_already_voted")
            return
        shown = self.run(call)
        req.votes[person.id] = ("approve", person.ctx.caller.token_id)
        if self._eligible_approvals(req) >= req.quorum:
            # Execution decides policy again: a policy made stricter since the request (a larger quorum
            # than was collected) is not covered by these approvals, and the request fails closed.
            req.state = "failed" if req.mutated or self.quorum > req.quorum else "signed"
        assert shown["state"] == req.state, (shown["state"], req)
        if req.state == "signed":
            self.released += 1
            status, result = self.run(self.world.approvals.result(self.requester.ctx, req.id))
            assert status == 200
            assert recover_sender(result["result"]) == self.key.address
            signed = signed_fields(result["result"])
            assert (signed["nonce"], signed["value"]) == (req.fields["nonce"], req.fields["value"])
            assert "0x" + bytes(signed["to"]).hex() == req.fields["to"].lower()

    @rule(req=requests, who=st.integers(0, PEOPLE - 1), style=st.sampled_from(SPELLINGS))
    def reject(self, req: Req, who: int, style: str) -> None:
        person = self.people[who]
        call = self.world.approvals.reject(person.ctx, req.id, spell(req.digest, style))
        if person.id not in self.members:
            self._expect_refusal(call, "approval_not_found")
            return
        if self._due(req):
            req.state = "expired"
            self._expect_refusal(call, "approval_expired")
            return
        if req.state != "pending":
            self._expect_refusal(call, "approval_closed", "approval_expired")
            return
        if person.id == self.service_id:
            self._expect_refusal(call, "approver_role_required")
            return
        if person.id in req.votes:
            self._expect_refusal(call, "approval_already_voted")
            return
        shown = self.run(call)
        req.votes[person.id] = ("reject", person.ctx.caller.token_id)
        if person.ctx.caller.token_id not in self.revoked_tokens:
            req.state = "rejected"
        assert shown["state"] == req.state

    @precondition(lambda self: bool(getattr(self, "model", None)))
    @rule(pick=st.integers(0, 3), ether=st.integers(51, 99))
    def mutate(self, pick: int, ether: int) -> None:
        """Someone with database access edits the stored payload after approvals began."""
        req = self._pick(pick)
        payload = {
            "operation": "sign_transaction",
            "key_id": self.key.id,
            "body": {
                "transaction": {
                    **tx_fields(nonce=req.fields["nonce"]),
                    "value": str(ether * 10**18),
                    "chainId": "1",
                    "nonce": str(req.fields["nonce"]),
                    "gas": "21000",
                    "maxFeePerGas": "3000000000",
                    "maxPriorityFeePerGas": "1000000000",
                    "type": 2,
                }
            },
        }

        async def edit() -> None:
            async with self.world.store.write() as writer:
                await writer._execute(
                    text("UPDATE approval_requests SET payload = :p WHERE id = :i"),
                    {"p": json.dumps(payload), "i": req.id},
                )

        self.run(edit())
        req.mutated = True

    @rule()
    def time_passes(self) -> None:
        self.world.clock.jump(seconds=EXPIRES_IN // 2 + 1)

    @rule()
    def clock_set_back(self) -> None:
        """F-15: the clock jumps back; what was seen expired stays expired, the rest is judged anew."""
        self.world.clock.jump(seconds=-(EXPIRES_IN // 2 + 1))

    @rule(who=st.integers(0, PEOPLE - 1))
    def revoke_token(self, who: int) -> None:
        person = self.people[who]
        self.run(self.world.auth.revoke(self.world.admin_person.ctx, person.ctx.caller.token_id))
        self.revoked_tokens.add(person.ctx.caller.token_id)
        self.people[who] = self.run(self.world.new_token(person))

    @rule(who=st.integers(0, PEOPLE - 1))
    def leave_or_rejoin(self, who: int) -> None:
        person = self.people[who]
        if person.id in self.members:
            self.run(self.world.leave(self.group, person))
            self.members.discard(person.id)
        else:
            self.run(self.world.join(self.group, person))
            self.members.add(person.id)

    @rule(quorum=st.integers(1, 3))
    def change_policy(self, quorum: int) -> None:
        """Only requests made from now on get the new quorum."""
        self.run(self.world.require_approval(self.key, self.group, quorum, expires_in=EXPIRES_IN))
        self.quorum = quorum

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def signatures_released_match_the_model(self) -> None:
        if not hasattr(self, "model"):
            return

        async def count() -> int:
            async with self.world.store.read() as reader:
                events = [json.loads(e.event) for e in await reader.audit.events(limit=100_000)]
            return sum(
                1
                for e in events
                if e["kind"] == "sign.transaction"
                and e.get("outcome") == "allowed"
                and e.get("key_id") == self.key.id
            )

        assert self.run(count()) == self.released


@pytest.mark.slow
def test_approvals_state_machine(sqlite_store_url: str, hsm: Hsm) -> None:
    """On SQLite only: the model is about the decision logic; both backends run the matrix tests."""
    url = sqlite_store_url
    loop = asyncio.new_event_loop()
    try:

        async def open_world() -> tuple[Any, World]:
            context = fresh_store(url)
            store = await context.__aenter__()
            return context, await make_world(store, hsm)

        context, world = loop.run_until_complete(open_world())
        ApprovalMachine.world = world
        ApprovalMachine.loop = loop
        try:
            run_state_machine_as_test(
                ApprovalMachine,
                settings=settings(
                    max_examples=30,
                    stateful_step_count=40,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                ),
            )
        finally:
            loop.run_until_complete(context.__aexit__(None, None, None))
    finally:
        loop.close()
