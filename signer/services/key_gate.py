"""The approval gate of admin operations on one key: its transitions, and grants on it.

An admin acts on a key by its role, not by a grant, so these operations never go through the decision
pipeline; the ``key_lifecycle`` rules in force on the key judge them here instead
(``policy.evaluate_lifecycle``), inside the caller's own write transaction. ``pass_`` either lets the
operation go ahead (no rule asks anything, or the caller names its own approved request for exactly
this operation and body on this key: the approved digest is reproduced, the quorum re-counted and the
request closed, ``released``, in the same transaction), or opens a pending request (a rule asks for
approval: the caller answers 202 and changes nothing), or refuses (a deny: 403 ``policy_denied``; an
approval that no longer covers what policy asks: 403 ``approval_required``; another body: 409
``approval_mismatch``). It opens and closes requests through ``pending`` only, as the pipeline does,
and writes no event of the operation's own: the caller does, with ``event_fields``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policy import Decision, Effect, PolicyRequest, PolicySet, evaluate_lifecycle, scope_contains, strongest
from signer.audit import EventTarget, Outcome
from signer.errors import Conflict, Forbidden, SignerError
from signer.services.authorization import decision_summary, load_policies
from signer.services.context import Clock, RequestContext, iso
from signer.services.payloads import PayloadKind, Prepared
from signer.services.pending import (
    Eligibility,
    PendingRequests,
    covers,
    payload_digest,
    pending_body,
    releasable,
)
from signer.store import ApprovalRequestRecord, ApprovalVoteRecord, KeyRecord, Store, Writer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Passage:
    """What the gate decided: ``pending`` when the operation now waits for approvers (do nothing but
    answer it), otherwise go ahead; ``approval`` the evidence of the approval it runs on, if any."""

    decision: Decision
    pending: ApprovalRequestRecord | None = None
    approval: dict[str, Any] | None = None

    def event_fields(self) -> dict[str, Any]:
        """What the operation's event says of how it passed: the approval (id, digest, requester,
        approvers, votes) and, when a policy document reached the key, the decision naming it."""
        fields: dict[str, Any] = {}
        if self.approval is not None:
            fields["approval"] = self.approval
        if self.decision.policies or self.pending is not None:
            fields["decision"] = decision_summary(self.decision)
        return fields

    def answer_pending(
        self,
        writer: Writer,
        ctx: RequestContext,
        kind: str,
        now: datetime,
        resource: EventTarget,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record that the operation now waits for approvers (its event, outcome ``pending_approval``,
        naming the request opened in this transaction) and return the 202 body; nothing else changes."""
        assert self.pending is not None
        writer.append_audit(
            ctx.audit_event(
                kind,
                now,
                outcome=Outcome.PENDING_APPROVAL,
                resource=resource,
                approval_id=self.pending.id,
                **fields,
            )
        )
        return pending_body(self.pending)


def approval_evidence(
    record: ApprovalRequestRecord, eligible: Eligibility, votes: list[ApprovalVoteRecord]
) -> dict[str, Any]:
    """What an operation's event says of the approval it ran on: its id and digest, who asked, who
    approved (per group, counted now), and each counted approval's vote, with its signature when signed."""
    return {
        "id": record.id,
        "payload_digest": record.payload_digest,
        "requester_id": record.requester_id,
        "approvers": {g: sorted(p) for g, p in sorted(eligible.approvers.items())},
        "votes": [
            {
                "approver_id": v.approver_id,
                "decision": v.decision,
                "at": iso(v.created_at),
                **(
                    {"signature_scheme": v.signature_scheme, "signature": v.signature}
                    if v.signature is not None
                    else {}
                ),
            }
            for v in votes
            if v.approver_id in eligible.counted and v.decision == "approve"
        ],
    }


# The id judged for a key that does not exist yet (rules attached to a scope cover it); no key has it.
_KEY_TO_COME = "key_(to be made)"


def refusal(decision: Decision) -> SignerError:
    summary = decision_summary(decision)
    if decision.effect is Effect.REQUIRE_APPROVAL:
        # An approval collected for a weaker requirement than policy asks now: ask again.
        return Forbidden(
            "policy requires approval for this operation; the approval does not cover it now",
            code="approval_required",
            reasons=summary["reasons"],
            decision=summary,
        )
    return Forbidden(
        "policy denied the operation", code="policy_denied", reasons=summary["reasons"], decision=summary
    )


