"""The decision pipeline: every request to act on a resource goes through the same named steps.

    load facts -> check the resource -> judge -> act -> commit -> release
                                                         |
                     lock; facts again if they moved; judge again with exact usage; shadows;
                     reserve; store the response (idempotency); record the audit event

The order is the point. A request is authorised from facts (cached per process, see ``facts``), its
payload prepared into the exact bytes to sign (``payloads``), the bytes signed by the HSM and the
signature checked by an independent implementation. Only then is the audit event written, in a
group-commit transaction that judges again under the write lock with exact usage; the response leaves
after that commit. If the event cannot be written the signature is discarded and the caller gets 503:
nothing is released unaudited. Every outcome after authentication (allowed, denied, failed) is audited.

``judge`` is the one place a decision is made: the check before the HSM (on the usage this process
already knows, a lower bound), the commit (exact usage), shadow candidates, the dry run and approved
execution all call it. What differs between a caller's request and an approved one is not a flag but a
``Path``: where its facts come from, what a decision asking for approval means (open a pending request,
or accept it when the approvals collected cover it), what must hold of its payload, and what settles in
the commit. Pending requests are opened and closed through ``pending``, below this module; nothing here
calls the approvals service, which calls ``execute_approved`` here once a request is approved. An
operation whose response must go to its requester alone (a secret read) is not run on approval: its
requester runs it once through ``release``, on the same approved path.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from policy import (
    AttachedPolicy,
    Decision,
    Effect,
    Facts,
    PolicyError,
    PolicyRequest,
    PolicySet,
    ShadowDecision,
    UsageQuery,
    evaluate,
    usage_queries,
)
from signer import metrics
from signer.audit import AuditEvent, ErrorRef, EventTarget, Outcome
from signer.errors import (
    AuditUnavailable,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    NotFound,
    SignerError,
    Unprocessable,
)
from signer.hsm import KeyVault
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.authorization import (
    Policies,
    Subject,
    decision_summary,
    load_policies,
    load_subject,
    optimistic_facts,
    parse_stored,
    policy_request,
    refusal,
)
from signer.services.context import Caller, Clock, RequestContext
from signer.services.facts import FactsCache
from signer.services.idempotency import Idempotency, IdempotencyGate, in_progress, replayed
from signer.services.payloads import PayloadKind, Prepared, Preparer, payload_kind
from signer.services.pending import PendingRequests, covers, payload_digest, pending_body, releasable
from signer.services.resources import ResourceKind, ResourceRef, resource_kind
from signer.store import (
    ApprovalRequestRecord,
    IdempotencyRecord,
    LedgerEntry,
    Reader,
    Store,
    Writer,
)

# -- the one judge ---------------------------------------------------------------------------------


def judge(request: PolicyRequest, policy_set: PolicySet, usage: Facts, now: datetime) -> Decision:
    """The decision for ``request`` under ``policy_set`` with ``usage`` at ``now``: the only call into
    the engine on the sign path (before the HSM, at commit, for shadows, dry runs, approved runs)."""
    return evaluate(request, policy_set, usage, now=now)


def request_for(subject: Subject, resource: ResourceRef, operation: str, prepared: Prepared) -> PolicyRequest:
    """The request policy judges, from the subject, the resource and what the payload gives."""
    try:
        return policy_request(subject, resource, operation, prepared.policy_fields())
    except PolicyError as exc:
        # The payload parsed, but a value in it is outside what policy accepts (e.g. a bad scope).
        raise Unprocessable(exc.message, code=exc.code) from None


# -- what one request carries through the steps ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    """One request to run: who asks, for which operation on which resource, with which payload."""

    ctx: RequestContext
    payload: PayloadKind
    resource_id: str
    prepare: Preparer
    idempotency: Idempotency | None = None

    @property
    def operation(self) -> str:
        return self.payload.operation

    @property
    def kind(self) -> ResourceKind:
        return resource_kind(self.payload.resource_type)


@dataclass(frozen=True, slots=True)
class LoadedFacts:
    """The resource (None if missing), the caller's authorisation facts, the policies, and their epoch."""

    resource: Any | None
    subject: Subject
    policies: Policies
    epoch: int


