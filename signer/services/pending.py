"""Pending requests: opening one for a decision that needs approval, and closing it once approved.

This module sits below both the decision pipeline and the approvals service, and is the only place
either touches a pending request's creation or its end. A request names a resource (its kind's
``ResourceRef``: the request's ``resource_id`` and the kind's id field, ``key_id`` or ``secret_id``) and
an operation (its ``PayloadKind``). The pipeline opens a request here inside its commit unit when policy
asks for approval (``open``, which lets the payload pin what it names of the resource first: a read's
version and field names), and, running an approved one, asks here whether the approvals collected cover
what policy asks now (``covers``), recomputes the approved digest (``payload_digest``) and closes it in
the same transaction as the operation's audit event (``finalize``): a signature is stored as the result
(``signed``) for the requester to collect once; a response released to its requester (a secret read,
``released_by_requester``) is never stored (``released``). ``releasable`` says whether a requester may
release its approved request now, with a stable code for every other state.
The approvals service reads requests and counts votes with the same rules (``eligibility``,
``requirements_of``) and announces its own transitions through ``announce``. Nothing here calls the
pipeline or the approvals service: it is called, and returns.

The digest binds the canonical payload: the operation, what the resource kind binds of the resource
(for a key: id, curve, signer; for a secret: its id), the chain id, the exact bytes to sign (none for a
read), the body that prepares them again (for a read: the version and field names), and the digests of
the policies that asked for approval. Requirements (group, quorum, expiry)
are snapshotted at ``open``: a later policy change cannot lower them for this request. Expiry at
``finalize`` is judged by the clock this module is given, the one the approvals service votes by.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policy import ApprovalRequirement, Decision, Effect, VoteStanding, check_approvals, why_not_counted
from signer.audit import AuditEvent, ErrorRef, EventTarget, Outcome, canonical_json
from signer.errors import Conflict, Forbidden, InvalidRequest, NotFound, SignerError
from signer.services.context import Clock, RequestContext, iso
from signer.services.payloads import PayloadKind, Prepared, payload_kind
from signer.services.resources import ResourceKind, resource_kind
from signer.services.webhooks import WebhookService
from signer.store import ApprovalRequestRecord, ApprovalVoteRecord, Reader, Writer

DIGEST_VERSION = 1


def kind_of(operation: str) -> ResourceKind:
    """The kind of resource an operation acts on (a stored request's ``kind`` is its operation)."""
    return resource_kind(payload_kind(operation).resource_type)


def payload_digest(operation: str, resource: Any, prepared: Prepared, policy_digests: tuple[str, ...]) -> str:
    """sha256 hex of the canonical payload: what approvers approve and what execution must reproduce."""
    document = {
        "v": DIGEST_VERSION,
        "kind": operation,
        **kind_of(operation).digest_fields(resource),
        "chain_id": prepared.chain_id,
        "to_sign": "0x" + prepared.data.hex(),
        "body": dict(prepared.body or {}),
        "policy_digests": sorted(policy_digests),
    }
    return hashlib.sha256(canonical_json(document)).hexdigest()


HEX_DIGITS = frozenset("0123456789abcdef")


def canonical_digest(text: str) -> str:
    """The one spelling of a payload digest: 64 lower-case hex digits, no prefix. Accepts ``0x``/``0X``
    and any case; anything else is ``InvalidRequest(invalid_digest)`` (which does not echo it)."""
    bare = text[2:] if text[:2] in ("0x", "0X") else text
    lowered = bare.lower()
    if len(lowered) != 64 or not HEX_DIGITS.issuperset(lowered):
        raise InvalidRequest(
            "digest must be the 64 hex digits of the payload digest (0x and any case allowed)",
            code="invalid_digest",
            field="digest",
        )
    return lowered


def stored_digest(stored: str) -> str:
    """Rows written before the store refused other spellings may hold one: read them canonical."""
    try:
        return canonical_digest(stored)
    except InvalidRequest:
        return stored


def requirements_of(record: ApprovalRequestRecord) -> list[ApprovalRequirement]:
    return [
        ApprovalRequirement(
            group=item["group"],
            quorum=int(item["quorum"]),
            expires_at=datetime.fromisoformat(item["expires_at"]),
            rule_ids=tuple(item["rule_ids"]),
            rejections=int(item.get("rejections", 1)),
            signed=bool(item.get("signed", False)),
        )
        for item in record.requirements["approvals"]
    ]


def covers(record: ApprovalRequestRecord, decision: Decision) -> bool:
    """Do the snapshotted requirements (whose quorum ``_finalize`` checks) cover what ``decision`` asks
    now? A stricter policy since the request (a larger quorum, another group) is not covered: the
    request must be made again. A looser one is: the snapshot is never lowered."""
    snapshot = {r.group: r.quorum for r in requirements_of(record)}
    return bool(decision.approvals) and all(
        r.group in snapshot and snapshot[r.group] >= r.quorum for r in decision.approvals
    )


def request_groups(record: ApprovalRequestRecord) -> frozenset[str]:
    return frozenset(item["group"] for item in record.requirements["approvals"])


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Who counts now: per group, the approvers whose approve votes count; the counted rejecters; and
    for every recorded vote that does not count, the ``policy.NOT_COUNTED`` code saying why."""

    approvers: dict[str, frozenset[str]]
    rejecters: frozenset[str]
    counted: frozenset[str]
    not_counted: dict[str, str]


async def groups_of(reader: Reader | Writer, principal_id: str) -> frozenset[str]:
    return await reader.groups.of(principal_id)


async def eligibility(
    reader: Reader | Writer, record: ApprovalRequestRecord, votes: list[ApprovalVoteRecord]
) -> Eligibility:
    groups = request_groups(record)
    approvers: dict[str, set[str]] = {group: set() for group in groups}
    rejecters: set[str] = set()
    counted: set[str] = set()
    not_counted: dict[str, str] = {}
    for vote in votes:
        member_of = (await groups_of(reader, vote.approver_id)) & groups
        standing = VoteStanding(
            voter=vote.approver_id,
            role=vote.principal_role,
            disabled=vote.principal_disabled_at is not None,
            token_valid=vote.token_found and vote.token_revoked_at is None,
            digest_matches=stored_digest(vote.digest) == record.payload_digest,
            groups=member_of,
        )
        why = why_not_counted(standing, requester=record.requester_id)
        if why is not None:
            not_counted[vote.approver_id] = why
            continue
        counted.add(vote.approver_id)
        if vote.decision == "approve":
            for group in member_of:
                approvers[group].add(vote.approver_id)
        else:
            rejecters.add(vote.approver_id)
    return Eligibility(
        {g: frozenset(p) for g, p in approvers.items()},
        frozenset(rejecters),
        frozenset(counted),
        not_counted,
    )


def pending_body(record: ApprovalRequestRecord) -> dict[str, Any]:
    """The body the requester gets with HTTP 202 while its request waits for approvers."""
    return {
        "state": "pending_approval",
        "approval": {
            "id": record.id,
            "url": f"/v1/approvals/{record.id}",
            "result_url": f"/v1/approvals/{record.id}/result",
        },
        "payload_digest": record.payload_digest,
        "expires_at": iso(record.expires_at),
        "requirements": record.requirements["approvals"],
    }


def already_released() -> SignerError:
    return Conflict("the approved request has already been released", code="result_already_fetched")


# What a requester gets for a request it may not release now, by the request's state.
_NOT_RELEASABLE = {
    "pending": ("the approval request is still waiting for approvers", "approval_pending"),
    "rejected": ("the approval request was rejected", "approval_rejected"),
    "expired": ("the approval request has expired", "approval_expired"),
    "cancelled": ("the approval request was cancelled", "approval_cancelled"),
    "failed": ("the approved request failed", "approval_failed"),
    "signed": ("the approved request has already been released", "result_already_fetched"),
}


def releasable(
    record: ApprovalRequestRecord | None, requester_id: str, operation: str, resource_id: str, now: datetime
) -> ApprovalRequestRecord:
    """The request if its requester may run it now (``PayloadKind.released_by_requester``): its own,
    for this operation on this resource, approved and unexpired. Anyone else, and another resource or
    operation, gets the answer for a request that does not exist; the requester a stable code per state
    (``approval_pending``, ``approval_rejected``, ``approval_expired``, ``approval_cancelled``,
    ``result_already_fetched`` once released)."""
    if (
        record is None
        or record.requester_id != requester_id
        or record.kind != operation
        or record.resource_id != resource_id
    ):
        raise NotFound("no such approval request", code="approval_not_found")
    if record.state == "released":
        raise already_released()
    if record.state == "approved" and now >= record.expires_at:
        raise Conflict("the approval request has expired", code="approval_expired")
    if record.state != "approved":
        message, code = _NOT_RELEASABLE.get(
            record.state, ("the approval request is closed", "approval_closed")
        )
        raise Conflict(message, code=code, state=record.state)
    return record


class PendingRequests:
    """Opens pending requests and stores their results, each inside the caller's transaction."""

    def __init__(self, *, clock: Clock, webhooks: WebhookService | None = None) -> None:
        self._clock = clock
        self._webhooks = webhooks

    # -- opening (inside the pipeline's commit unit) ------------------------------------------------

    async def open(
        self,
        writer: Writer,
        ctx: RequestContext,
        *,
        operation: str,
        resource: Any,
        prepared: Prepared,
        decision: Decision,
        now: datetime,
        reject_quorum: int | None = None,
        signed_approvals: bool | None = None,
    ) -> ApprovalRequestRecord:
        """Store a pending request for ``decision`` (which must require approval) and audit it. The
        rejection limit and the signed-approvals demand come from the decision's requirements (the
        fewest rejections, signed if any asks) unless given here."""
        if decision.effect is not Effect.REQUIRE_APPROVAL or not decision.approvals:
            # Nothing to collect would make the request trivially approvable: fail closed.
            raise Forbidden("no approval requirement to collect", code="approval_requirements_missing")
        if reject_quorum is None:
            reject_quorum = min(r.rejections for r in decision.approvals)
        if signed_approvals is None:
            signed_approvals = any(r.signed for r in decision.approvals)
        if reject_quorum < 1:
            raise ValueError("reject_quorum must be at least 1")
        kind = kind_of(operation)
        ref = kind.ref(resource)
        if prepared.pin is not None:
            # What the request names of the resource is fixed now (a read: its version and fields).
            prepared = await prepared.pin(writer, resource)
        digest = payload_digest(operation, resource, prepared, decision.policy_digests)
        expires_at = min(r.expires_at for r in decision.approvals)
        record = ApprovalRequestRecord(
            id=f"apr_{int(now.timestamp() * 1_000_000):015x}{secrets.token_hex(6)}",
            kind=operation,
            resource_id=ref.id,
            requester_id=ctx.caller.principal_id,
            payload={"operation": operation, **kind.names(ref.id), "body": dict(prepared.body or {})},
            payload_digest=digest,
            view={
                **prepared.describe(),
                **kind.approval_view(resource),
                "requested_by": {"principal_id": ctx.caller.principal_id, "name": ctx.caller.name},
                "requested_at": iso(now),
                "rules": sorted({rule for r in decision.approvals for rule in r.rule_ids}),
                "reasons": decision.reasons_as_dicts(),
            },
            requirements={
                "approvals": [r.as_dict() for r in decision.approvals],
                "reject_quorum": reject_quorum,
                "signed_approvals": signed_approvals,
                "policy_digests": list(decision.policy_digests),
            },
            state="pending",
            created_at=now,
            expires_at=expires_at,
            updated_at=now,
        )
        await writer.approvals.insert(record)
        await self.announce(writer, record, "approval.requested", now)
        names: dict[str, Any] = kind.names(ref.id)
        writer.append_audit(
            ctx.audit_event(
                "approval.requested",
                now,
                outcome=Outcome.PENDING_APPROVAL,
                resource=EventTarget("approval", record.id),
                approval_id=record.id,
                operation=operation,
                **names,
                payload_digest=digest,
                requirements=record.requirements,
                expires_at=iso(expires_at),
            )
        )
        return record

    # -- the end of an approved request (inside the pipeline's commit unit) ---------------------

    async def finalize(
        self, writer: Writer, approval_id: str, payload: PayloadKind, response: dict[str, Any]
    ) -> Eligibility:
        """Inside the pipeline's commit unit: the request must still be approved, unexpired and backed
                by a quorum of currently eligible approvers; then it is closed with the operation's event (the
        approvers that counted are returned, for that event to name).
                Expiry is judged by this module's clock, the same one every vote was judged by.

                How it closes is the payload kind's: a signature is stored as the result (``signed``), handed
                to the requester once; a response released to its requester (a secret read) is never stored:
                the request becomes ``released`` and can never run again."""
        now = self._clock()
        record = await writer.approvals.lock(approval_id)
        if record is not None and record.state == "released":
            raise already_released()
        if record is None or record.state != "approved":
            raise Conflict("the approval request is no longer approved", code="approval_closed")
        if now >= record.expires_at:
            raise Conflict("the approval request has expired", code="approval_expired")
        eligible = await eligibility(writer, record, await writer.approvals.votes(approval_id))
        outcome = check_approvals(
            requirements_of(record), eligible.approvers, requester=record.requester_id, now=now
        )
        if outcome.effect is not Effect.ALLOW:
            raise Conflict(
                "the approvals no longer meet the quorum",
                code="approval_quorum_lost",
                reasons=outcome.reasons_as_dicts(),
            )
        state, stored = ("released", None) if payload.released_by_requester else ("signed", response)
        if not await writer.approvals.transition(approval_id, ["approved"], state, now, result=stored):
            raise Conflict("the approval request is no longer approved", code="approval_closed")
        if payload.released_by_requester:
            # Handed out now, to the requester running it: nothing is left to fetch.
            await writer.approvals.mark_result_fetched(approval_id, now, state=state)
        event = f"approval.{state}"
        await self.announce(writer, record, event, now)
        writer.append_audit(
            AuditEvent.of(
                event,
                at=now,
                outcome=Outcome.ALLOWED,
                actor=None,
                request_id=None,
                resource=EventTarget("approval", approval_id),
                approval_id=approval_id,
                payload_digest=record.payload_digest,
                approvers={g: sorted(p) for g, p in sorted(eligible.approvers.items())},
                result=payload.result_summary(response),
            )
        )
        return eligible

    async def reopen(
        self, writer: Writer, approval_id: str, error: SignerError, now: datetime, request_id: str | None
    ) -> bool:
        """An approved request whose quorum no longer holds (an approver disabled, removed or its token
        revoked since voting) goes back to ``pending`` to collect again; True if it moved."""
        if not await writer.approvals.transition(approval_id, ["approved"], "pending", now):
            return False
        writer.append_audit(
            AuditEvent.of(
                "approval.reopened",
                at=now,
                outcome=Outcome.FAILED,
                actor=None,
                request_id=request_id,
                resource=EventTarget("approval", approval_id),
                error=ErrorRef(error.code, error.status),
                approval_id=approval_id,
            )
        )
        return True

    async def announce(self, writer: Writer, record: ApprovalRequestRecord, kind: str, now: datetime) -> None:
        """Queue the approver groups' webhooks for this event, in the transaction that records it."""
        if self._webhooks is None:
            return
        event = {
            "type": kind,
            "approval_id": record.id,
            "kind": record.kind,
            **kind_of(record.kind).names(record.resource_id),
            "requester_id": record.requester_id,
            "payload_digest": record.payload_digest,
            "requirements": record.requirements["approvals"],
            "expires_at": iso(record.expires_at),
            "view": record.view,
            "at": iso(now),
            # The link a notification shows: the service's base URL + this opens the request in the
            # console (through sign-in when there is no session).
            "console_path": f"/console/approvals/{record.id}",
        }
        await self._webhooks.enqueue(writer, request_groups(record), event, now)


# -- signed approvals ------------------------------------------------------------------------------