class KeyGate:
    """Judges admin operations on a key and opens or closes their pending requests."""

    def __init__(self, store: Store, pending: PendingRequests, *, clock: Clock) -> None:
        self._store = store
        self._pending = pending
        self._clock = clock

    async def approved(
        self, ctx: RequestContext, payload: PayloadKind, key_id: str, approval_id: str
    ) -> ApprovalRequestRecord:
        """The caller's own approved, unexpired request for this operation on this key (else the
        stable answer ``pending.releasable`` gives: 404 for anyone else's, another key or operation)."""
        async with self._store.read() as reader:
            record = await reader.approvals.get(approval_id)
        return releasable(record, ctx.caller.principal_id, payload.operation, key_id, self._clock())

    async def pass_(
        self,
        writer: Writer,
        ctx: RequestContext,
        payload: PayloadKind,
        key: KeyRecord,
        prepared: Prepared,
        approved: ApprovalRequestRecord | None,
        now: datetime,
    ) -> Passage:
        """Inside the operation's transaction: go ahead, wait for approvers, or refuse (see above)."""
        decision = await self._judge(writer, ctx, key, payload, now)
        if approved is None and decision.effect is Effect.REQUIRE_APPROVAL:
            record = await self._pending.open(
                writer,
                ctx,
                operation=payload.operation,
                resource=key,
                prepared=prepared,
                decision=decision,
                now=now,
            )
            return Passage(decision, pending=record)
        if decision.effect is Effect.DENY or (
            decision.effect is Effect.REQUIRE_APPROVAL
            and approved is not None
            and not covers(approved, decision)
        ):
            raise refusal(decision)
        if approved is None:
            return Passage(decision)
        digests = tuple(approved.requirements.get("policy_digests", ()))
        if payload_digest(payload.operation, key, prepared, digests) != approved.payload_digest:
            # The key or the body is not what the approvers approved: never apply it.
            raise Conflict("the payload does not match the approved digest", code="approval_mismatch")
        eligible = await self._pending.finalize(writer, approved.id, payload, {})
        votes = await writer.approvals.votes(approved.id)
        return Passage(decision, approval=approval_evidence(approved, eligible, votes))

    async def _judge(
        self, writer: Writer, ctx: RequestContext, key: KeyRecord, payload: PayloadKind, now: datetime
    ) -> Decision:
        """The ``key_lifecycle`` rules in force on the key, judged under the write lock."""
        policies = await load_policies(writer)
        request = PolicyRequest(
            principal_id=ctx.caller.principal_id,
            operation=payload.operation,
            resource_id=key.id,
            scope=key.scope,
            resource_type="key",
            groups=await writer.groups.of(ctx.caller.principal_id),
        )
        return evaluate_lifecycle(request, PolicySet((), policies.live), now=now)

    async def judge_scope(
        self, writer: Writer, ctx: RequestContext, payload: PayloadKind, scope: str, now: datetime
    ) -> Decision:
        """A grant (or its revocation) on a whole scope reaches every key at or below it, today's and
        tomorrow's, so it must not pass where granting one of those keys would not: the strongest
        ``key_lifecycle`` decision over the keys under ``scope`` and over a key yet to be made at the
        scope itself and at every scope below it that a policy is attached to."""
        policies = await load_policies(writer)
        places: dict[tuple[str, str], None] = {("", scope): None}
        for attached in policies.live:
            if attached.scope is not None and scope_contains(scope, attached.scope):
                places[("", attached.scope)] = None
        after: str | None = None
        while True:
            page = await writer.keys.all(limit=500, after=after)
            for key in page:
                if scope_contains(scope, key.scope):
                    places[(key.id, key.scope)] = None
            if len(page) < 500:
                break
            after = page[-1].id
        groups = await writer.groups.of(ctx.caller.principal_id)
        decisions = [
            evaluate_lifecycle(
                PolicyRequest(
                    principal_id=ctx.caller.principal_id,
                    operation=payload.operation,
                    resource_id=key_id or _KEY_TO_COME,
                    scope=key_scope,
                    resource_type="key",
                    groups=groups,
                ),
                PolicySet((), policies.live),
                now=now,
            )
            for key_id, key_scope in places
        ]
        effect = strongest(d.effect for d in decisions) or Effect.ALLOW
        return next(d for d in decisions if d.effect is effect)

    async def reopen_if_lost(
        self, approved: ApprovalRequestRecord | None, exc: SignerError, request_id: str
    ) -> None:
        """An approved request whose quorum no longer holds goes back to collecting approvals."""
        if approved is None or exc.code != "approval_quorum_lost":
            return
        now = self._clock()

        async def unit(writer: Writer) -> None:
            await self._pending.reopen(writer, approved.id, exc, now, request_id)

        try:
            await self._store.submit(unit)
        except SignerError as reopen_failed:
            # The refusal is what the caller needs; the next attempt finds the quorum lost again.
            log.warning("could not reopen approval %s: %s", approved.id, reopen_failed.code)