@dataclass(frozen=True, slots=True)
class Judged:
    """The outcome of checking and judging one request against one set of facts."""

    facts: LoadedFacts
    resource: Any
    ref: ResourceRef
    prepared: Prepared
    request: PolicyRequest
    decision: Decision
    # The unusual-access signals the request showed (``Facts.anomalies``), judged alike at commit.
    anomalies: frozenset[str] = frozenset()


@dataclass(slots=True)
class _InFlight:
    """A request between its check and its commit: what the commit unit needs, nothing more."""

    order: Order
    path: Path
    judged: Judged
    response: dict[str, Any] | None
    event: dict[str, Any]
    claim: str | None
    started: datetime
    # The decision the commit allowed by (for the usage counts once the commit has succeeded).
    allowed: Decision | None = None


class UsageSink(Protocol):
    """Told of each allowed request after its commit (``signer.services.usage.UsageRecorder``)."""

    def allowed(
        self,
        principal_id: str,
        resource_type: str,
        resource_id: str,
        decision: Decision,
        summary: dict[str, Any],
        response: dict[str, Any] | None,
        at: datetime,
    ) -> None: ...


class AnomalySink(Protocol):
    """Says which unusual-access signals a request shows before it is judged, and is told how it
    ended (``signer.services.anomalies.AnomalyDetector``)."""

    async def signals(self, ctx: RequestContext) -> frozenset[str]: ...

    def observe(
        self, ctx: RequestContext, signals: frozenset[str], outcome: Outcome, resource: EventTarget | None
    ) -> None: ...


class Verdict(enum.Enum):
    """What a path does with a decision: act on it, open a pending request for it, or refuse it."""

    ACT = "act"
    PEND = "pend"
    REFUSE = "refuse"


