"""Approvals: M-of-N people confirm a high-risk request, bound to the digest of its exact payload.

Lifecycle (every transition is a compare-and-set on the locked request row, audited in the same
transaction)::

    pending --quorum--> approved --signed in the token, result stored--> signed
       |                   \\--the re-check at execution refused--> failed (or back to pending if the
       |                                                             quorum no longer holds)
       +--rejections--> rejected      +--expiry--> expired      +--requester or admin--> cancelled

    a read (``released_by_requester``): approved --its requester releases it, once--> released
    (nothing runs on approval and nothing is stored: ``DecisionPipeline.release`` reads the value then)

- The request is opened inside the pipeline's commit unit (``pending.PendingRequests.open``) with
  the server-computed digest of the canonical payload: the exact bytes to sign, the resource, the chain
  id, the body that reproduces them, and the digests of the policies that asked for approval. The
  requirements (group, quorum, expiry) are snapshotted then: a later policy change cannot lower them for
  this request.
- A vote names the digest it approves, canonicalised once where it enters (``canonical_digest``: with or
  without ``0x``, any hex case, to 64 lower-case hex digits; anything else is ``invalid_digest``, 400);
  another payload's digest is ``approval_mismatch`` (409), and the store itself refuses to record a vote
  whose digest is not the request's, byte for byte. So a vote is either counted or refused: never
  recorded and then ignored for its spelling. One identity votes once (the store's primary key).
- Who counts is one rule, ``policy.why_not_counted``: only principals with the approver role, never the
  requester, still in one of the request's groups, principal not disabled, and the token it voted with
  not revoked (A-01: revocation takes effect at once). A vote from a principal who could not count now
  is refused (403 with the rule's code) and not recorded; a recorded vote that stops counting later stays
  in the view with the code saying why. Natural expiry of that access token after the vote does not void
  it: approvals would otherwise lapse with the approver's token lifetime rather than with the request's
  own expiry, which is what the rule sets.
- Expiry is lazy: every read and every vote compares the request's ``expires_at`` with the clock the
  service was given (``clock``), and a due request is moved to ``expired`` in its own transaction. An
  expired request never comes back: only ``pending`` can move to ``approved``.
- On quorum the request moves to ``approved`` in the vote's transaction (so of two racing final votes
  exactly one wins: the row is locked on PostgreSQL, and every SQLite writer holds the database's write
  lock), then the stored body runs through the decision pipeline (``DecisionPipeline.execute_approved``),
  which re-checks the grants, the resource and the requester, reproduces the digest, and in its own
  commit unit has ``pending`` re-check the quorum and store the result: one signature is released, or
  none. This service calls the pipeline; nothing below calls back up here.
- The requester fetches the result once (``result``); ``wait`` long-polls up to ``MAX_WAIT_SECONDS``.
  For a read it says only when the request is approved (no value is ever a stored result); the
  requester then releases it from the secret's fetch route with the approval's id.
- A request is shown by its resource reference (``resource: {type, id}`` and the kind's id field) and
  its operation; what approvers read is the payload's view plus the resource kind's (for a secret: its
  metadata, never a value).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from policy import NOT_COUNTED, Effect, VoteStanding, check_approvals, why_not_counted
from signer.audit import AuditEvent, ErrorRef, EventTarget, Outcome
from signer.crypto.approver_signatures import approval_message as crypto_approval_message
from signer.crypto.approver_signatures import decode_signature_hex, verify_ed25519_approval
from signer.errors import Conflict, Forbidden, InvalidRequest, NotFound, SignerError, Unprocessable
from signer.eth import (
    RecoverableSignature,
    address_from_public_key,
    personal_message_digest,
    recover_address,
)
from signer.identity import Role
from signer.services.context import Caller, Clock, RequestContext, iso, require_role
from signer.services.payloads import payload_kind
from signer.services.pending import (
    PendingRequests,
    canonical_digest,
    eligibility,
    groups_of,
    kind_of,
    request_groups,
    requirements_of,
    stored_digest,
)
from signer.services.pipeline import DecisionPipeline
from signer.services.webhooks import WebhookService
from signer.store import (
    ApprovalRequestRecord,
    ApprovalVoteRecord,
    ApproverKeyRecord,
    Reader,
    Store,
    Writer,
)

MAX_WAIT_SECONDS = 60
# A signed result fetched once may be fetched again for at least this long (and until the request expires).
RESULT_REFETCH = timedelta(hours=1)
# Waiting callers re-read the database this often, for outcomes reached by another process (whose
# in-process events this process never sees). One indexed read per waiter per interval.
POLL_INTERVAL_SECONDS = 1.0

OPEN_STATES = ("pending", "approved")
FINAL_STATES = ("signed", "released", "failed", "rejected", "expired", "cancelled")


_REFUSED_VOTE_STATUS = {
    "requester": ("the requester cannot vote on its own request", "self_approval"),
    "role_not_approver": ("only principals with the approver role can vote", "approver_role_required"),
    "principal_disabled": ("the principal is disabled", "principal_disabled"),
    "token_revoked": ("the token is revoked", "token_revoked"),
    "not_in_group": ("not an approver for this request", "not_an_approver"),
}


def _not_counted_view(code: str | None) -> dict[str, str] | None:
    return None if code is None else {"code": code, "reason": NOT_COUNTED[code]}


class ApprovalsService:
    def __init__(
        self,
        store: Store,
        pipeline: DecisionPipeline,
        pending: PendingRequests,
        *,
        clock: Clock,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        webhooks: WebhookService | None = None,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._pending = pending
        self._clock = clock
        self._poll_interval = poll_interval
        self._changed: dict[str, asyncio.Event] = {}
        self._executing: set[str] = set()
        self._webhooks = webhooks

    # -- reading ----------------------------------------------------------------------------------

    async def list_requests(
        self, ctx: RequestContext, *, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        """What the caller may see: admin everything, a requester its own, an approver its groups'."""
        await self.expire_due(ctx.request_id)
        states = None if state is None else [state]
        role = ctx.caller.role
        async with self._store.read() as reader:
            if role is Role.ADMIN:
                records = await reader.approvals.all(states=states, limit=limit, after=after)
            elif role is Role.SERVICE:
                records = await reader.approvals.all(
                    states=states, requester_id=ctx.caller.principal_id, limit=limit, after=after
                )
            else:
                mine = await groups_of(reader, ctx.caller.principal_id)
                # Filtering after the read keeps the SQL simple; pages may come back shorter than limit.
                records = [
                    r
                    for r in await reader.approvals.all(states=states, limit=limit, after=after)
                    if request_groups(r) & mine
                ]
            out = []
            for record in records:
                votes = await reader.approvals.votes(record.id)
                out.append(await self._render(reader, record, votes, brief=True))
        return out

    async def show(self, ctx: RequestContext, approval_id: str) -> dict[str, Any]:
        record = await self._visible(ctx, approval_id)
        if record.state == "pending" and self._clock() >= record.expires_at:
            await self.expire_due(ctx.request_id, approval_id)
        async with self._store.read() as reader:
            fresh = await reader.approvals.get(approval_id)
            assert fresh is not None  # requests are never deleted
            return await self._render(reader, fresh, await reader.approvals.votes(approval_id))

    async def _visible(self, ctx: RequestContext, approval_id: str) -> ApprovalRequestRecord:
        """The request if the caller may see it; otherwise the same 404 as for one that does not exist."""
        async with self._store.read() as reader:
            record = await reader.approvals.get(approval_id)
            if record is not None and await self._may_see(reader, ctx.caller, record):
                return record
        raise NotFound("no such approval request", code="approval_not_found")

    async def _may_see(self, reader: Reader | Writer, caller: Caller, record: ApprovalRequestRecord) -> bool:
        if caller.role is Role.ADMIN or caller.principal_id == record.requester_id:
            return True
        return bool(request_groups(record) & await groups_of(reader, caller.principal_id))

    async def _render(
        self,
        reader: Reader | Writer,
        record: ApprovalRequestRecord,
        votes: list[ApprovalVoteRecord],
        *,
        brief: bool = False,
    ) -> dict[str, Any]:
        eligible = await eligibility(reader, record, votes)
        kind = kind_of(record.kind)
        by_requester = payload_kind(record.kind).released_by_requester
        out: dict[str, Any] = {
            "id": record.id,
            "kind": record.kind,
            "operation": record.kind,
            "resource": {"type": kind.type, "id": record.resource_id},
            "state": record.state,
            **kind.names(record.resource_id),
            "requester_id": record.requester_id,
            "payload_digest": record.payload_digest,
            "created_at": iso(record.created_at),
            "expires_at": iso(record.expires_at),
            "updated_at": iso(record.updated_at),
            "requirements": record.requirements["approvals"],
            "reject_quorum": record.requirements.get("reject_quorum", 1),
            "progress": {group: len(members) for group, members in sorted(eligible.approvers.items())},
            # A signature waits as the stored result; a read is released by its requester once approved.
            "result_available": record.state == ("approved" if by_requester else "signed")
            and record.result_fetched_at is None,
            "released_by_requester": by_requester,
        }
        out["view"] = record.view
        if not brief:
            out["votes"] = [
                {
                    "approver_id": v.approver_id,
                    "approver_name": v.principal_name,
                    "decision": v.decision,
                    "digest": stored_digest(v.digest),
                    "at": iso(v.created_at),
                    "counted": v.approver_id in eligible.counted,
                    "not_counted": _not_counted_view(eligible.not_counted.get(v.approver_id)),
                    "signature_scheme": v.signature_scheme,
                    "signature": v.signature,
                }
                for v in votes
            ]
            if record.state == "failed" and record.result is not None:
                out["error"] = record.result.get("error")
        return out

    # -- expiry -----------------------------------------------------------------------------------

    async def expire_due(self, request_id: str, approval_id: str | None = None) -> int:
        """Move every pending (or approved but unsigned) request past its expiry to ``expired``."""
        now = self._clock()
        async with self._store.read() as reader:
            if approval_id is not None:
                one = await reader.approvals.get(approval_id)
                due = [one] if one is not None else []
            else:
                due = await reader.approvals.all(states=list(OPEN_STATES), limit=1000)
        ids = [r.id for r in due if r.state in OPEN_STATES and now >= r.expires_at]
        if not ids:
            return 0

        async def unit(writer: Writer) -> int:
            moved = 0
            for rid in ids:
                record = await writer.approvals.lock(rid)
                if record is not None and await self._expire_locked(writer, record, now, request_id):
                    moved += 1
            return moved

        moved = await self._store.submit(unit)
        for rid in ids:
            self._notify(rid)
        return moved

    async def _expire_locked(
        self, writer: Writer, record: ApprovalRequestRecord, now: datetime, request_id: str | None
    ) -> bool:
        if record.state not in OPEN_STATES or now < record.expires_at:
            return False
        if not await writer.approvals.transition(record.id, list(OPEN_STATES), "expired", now):
            return False
        await self._pending.announce(writer, record, "approval.expired", now)
        writer.append_audit(
            _approval_event(
                "approval.expired",
                record.id,
                at=now,
                outcome=Outcome.FAILED,
                request_id=request_id,
                payload_digest=record.payload_digest,
                expired_at=iso(record.expires_at),
            )
        )
        return True

    # -- voting -----------------------------------------------------------------------------------

    async def approve(
        self,
        ctx: RequestContext,
        approval_id: str,
        digest: str,
        *,
        signature: str | None = None,
    ) -> dict[str, Any]:
        return await self._vote(ctx, approval_id, "approve", digest, signature)

    async def reject(
        self, ctx: RequestContext, approval_id: str, digest: str, *, signature: str | None = None
    ) -> dict[str, Any]:
        return await self._vote(ctx, approval_id, "reject", digest, signature)

    async def _vote(
        self, ctx: RequestContext, approval_id: str, decision: str, named: str, signature: str | None
    ) -> dict[str, Any]:
        # The API, the console and signed votes all arrive here: the one place the digest is canonicalised.
        digest = canonical_digest(named)
        now = self._clock()
        caller = ctx.caller
        vote = ctx.audit_draft(
            "approval.vote",
            now,
            resource=EventTarget("approval", approval_id),
            approval_id=approval_id,
            decision=decision,
            digest_named=digest,
        )

        async def unit(writer: Writer) -> tuple[str, SignerError | None]:
            record = await writer.approvals.lock(approval_id)
            if record is None or not await self._may_see(writer, caller, record):
                raise NotFound("no such approval request", code="approval_not_found")
            if await self._expire_locked(writer, record, now, ctx.request_id):
                # Committed: the expiry stands even though this vote is refused.
                return "expired", Conflict("the approval request has expired", code="approval_expired")
            refusal = await self._check_vote(writer, record, caller, digest)
            if refusal is not None:
                writer.append_audit(
                    vote.event(
                        Outcome.REFUSED,
                        kind="approval.vote_refused",
                        error=ErrorRef(refusal.code, refusal.status),
                    )
                )
                return record.state, refusal
            scheme: str | None = None
            stored_signature: str | None = None
            approver_key = await writer.approvals.get_approver_key(caller.principal_id)
            try:
                if signature is not None:
                    if approver_key is None:
                        raise Unprocessable(
                            "register a public key before signing approvals", code="approver_key_missing"
                        )
                    stored_signature = verify_approval_signature(
                        approver_key, record.id, decision, record.payload_digest, signature
                    )
                    scheme = approver_key.scheme
                elif record.requirements.get("signed_approvals"):
                    raise Unprocessable(
                        "this request needs approvals signed with the approver's key",
                        code="approval_signature_required",
                    )
            except SignerError as exc:
                writer.append_audit(
                    vote.event(
                        Outcome.REFUSED, kind="approval.vote_refused", error=ErrorRef(exc.code, exc.status)
                    )
                )
                return record.state, exc
            await writer.approvals.insert_vote(
                ApprovalVoteRecord(
                    request_id=record.id,
                    approver_id=caller.principal_id,
                    token_id=caller.token_id,
                    decision=decision,
                    digest=digest,
                    created_at=now,
                    signature_scheme=scheme,
                    signature=stored_signature,
                )
            )
            # A signed vote carries its signature in the log, so an auditor can check the quorum offline.
            signed: dict[str, Any] = (
                {"signature_scheme": scheme, "signature": stored_signature} if stored_signature else {}
            )
            writer.append_audit(vote.event(Outcome.ALLOWED, **signed))
            votes = await writer.approvals.votes(record.id)
            eligible = await eligibility(writer, record, votes)
            if decision == "reject":
                if len(eligible.rejecters) >= int(record.requirements.get("reject_quorum", 1)):
                    await writer.approvals.transition(record.id, ["pending"], "rejected", now)
                    await self._pending.announce(writer, record, "approval.rejected", now)
                    writer.append_audit(
                        _approval_event(
                            "approval.rejected",
                            record.id,
                            at=now,
                            outcome=Outcome.DENIED,
                            request_id=ctx.request_id,
                            rejected_by=sorted(eligible.rejecters),
                        )
                    )
                    return "rejected", None
                return "pending", None
            outcome = check_approvals(
                requirements_of(record), eligible.approvers, requester=record.requester_id, now=now
            )
            if outcome.effect is Effect.ALLOW:
                await writer.approvals.transition(record.id, ["pending"], "approved", now)
                writer.append_audit(
                    _approval_event(
                        "approval.approved",
                        record.id,
                        at=now,
                        outcome=Outcome.ALLOWED,
                        request_id=ctx.request_id,
                        payload_digest=record.payload_digest,
                        approvers={g: sorted(p) for g, p in sorted(eligible.approvers.items())},
                        reasons=outcome.reasons_as_dicts(),
                    )
                )
                return "approved", None
            return "pending", None

        state, refusal = await self._store.submit(unit)
        self._notify(approval_id)
        if refusal is not None:
            raise refusal
        if state == "approved":
            await self._execute(approval_id, ctx.request_id)
        return await self.show(ctx, approval_id)

    async def _check_vote(
        self, writer: Writer, record: ApprovalRequestRecord, caller: Caller, digest: str
    ) -> SignerError | None:
        """Refuse, before anything is recorded, a vote that would not count: the same rule as the tally
        (``policy.why_not_counted``) on the voter's principal as it is in this transaction."""
        if record.state != "pending":
            return Conflict(
                f"the approval request is {record.state}", code="approval_closed", state=record.state
            )
        voter = await writer.principals.get(caller.principal_id)
        standing = VoteStanding(
            voter=caller.principal_id,
            role="" if voter is None else voter.role,
            disabled=voter is None or voter.disabled_at is not None,
            # Authenticated for this request; a revocation after this point voids the vote in the tally.
            token_valid=True,
            digest_matches=True,
            groups=request_groups(record) & await groups_of(writer, caller.principal_id),
        )
        why = why_not_counted(standing, requester=record.requester_id)
        if why is not None:
            message, code = _REFUSED_VOTE_STATUS[why]
            return Forbidden(message, code=code)
        if digest != record.payload_digest:
            return Conflict(
                "the vote names another payload than the one stored under this id",
                code="approval_mismatch",
                payload_digest=record.payload_digest,
            )
        return None

    # -- approver keys --------------------------------------------------------------------------

    async def register_key(self, ctx: RequestContext, scheme: str, public_key: str) -> dict[str, Any]:
        """An approver registers (or replaces) the public key its signed approvals verify with."""
        require_role(ctx, Role.APPROVER)
        clean = check_approver_key(scheme, public_key)
        now = self._clock()

        async def unit(writer: Writer) -> None:
            await writer.approvals.set_approver_key(
                ApproverKeyRecord(ctx.caller.principal_id, scheme, clean, now)
            )
            writer.append_audit(
                ctx.audit_event(
                    "approval.key_registered",
                    now,
                    resource=EventTarget("approver_key", ctx.caller.principal_id),
                    scheme=scheme,
                    public_key=clean,
                )
            )

        await self._store.submit(unit)
        return {"principal_id": ctx.caller.principal_id, "scheme": scheme, "public_key": clean}

    # -- cancelling -------------------------------------------------------------------------------

    async def cancel(self, ctx: RequestContext, approval_id: str) -> dict[str, Any]:
        now = self._clock()

        async def unit(writer: Writer) -> SignerError | None:
            record = await writer.approvals.lock(approval_id)
            if record is None or not await self._may_see(writer, ctx.caller, record):
                raise NotFound("no such approval request", code="approval_not_found")
            if ctx.caller.role is not Role.ADMIN and ctx.caller.principal_id != record.requester_id:
                return Forbidden("only the requester or an admin can cancel", code="cancel_not_allowed")
            if await self._expire_locked(writer, record, now, ctx.request_id):
                return Conflict("the approval request has expired", code="approval_expired")
            if not await writer.approvals.transition(record.id, ["pending"], "cancelled", now):
                return Conflict(
                    f"the approval request is {record.state}", code="approval_closed", state=record.state
                )
            await self._pending.announce(writer, record, "approval.cancelled", now)
            writer.append_audit(
                ctx.audit_event(
                    "approval.cancelled",
                    now,
                    resource=EventTarget("approval", record.id),
                    approval_id=record.id,
                )
            )
            return None

        refusal = await self._store.submit(unit)
        self._notify(approval_id)
        if refusal is not None:
            raise refusal
        return await self.show(ctx, approval_id)

    # -- execution --------------------------------------------------------------------------------

    async def _execute(self, approval_id: str, request_id: str) -> None:
        """Sign an approved request's stored payload; at most one execution runs per process, and the
        commit unit's compare-and-set makes sure at most one result is ever stored across processes."""
        if approval_id in self._executing:
            return
        self._executing.add(approval_id)
        try:
            async with self._store.read() as reader:
                record = await reader.approvals.get(approval_id)
                requester = None if record is None else await reader.principals.get(record.requester_id)
            if record is None or record.state != "approved" or requester is None:
                return
            if payload_kind(record.kind).released_by_requester:
                # Nothing runs on approval: its requester releases it, once (``pipeline.release``).
                return
            requester_caller = Caller(
                principal_id=requester.id,
                name=requester.name,
                role=Role(requester.role),
                token_id=f"approval:{record.id}",
            )
            try:
                await self._pipeline.execute_approved(record, requester_caller, request_id)
            except SignerError as exc:
                await self._execution_failed(record.id, request_id, exc)
        finally:
            self._executing.discard(approval_id)
            self._notify(approval_id)

    async def _execution_failed(self, approval_id: str, request_id: str, exc: SignerError) -> None:
        now = self._clock()

        async def unit(writer: Writer) -> None:
            record = await writer.approvals.lock(approval_id)
            if record is None or record.state != "approved":
                return
            if await self._expire_locked(writer, record, now, request_id):
                return
            if exc.code == "approval_quorum_lost":
                # An approver was revoked between the vote and the signature: collect again.
                target, kind = "pending", "approval.reopened"
                result = None
            else:
                target, kind = "failed", "approval.failed"
                result = {"error": {"code": exc.code, "status": exc.status, "message": exc.message}}
            await writer.approvals.transition(approval_id, ["approved"], target, now, result=result)
            if target == "failed":
                await self._pending.announce(writer, record, "approval.failed", now)
            writer.append_audit(
                _approval_event(
                    kind,
                    approval_id,
                    at=now,
                    outcome=Outcome.FAILED,
                    request_id=request_id,
                    error=ErrorRef(exc.code, exc.status),
                )
            )

        await self._store.submit(unit)

    # -- the requester's result -------------------------------------------------------------------

    async def result(
        self, ctx: RequestContext, approval_id: str, *, wait: float = 0
    ) -> tuple[int, dict[str, Any]]:
        """(status, body): 200 with the result (again until ``result_fetchable_until``, then
        ``result_already_fetched``), 202 while still
        open after waiting up to ``wait`` seconds, 200 with the final state for the other outcomes."""
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise InvalidRequest(
                f"wait must be between 0 and {MAX_WAIT_SECONDS}", code="invalid_field", field="wait"
            )
        record = await self._visible(ctx, approval_id)
        if ctx.caller.principal_id != record.requester_id:
            raise Forbidden("only the requester fetches the result", code="not_the_requester")
        # A read is never stored as a result: this says when it is approved, and the requester then
        # releases it from its own route (``released_by_requester``).
        by_requester = payload_kind(record.kind).released_by_requester
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if record.state in OPEN_STATES and self._clock() >= record.expires_at:
                await self.expire_due(ctx.request_id, approval_id)
            elif record.state == "approved" and not by_requester and approval_id not in self._executing:
                # Approved but not signed: resume (a crash between the vote and the signature).
                await self._execute(approval_id, ctx.request_id)
            async with self._store.read() as reader:
                fresh = await reader.approvals.get(approval_id)
            assert fresh is not None
            record = fresh
            if record.state not in OPEN_STATES or (by_requester and record.state == "approved"):
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                return 202, {"id": record.id, "state": record.state, "expires_at": iso(record.expires_at)}
            event = self._changed.setdefault(approval_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout=min(remaining, self._poll_interval))
            except TimeoutError:
                pass
        if record.state != "signed":
            body: dict[str, Any] = {"id": record.id, "state": record.state}
            if by_requester and record.state == "approved":
                body["expires_at"] = iso(record.expires_at)
            if record.state == "failed" and record.result is not None:
                body["error"] = record.result.get("error")
            return 200, body
        now = self._clock()

        async def unit(writer: Writer) -> datetime | None:
            # The first fetch marks the result as handed out; the requester may fetch it again (a
            # relayer replica that lost the answer, a retry after a timeout) until it expires.
            first = await writer.approvals.mark_result_fetched(approval_id, now)
            current = await writer.approvals.get(approval_id)
            if current is None or current.result_fetched_at is None:
                return None
            until = result_fetchable_until(current)
            if not first and now >= until:
                return None
            writer.append_audit(
                ctx.audit_event(
                    "approval.result_fetched",
                    now,
                    resource=EventTarget("approval", approval_id),
                    approval_id=approval_id,
                    again=not first,
                )
            )
            return until

        until = await self._store.submit(unit)
        if until is None:
            raise Conflict(
                "the result was fetched and can no longer be fetched again", code="result_already_fetched"
            )
        return 200, {
            "id": record.id,
            "state": "signed",
            "result": record.result,
            "fetchable_until": iso(until),
        }

    def _notify(self, approval_id: str) -> None:
        event = self._changed.pop(approval_id, None)
        if event is not None:
            event.set()
        if self._webhooks is not None:
            self._webhooks.wake()