class Path(Protocol):
    """How a request reached the pipeline, and so what its steps do where the two paths differ."""

    def event_fields(self) -> dict[str, Any]: ...

    async def load(self, pipeline: DecisionPipeline, order: Order, now: datetime) -> tuple[LoadedFacts, bool]:
        """The facts to judge by, and whether they came from the cache (then a refusal reads again)."""
        ...

    async def reload(
        self, pipeline: DecisionPipeline, writer: Writer, order: Order, facts: LoadedFacts, now: datetime
    ) -> LoadedFacts:
        """Inside the commit unit: the facts to judge by now (``facts`` itself when nothing moved)."""
        ...

    def verdict(self, decision: Decision) -> Verdict: ...

    def check_prepared(self, resource: Any, prepared: Prepared) -> None: ...

    async def settle(self, writer: Writer, response: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class CallerRequest:
    """A caller's own request: facts from the cache; a decision asking for approval opens one."""

    def event_fields(self) -> dict[str, Any]:
        return {}

    async def load(self, pipeline: DecisionPipeline, order: Order, now: datetime) -> tuple[LoadedFacts, bool]:
        return await pipeline.cached_facts(order, now)

    async def reload(
        self, pipeline: DecisionPipeline, writer: Writer, order: Order, facts: LoadedFacts, now: datetime
    ) -> LoadedFacts:
        if writer.epoch == facts.epoch:
            return facts
        # A fact moved since we read it: decide again from what is committed now.
        await pipeline.auth.recheck(writer, order.ctx, now)
        current = await pipeline.read_facts(writer, order, now)
        pipeline.check_usable(order, current)
        pipeline.facts_cache.observe(writer.epoch)
        return current

    def verdict(self, decision: Decision) -> Verdict:
        if decision.effect is Effect.ALLOW:
            return Verdict.ACT
        return Verdict.PEND if decision.needs_approval else Verdict.REFUSE

    def check_prepared(self, resource: Any, prepared: Prepared) -> None:
        return None

    async def settle(self, writer: Writer, response: dict[str, Any]) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ApprovedRequest:
    """An approved request, run on behalf of its requester from the body its approvers approved.

    Facts are read fresh (never from the cache, never from the requester's long-expired token: the
    requester principal must still be enabled); the body must reproduce the approved digest; a decision
    that still asks for approval is accepted only when the approvals collected cover every requirement
    it names; the request's final state (and a signature as its result) commits with the operation's
    audit event (``settle``)."""

    record: ApprovalRequestRecord
    pending: PendingRequests

    def event_fields(self) -> dict[str, Any]:
        return {"approval": {"id": self.record.id, "payload_digest": self.record.payload_digest}}

    async def load(self, pipeline: DecisionPipeline, order: Order, now: datetime) -> tuple[LoadedFacts, bool]:
        async with pipeline.store.read() as reader:
            return await pipeline.read_facts(reader, order, now), False

    async def reload(
        self, pipeline: DecisionPipeline, writer: Writer, order: Order, facts: LoadedFacts, now: datetime
    ) -> LoadedFacts:
        # On behalf of a requester whose token may be long gone: the principal must still be enabled,
        # and resource, grants and policies are decided again from what is committed now.
        principal = await writer.principals.get(order.ctx.caller.principal_id)
        if principal is None or principal.disabled_at is not None:
            raise Forbidden("the requester is disabled", code="requester_disabled")
        current = await pipeline.read_facts(writer, order, now)
        pipeline.check_usable(order, current)
        return current

    def verdict(self, decision: Decision) -> Verdict:
        if decision.effect is Effect.ALLOW or (
            decision.effect is Effect.REQUIRE_APPROVAL and covers(self.record, decision)
        ):
            return Verdict.ACT
        return Verdict.REFUSE

    def check_prepared(self, resource: Any, prepared: Prepared) -> None:
        policy_digests = tuple(self.record.requirements.get("policy_digests", ()))
        if payload_digest(self.record.kind, resource, prepared, policy_digests) != self.record.payload_digest:
            # The stored body no longer reproduces what the approvers approved: never sign it.
            raise Conflict("the payload does not match the approved digest", code="approval_mismatch")

    async def settle(self, writer: Writer, response: dict[str, Any]) -> None:
        await self.pending.finalize(writer, self.record.id, payload_kind(self.record.kind), response)


# -- the pipeline ----------------------------------------------------------------------------------


@dataclass
class DecisionPipeline:
    """The steps, and what they need: the store, the token, the facts cache, the token re-check, the
    pending requests, and the clock every ``now`` on the path is read from."""

    store: Store
    hsm: KeyVault
    facts_cache: FactsCache
    auth: AuthService
    pending: PendingRequests
    clock: Clock
    # The audit field HMAC (signer.services.audit_hmac.AuditHmac.field): an Idempotency-Key is written
    # only as its HMAC. Without one, a request naming a key is recorded without it.
    field_hmac: Callable[[str, str], str] | None = None
    # Who may execute a request named by an Idempotency-Key, and how long its duplicates wait.
    idempotency: IdempotencyGate = field(init=False)
    # Counts allowed uses (which grant decided, the fetch's workload); None counts nothing.
    usage: UsageSink | None = None
    # Unusual access: signals for policy before judging, flags after (None: no detection).
    anomalies: AnomalySink | None = None

    def __post_init__(self) -> None:
        self.idempotency = IdempotencyGate(self.store, clock=self.clock)

    async def run(self, order: Order) -> dict[str, Any]:
        """A caller's request: the pipeline, once per Idempotency-Key if it names one."""
        path = CallerRequest()
        idempotency = order.idempotency
        if idempotency is None:
            return await self._execute(order, path, None)

        async def execute(claim: str) -> dict[str, Any]:
            return await self._execute(order, path, claim)

        async def refused(exc: SignerError) -> None:
            # Refused before anything was judged (the key is reused, or still in progress elsewhere).
            _count(None, order.payload, _outcome(exc))
            await self._record_refusal(self._event(order, path, self.clock()), exc)

        # At most one request per key reaches the HSM; its duplicates wait for its stored response.
        return await self.idempotency.run(order.ctx.caller.principal_id, idempotency, execute, refused)

    async def execute_approved(
        self, record: ApprovalRequestRecord, requester: Caller, request_id: str
    ) -> dict[str, Any]:
        """Run an approved request's stored canonical body on behalf of its requester."""
        ctx = RequestContext(request_id=request_id, caller=requester, epoch=-1)
        payload = payload_kind(record.kind)
        if payload.released_by_requester:
            # Its response must go to its requester alone: run through ``release``, never on approval.
            raise ValueError("this request is released by its requester")
        order = Order(ctx, payload, record.resource_id, payload.parse_stored(record.payload["body"]))
        return await self._execute(order, ApprovedRequest(record, self.pending), None)

    async def release(
        self,
        ctx: RequestContext,
        payload: PayloadKind,
        resource_id: str,
        approval_id: str,
        prepare_stored: Callable[[Mapping[str, Any]], Preparer],
    ) -> dict[str, Any]:
        """An approved request its requester runs itself, once (``PayloadKind.released_by_requester``:
        a secret read). The request must be the caller's own, for this operation on this resource, and
        approved (``pending.releasable``); then its stored body (``prepare_stored``) runs as an approved
        request does: facts read fresh, the approved digest reproduced, grants and policy judged again,
        the approvals re-counted and the request closed in the commit that audits the response."""
        now = self.clock()
        async with self.store.read() as reader:
            record = await reader.approvals.get(approval_id)
        try:
            record = releasable(record, ctx.caller.principal_id, payload.operation, resource_id, now)
            prepare = prepare_stored(record.payload["body"])
        except SignerError as exc:
            _count(None, payload, _outcome(exc))
            unreleased = Order(ctx, payload, resource_id, _no_preparer)
            event = {**self._event(unreleased, CallerRequest(), now), "approval": {"id": approval_id}}
            await self._record_refusal(event, exc)
            raise
        try:
            return await self._execute(
                Order(ctx, payload, resource_id, prepare), ApprovedRequest(record, self.pending), None
            )
        except SignerError as exc:
            if exc.code == "approval_quorum_lost":
                # Refused and audited by _execute; the request goes back to collecting approvals.
                await self._reopen(approval_id, exc, ctx.request_id)
            raise

    async def _reopen(self, approval_id: str, exc: SignerError, request_id: str) -> None:
        now = self.clock()

        async def unit(writer: Writer) -> None:
            await self.pending.reopen(writer, approval_id, exc, now, request_id)

        try:
            await self.store.submit(unit)
        except SignerError:
            # The refusal is what the requester needs; the next release finds the quorum lost again.
            pass

    async def dry_run(
        self,
        ctx: RequestContext,
        subject_id: str,
        payload: PayloadKind,
        resource_id: str,
        prepare: Preparer,
        candidate: tuple[str, int, str | None, tuple[str, str] | None] | None,
    ) -> dict[str, Any]:
        """Judge a request for ``subject_id`` against the live policy (or with a candidate version in
        place) with the ledger as it is now; nothing is signed, reserved or counted. An admin may ask
        about any resource; anyone else only about one the subject holds a grant on."""
        kind = resource_kind(payload.resource_type)
        now = self.clock()
        async with self.store.read() as reader:
            policies = await load_policies(reader)
            subject = await load_subject(reader, subject_id, now, policies)
            resource = await kind.load(reader, resource_id)
            if resource is None or (
                ctx.caller.role is not Role.ADMIN and not subject.reaches(kind.ref(resource))
            ):
                raise kind.not_found()
            payload.check_resource(resource)
            prepared = prepare(resource)
            request = request_for(subject, kind.ref(resource), payload.operation, prepared)
            policy_set = subject.policy_set
            candidate_ref = None
            if candidate is not None:
                policy_id, version, scope, cand_resource = candidate
                record = await reader.policies.get_version(policy_id, version)
                if record is None:
                    raise NotFound("no such policy version", code="policy_not_found")
                attached = AttachedPolicy(
                    parse_stored(record.document),
                    scope=scope,
                    resource_type=None if cand_resource is None else cand_resource[0],
                    resource_id=None if cand_resource is None else cand_resource[1],
                )
                policy_set = policy_set.with_candidate(attached)
                candidate_ref = attached.ref().as_dict()
            queries = usage_queries(request, policy_set, now=now)
        async with self.store.write() as writer:
            # Read through a writer so the running totals are exact; nothing is written (no
            # reservation, no audit event), so the transaction commits empty.
            usage = {q: await writer.ledger.usage(q.limit_key, q.since, now) for q in queries}
            writer.ledger.discard()
        decision = judge(request, policy_set, Facts(usage), now)
        result = decision_summary(decision)
        result["reservations"] = [r.as_dict() for r in decision.reservations]
        result["request"] = prepared.summary
        result["principal_id"] = subject_id
        result.update(kind.names(resource_id))
        result["operation"] = payload.operation
        if candidate_ref is not None:
            result["candidate"] = candidate_ref
        return result

    # -- the steps ---------------------------------------------------------------------------------

    async def _execute(self, order: Order, path: Path, claim: str | None) -> dict[str, Any]:
        """Check and judge, act, commit; for a request without an Idempotency-Key or one holding its
        claim (``claim``). Every refusal is audited, and every outcome counted, here."""
        started = self.clock()
        event = self._event(order, path, started)
        judged: Judged | None = None
        response: dict[str, Any] | None = None
        committing = False
        # Only a caller's own requests are watched (an approved one runs for its requester).
        watch = self.anomalies if isinstance(path, CallerRequest) else None
        signals: frozenset[str] = frozenset()
        try:
            if watch is not None:
                signals = await watch.signals(order.ctx)
            judged = await self.precheck(order, path, started, signals)
            event["request"] = judged.prepared.summary
            path.check_prepared(judged.resource, judged.prepared)
            if path.verdict(judged.decision) is Verdict.ACT:
                response = await self.act(judged)
                event["result"] = order.payload.result_summary(response)
            flight = _InFlight(order, path, judged, response, event, claim, started)
            committing = True
            # The unit only reads and writes through its writer (the signature is already made and
            # stays in memory), so the store may run it again if PostgreSQL aborts the batch; and it
            # makes no use of the seq or hash its audit record gets, so its batch may run ahead of the
            # write lock and be chained on the head found under it (Store.submit, relinkable).
            result = await self.store.submit(functools.partial(self.commit, flight), relinkable=True)
        except SignerError as exc:
            _count(judged, order.payload, _outcome(exc))
            if committing and isinstance(exc, (DatabaseUnavailable, AuditUnavailable)):
                # The signature is dropped here and never leaves. Recording the failure would wait
                # for the same database that just failed, past the caller's deadline: the store
                # logged it.
                raise
            # Any signature is dropped here and never leaves; the audit event says one was made
            # (none was when the request was judged to need approval before the HSM).
            discarded = {"signature_discarded": True} if committing and response is not None else {}
            await self._record_refusal({**event, **discarded}, exc)
            if watch is not None:
                outcome = Outcome.DENIED if _outcome(exc) == "denied" else Outcome.FAILED
                watch.observe(order.ctx, signals, outcome, _target(judged))
            raise
        pending = _is_pending(result)
        _count(judged, order.payload, "pending_approval" if pending else "allowed")
        if watch is not None:
            outcome = Outcome.PENDING_APPROVAL if pending else Outcome.ALLOWED
            watch.observe(order.ctx, signals, outcome, _target(judged))
        if self.usage is not None and flight.allowed is not None:
            self.usage.allowed(
                order.ctx.caller.principal_id,
                judged.ref.type,
                judged.ref.id,
                flight.allowed,
                judged.prepared.summary,
                flight.response,
                started,
            )
        return result

    async def precheck(
        self, order: Order, path: Path, now: datetime, anomalies: frozenset[str] = frozenset()
    ) -> Judged:
        """Everything that can refuse before the HSM signs: the resource, grants and every rule, limits
        judged on the usage this process already knows (a lower bound; the commit judges them exactly
        under the write lock). A decision asking for approval is kept: the HSM is then not asked."""
        facts, cached = await path.load(self, order, now)
        for attempt in (0, 1):
            try:
                resource, ref = self.check_resource(order, facts)
                prepared = order.prepare(resource)
                request = request_for(facts.subject, ref, order.operation, prepared)
                known = optimistic_facts(self.store.ledger_cache.at_least, anomalies)
                decision = judge(request, facts.subject.policy_set, known, now)
                verdict = path.verdict(decision)
                if verdict is Verdict.REFUSE:
                    raise refusal(decision, facts.subject, ref)
                self._check_state(order, ref)
                return Judged(facts, resource, ref, prepared, request, decision, anomalies)
            except SignerError:
                if attempt or not cached:
                    raise
                # Never refuse on cached facts alone: read them again.
                async with self.store.read() as reader:
                    facts = await self.read_facts(reader, order, now)
        raise AssertionError("unreachable")

    async def act(self, judged: Judged) -> dict[str, Any]:
        """Sign inside the token and check the signature; the response stays here until commit."""
        return await judged.prepared.act(self.hsm, judged.resource)

    async def commit(self, flight: _InFlight, writer: Writer) -> dict[str, Any]:
        """Inside the write transaction: facts again if they moved, judge with exact usage, then open a
        pending request, or reserve, store and audit the response, or refuse."""
        order, path, judged = flight.order, flight.path, flight.judged
        ctx = order.ctx
        # Judged at the instant the request started, like the check before signing: the ledger cache
        # answers any window start from memory, and the usage queries can be reused.
        now = flight.started
        current = await path.reload(self, writer, order, judged.facts, now)
        if order.idempotency is not None:
            replay = await self._stored_response(writer, flight)
            if replay is not None:
                return replay
        decision = await self._judge_exactly(writer, flight, current, now)
        verdict = path.verdict(decision)
        if verdict is Verdict.PEND:
            # No signature leaves: the request waits for its approvers (stored in this transaction).
            record = await self.pending.open(
                writer,
                ctx,
                operation=order.operation,
                resource=judged.resource,
                prepared=judged.prepared,
                decision=decision,
                now=now,
            )
            body = pending_body(record)
            await self._store_response(writer, flight, body, now)
            writer.append_audit(
                _audit_event(
                    flight.event,
                    Outcome.PENDING_APPROVAL,
                    approval_id=record.id,
                    decision=decision_summary(decision),
                )
            )
            return body
        if verdict is Verdict.REFUSE:
            raise refusal(decision, current.subject, judged.ref)
        if flight.response is None:
            # Judged "needs approval" before the HSM, but not now: the policy moved underneath.
            raise Conflict(
                "the policy changed while deciding; send the request again", code="decision_changed"
            )
        await writer.ledger.reserve(
            [
                LedgerEntry(r.limit_key, r.amount, r.window_start, r.window_end, ctx.request_id)
                for r in decision.reservations
            ]
        )
        await self._store_response(writer, flight, flight.response, now)
        writer.append_audit(_audit_event(flight.event, Outcome.ALLOWED, decision=decision_summary(decision)))
        flight.allowed = decision
        await path.settle(writer, flight.response)
        if judged.prepared.settles is not None:
            await judged.prepared.settles(writer, current.resource)
        return flight.response

    async def _judge_exactly(
        self, writer: Writer, flight: _InFlight, current: LoadedFacts, now: datetime
    ) -> Decision:
        """The decision with exact usage under the write lock (the one before the HSM when it still
        holds), with every shadow candidate judged beside it and recorded."""
        judged, ctx = flight.judged, flight.order.ctx
        policy_set = current.subject.policy_set
        unchanged = current is judged.facts
        request = (
            judged.request
            if unchanged
            else request_for(current.subject, judged.ref, flight.order.operation, judged.prepared)
        )
        keep = unchanged and judged.decision.bounds is not None
        # The sums the decision before signing read, when it can be kept; otherwise every sum.
        queries = (
            {bound.query for bound in judged.decision.bounds or ()}
            if keep
            else set(usage_queries(request, policy_set, now=now))
        )
        shadows = [
            (attachment_id, current.subject.candidate_set(attachment_id, attached))
            for attachment_id, attached in current.policies.shadow
            if attached.applies_to(request)
        ]
        for _, candidate_set in shadows:
            queries |= usage_queries(request, candidate_set, now=now)
        if keep and not queries and not shadows:
            # The decision before signing read no sum and no shadow candidate applies: nothing to read
            # again (holds_under of no bounds is true), and the pure engine would return it again.
            decision = judged.decision
            usage = Facts({}, anomalies=judged.anomalies)
        else:
            usage = await _read_usage(writer, queries, now, judged.anomalies)
            if keep and judged.decision.holds_under(usage):
                # Same request, policy set and instant as the check before signing, and every sum that
                # decision read is still within the range where it comes out the same: the pure engine
                # would return it again.
                decision = judged.decision
            else:
                if keep:
                    # The decision moved: judge again with every sum the engine may read.
                    usage = await _read_usage(
                        writer, queries | usage_queries(request, policy_set, now=now), now, judged.anomalies
                    )
                decision = judge(request, policy_set, usage, now)
        metrics.policy_decision(decision.effect.value, (reason.rule_id for reason in decision.reasons))
        for attachment_id, candidate_set in shadows:
            candidate = judge(request, candidate_set, usage, now)
            shadow = ShadowDecision(decision, candidate)
            writer.policies.record_shadow(
                attachment_id,
                now,
                ctx.request_id,
                decision.effect.value,
                candidate.effect.value,
                shadow.differs,
                decision_summary(candidate),
            )
        return decision

    async def _stored_response(self, writer: Writer, flight: _InFlight) -> dict[str, Any] | None:
        """The response another request with this Idempotency-Key committed first (only if our claim
        went stale and was taken over): ours is dropped and audited as such, theirs returned."""
        idempotency, ctx = flight.order.idempotency, flight.order.ctx
        assert idempotency is not None
        stored = await writer.idempotency.get(ctx.caller.principal_id, idempotency.key)
        if stored is not None and stored.claim is None:
            result = replayed(stored, idempotency)
            if flight.response is not None:
                writer.append_audit(_audit_event(flight.event, Outcome.DUPLICATE, signature_discarded=True))
            return result
        if stored is not None and stored.claim != flight.claim:
            # Our claim went stale and another request holds the key now: it executes, not us.
            raise in_progress()
        return None

    async def _store_response(
        self, writer: Writer, flight: _InFlight, response: dict[str, Any], now: datetime
    ) -> None:
        idempotency, ctx = flight.order.idempotency, flight.order.ctx
        if idempotency is None:
            return
        await writer.idempotency.insert(
            IdempotencyRecord(
                ctx.caller.principal_id, idempotency.key, idempotency.request_digest, response, now
            ),
            claim=flight.claim,
        )

    # -- facts -------------------------------------------------------------------------------------

    def check_resource(self, order: Order, facts: LoadedFacts) -> tuple[Any, ResourceRef]:
        """The checks before policy: the resource exists for this caller and suits the operation."""
        kind = order.kind
        if facts.resource is None:
            raise kind.not_found()
        ref = kind.ref(facts.resource)
        if not facts.subject.reaches(ref):
            # No grant reaches this resource (none names it, or a no-access overrides each that
            # does): indistinguishable from one that does not exist.
            raise kind.not_found()
        # The role only after existence: a caller of the wrong role refused for a resource it cannot
        # see, and told "no such" for a missing one, would learn which ids exist.
        order.payload.check_caller(order.ctx.caller.role)
        order.payload.check_resource(facts.resource)
        return facts.resource, ref

    def check_usable(self, order: Order, facts: LoadedFacts) -> None:
        """``check_resource`` and the resource's state: for facts read again inside the commit."""
        _, ref = self.check_resource(order, facts)
        self._check_state(order, ref)

    @staticmethod
    def _check_state(order: Order, ref: ResourceRef) -> None:
        refused = order.kind.unusable(ref)
        if refused is not None:
            raise refused

    async def cached_facts(self, order: Order, now: datetime) -> tuple[LoadedFacts, bool]:
        principal_id = order.ctx.caller.principal_id
        cache = self.facts_cache
        name = (order.kind.type, order.resource_id)
        resource = cache.resources.get(name)
        subject = cache.grants.get(principal_id)
        policies = cache.policies
        if resource is not None and subject is not None and policies is not None:
            return LoadedFacts(resource, subject, policies, min(cache.epoch, order.ctx.epoch)), True
        async with self.store.read() as reader:
            facts = await self.read_facts(reader, order, now)
        if facts.resource is not None and cache.observe(facts.epoch):
            cache.resources.put(name, facts.resource)
            cache.grants.put(principal_id, facts.subject)
            cache.policies = facts.policies
        return LoadedFacts(
            facts.resource, facts.subject, facts.policies, min(facts.epoch, order.ctx.epoch)
        ), False

    async def read_facts(self, reader: Reader | Writer, order: Order, now: datetime) -> LoadedFacts:
        """The resource, the caller's groups, grants and policy set, and the epoch they are valid at."""
        epoch = reader.epoch if isinstance(reader, Writer) else await reader.epoch()
        resource = await order.kind.load(reader, order.resource_id)
        policies = await load_policies(reader)
        subject = await load_subject(reader, order.ctx.caller.principal_id, now, policies)
        return LoadedFacts(resource, subject, policies, epoch)

    # -- audit -------------------------------------------------------------------------------------

    def _event(self, order: Order, path: Path, now: datetime) -> dict[str, Any]:
        """The audit event's fields every outcome of a request carries."""
        ctx = order.ctx
        event: dict[str, Any] = {
            "kind": order.payload.event_kind,
            "operation": order.operation,
            "request_id": ctx.request_id,
            "at": now,
            "actor": ctx.actor(),
            **order.kind.names(order.resource_id),
        }
        event["resource"] = EventTarget(order.kind.type, order.resource_id)
        if order.idempotency is not None and self.field_hmac is not None:
            event["idempotency_key_hmac"] = self.field_hmac("idempotency_key", order.idempotency.key)
        event.update(path.event_fields())
        return event

    async def _record_refusal(self, event: dict[str, Any], exc: SignerError) -> None:
        extra: dict[str, Any] = {}
        if "decision" in exc.extra:
            extra["decision"] = exc.extra["decision"]
        elif "reasons" in exc.extra:
            extra["reasons"] = exc.extra["reasons"]
        record = _audit_event(event, Outcome(_outcome(exc)), error=ErrorRef(exc.code, exc.status), **extra)

        async def unit(writer: Writer) -> None:
            writer.append_audit(record)

        try:
            await self.store.submit(unit)
        except SignerError:
            # The original error is what the caller needs; the store failure is logged by the store.
            pass


async def _read_usage(
    writer: Writer, queries: Iterable[UsageQuery], now: datetime, anomalies: frozenset[str]
) -> Facts:
    """The exact sums (under the write lock) that answer ``queries``, with the request's ``anomalies``."""
    asked = list(queries)
    sums = await writer.ledger.usages([(q.limit_key, q.since) for q in asked], now)
    return Facts(dict(zip(asked, sums, strict=True)), anomalies=anomalies)


def _audit_event(
    event: dict[str, Any], outcome: Outcome, *, error: ErrorRef | None = None, **extra: Any
) -> AuditEvent:
    """The typed event for one outcome of a request, from the fields every outcome carries
    (``DecisionPipeline._event``: kind, time, caller, request id, the resource's names, what was asked)."""
    fields = {**event, **extra}
    kind, at = fields.pop("kind"), fields.pop("at")
    actor, request_id = fields.pop("actor"), fields.pop("request_id")
    resource = fields.pop("resource")
    return AuditEvent.of(
        kind,
        at=at,
        outcome=outcome,
        actor=actor,
        request_id=request_id,
        resource=resource,
        error=error,
        **fields,
    )


def _no_preparer(resource: Any) -> Prepared:
    raise AssertionError("a refused release prepares nothing")


def _outcome(exc: SignerError) -> str:
    return "denied" if exc.status in (401, 403, 404, 409, 429) else "failed"


def _target(judged: Judged | None) -> EventTarget | None:
    # Only a resource that exists (and that the caller reached) is named in an anomaly flag.
    return None if judged is None else EventTarget(judged.ref.type, judged.ref.id)


def _is_pending(result: dict[str, Any]) -> bool:
    return result.get("state") == "pending_approval"


def _count(judged: Judged | None, payload: PayloadKind, outcome: str) -> None:
    # Only a resource that exists is named: a caller's made-up ids must not become label values.
    payload.count(None if judged is None else judged.resource, payload.operation, outcome)