def result_fetchable_until(record: ApprovalRequestRecord) -> datetime:
    """Until when a fetched signed result may be fetched again: the request's own expiry, and at least
    ``RESULT_REFETCH`` after the first fetch."""
    assert record.result_fetched_at is not None
    return max(record.expires_at, record.result_fetched_at + RESULT_REFETCH)


def approval_message(approval_id: str, decision: str, digest: str) -> bytes:
    """The bytes an approver signs (``signer.crypto.approver_signatures.approval_message``), with the
    digest always in its canonical spelling, whatever spelling the vote's body used. Ed25519 signs them
    as they are; secp256k1 signs them as an EIP-191 ``personal_sign`` message (what wallets do)."""
    return crypto_approval_message(approval_id, decision, canonical_digest(digest))


def verify_approval_signature(
    key: ApproverKeyRecord, approval_id: str, decision: str, digest: str, signature_hex: str
) -> str:
    """Raise ``Unprocessable(approval_signature_invalid)`` unless the signature verifies offline-style:
    with nothing but the registered public key, the request id, the decision and the digest. Returns the
    signature in the one spelling it is stored in: lower-case hex, no ``0x``."""
    invalid = Unprocessable(
        "the approval signature does not verify with the registered key", code="approval_signature_invalid"
    )
    signature = decode_signature_hex(signature_hex)
    if signature is None:
        raise invalid
    try:
        public_key = bytes.fromhex(key.public_key)
    except ValueError:
        raise invalid from None
    message = approval_message(approval_id, decision, digest)
    if key.scheme == "ed25519":
        if not verify_ed25519_approval(public_key, message, signature):
            raise invalid
        return signature.hex()
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise invalid
    try:
        recoverable = RecoverableSignature(
            r=int.from_bytes(signature[:32], "big"),
            s=int.from_bytes(signature[32:64], "big"),
            recovery_id=signature[64] - 27,
        )
        recovered = recover_address(personal_message_digest(message), recoverable)
        expected = address_from_public_key(public_key)
    except (SignerError, ValueError):
        raise invalid from None
    if recovered != expected:
        raise invalid
    return signature.hex()


def check_approver_key(scheme: str, public_key_hex: str) -> str:
    """Validate a public key for registration; returns it as lower-case hex without 0x."""
    bad = InvalidRequest(
        "not a valid public key for that scheme", code="invalid_public_key", field="public_key"
    )
    try:
        raw = bytes.fromhex(public_key_hex.removeprefix("0x"))
    except ValueError:
        raise bad from None
    try:
        if scheme == "ed25519":
            if len(raw) != 32:
                raise bad
        elif scheme == "secp256k1":
            address_from_public_key(raw)
        else:
            raise InvalidRequest("scheme must be ed25519 or secp256k1", code="invalid_field", field="scheme")
    except SignerError as exc:
        if exc.code == "invalid_field":
            raise
        raise bad from None
    except ValueError:
        raise bad from None
    return raw.hex()


def _approval_event(
    kind: str,
    approval_id: str,
    *,
    at: datetime,
    outcome: Outcome,
    request_id: str | None,
    error: ErrorRef | None = None,
    **fields: Any,
) -> AuditEvent:
    """An approval request's own lifecycle event (expired, approved, rejected, failed): no caller acts
    in it, or the caller is the one whose vote tipped it, recorded in the vote's own event."""
    return AuditEvent.of(
        kind,
        at=at,
        outcome=outcome,
        actor=None,
        request_id=request_id,
        resource=EventTarget("approval", approval_id),
        error=error,
        approval_id=approval_id,
        **fields,
    )
