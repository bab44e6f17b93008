"""Signing: decide, sign inside the token, check the signature, record the decision, then release.

The order is the point. A request is authorised from facts (cached per process, see ``facts``), its
payload parsed into the exact digest to sign, the digest signed by the HSM, and the signature checked by an
independent implementation (recovery to the key's address for secp256k1, ``cryptography`` for P-256 and
Ed25519). Only then is the audit event written, in a group-commit transaction that re-checks the facts
under the write lock if anything changed since they were read; the response leaves after that commit.
If the event cannot be written the signature is discarded and the caller gets 503: nothing is released
unaudited. Every outcome after authentication (allowed, denied, failed) is audited.

Approvals: when policy requires approval (judged before the HSM with optimistic usage, or exactly in
the commit unit), no signature leaves: the commit unit hands the prepared payload and the decision to
the ``ApprovalGate`` (``signer.services.approvals``), which stores the pending request in that same
transaction, and the caller gets ``{"state": "pending_approval", ...}`` (HTTP 202). Once approved, the
gate calls ``execute_approved``: the stored body is prepared again (it must reproduce the approved
digest), grants, policy and limits are decided again from committed facts, and a decision that still
asks for approval is accepted only when the approvals collected cover every requirement it names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from policy import (
    AttachedPolicy,
    Decision,
    Effect,
    Facts,
    PolicyError,
    PolicyRequest,
    ShadowDecision,
    UsageQuery,
    evaluate,
    usage_queries,
)
from signer import metrics
from signer.errors import (
    AuditUnavailable,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
    SignerError,
    Unprocessable,
)
from signer.eth import (
    Permit,
    UnsignedTransaction,
    decode_permits,
    decode_unsigned_transaction,
    message_signature_bytes,
    parse_transaction,
    personal_message_digest,
    recoverable_signature,
    typed_data_digest,
)
from signer.hsm import Curve, KeyVault
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.authorization import (
    Policies,
    Subject,
    decision_summary,
    grant_names_key,
    load_policies,
    load_subject,
    optimistic_facts,
    parse_stored,
    policy_request,
    refusal,
)
from signer.services.context import Caller, RequestContext, iso, utcnow
from signer.services.facts import FactsCache
from signer.services.idempotency import Idempotency, IdempotencyGate, in_progress, replayed
from signer.services.verify import check_ed25519, check_p256
from signer.store import IdempotencyRecord, KeyRecord, LedgerEntry, Reader, Store, Writer

# Which curves each operation can be performed with.
_CURVES = {
    "sign_transaction": {Curve.SECP256K1},
    "sign_typed_data": {Curve.SECP256K1},
    "sign_message": {Curve.SECP256K1, Curve.P256, Curve.ED25519},
    "sign_raw": {Curve.SECP256K1, Curve.P256},
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the token will sign, what policy judges and what the audit log says about it."""

    data: bytes
    summary: dict[str, Any]
    finish: Callable[[KeyRecord, bytes], dict[str, Any]]
    transaction: Any = None  # signer.eth.TransactionFields, for policy
    typed_data_domain: Mapping[str, Any] | None = None
    permits: tuple[Permit, ...] = ()  # approvals decoded from typed data, counted like ``approve``
    # For approvals: the canonical body that prepares exactly these bytes again, the decoded view
    # approvers read, and the chain id (None for payloads that name none).
    body: Mapping[str, Any] | None = None
    # The view, or how to build it: only a request that waits for approval needs one.
    view: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
    chain_id: int | None = None

    def describe(self) -> Mapping[str, Any]:
        """The decoded view approvers read."""
        view = self.view() if callable(self.view) else self.view
        return view or {}


@dataclass(frozen=True, slots=True)
class ApprovedExecution:
    """An approved request to sign on behalf of its requester (see ``SigningService.execute_approved``).

    ``digest_of(key, prepared)`` recomputes the approval digest from the payload as prepared now;
    ``covers(decision)`` says whether the approvals collected satisfy what a decision asks for now;
    ``finalize(writer, response, now)`` runs inside the signing commit unit (it may raise to refuse)."""

    approval_id: str
    request_id: str
    requester: Caller
    operation: str
    key_id: str
    body: Mapping[str, Any]
    payload_digest: str
    digest_of: Callable[[KeyRecord, Prepared], str]
    covers: Callable[[Decision], bool]
    finalize: Callable[[Writer, dict[str, Any], datetime], Awaitable[None]]


class ApprovalGate(Protocol):
    """Where a request that needs approval goes: ``open`` stores it (inside the signing commit unit,
    with the writer of that transaction) and returns the body the caller gets with HTTP 202."""

    async def open(
        self,
        writer: Writer,
        ctx: RequestContext,
        *,
        operation: str,
        key: KeyRecord,
        prepared: Prepared,
        decision: Decision,
        now: datetime,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Facts:
    key: KeyRecord | None
    subject: Subject
    policies: Policies
    epoch: int


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _check_key(ctx: RequestContext, key: KeyRecord | None, subject: Subject, operation: str) -> KeyRecord:
    """The checks that come before policy: the key exists for this caller, is usable for the operation."""
    if key is None:
        raise NotFound("no such key", code="key_not_found")
    if ctx.caller.role is not Role.SERVICE:
        # Signing is for service principals; people act through grants on their own service accounts.
        raise Forbidden("only service principals sign", code="role_required")
    if not any(grant_names_key(g, key) for g in subject.grants):
        # No grant at all about this key: indistinguishable from a key that does not exist.
        raise NotFound("no such key", code="key_not_found")
    if Curve(key.curve) not in _CURVES[operation]:
        raise Unprocessable(
            f"{operation} is not possible with a {key.curve} key", code="unsupported_operation"
        )
    return key


def _check_state(key: KeyRecord) -> None:
    if key.state != "active":
        raise Conflict("the key is disabled", code="key_disabled")


def _request_for(subject: Subject, key: KeyRecord, operation: str, prepared: Prepared) -> PolicyRequest:
    try:
        return policy_request(
            subject, key, operation, prepared.transaction, prepared.typed_data_domain, prepared.permits
        )
    except PolicyError as exc:
        # The payload parsed, but a value in it is outside what policy accepts (e.g. a bad scope).
        raise Unprocessable(exc.message, code=exc.code) from None


class SigningService:
    def __init__(self, store: Store, hsm: KeyVault, facts: FactsCache, auth: AuthService) -> None:
        self._store = store
        self._hsm = hsm
        self._facts = facts
        self._auth = auth
        self._approvals: ApprovalGate | None = None
        # Who may execute a request named by an Idempotency-Key, and how long its duplicates wait.
        self.idempotency = IdempotencyGate(store)

    def use_approvals(self, gate: ApprovalGate) -> None:
        """Send requests that need approval to ``gate``; without one they are refused (fail closed)."""
        self._approvals = gate

    async def execute_approved(self, execution: ApprovedExecution) -> dict[str, Any]:
        """Sign the stored canonical body of an approved request on behalf of its requester.

        Facts are read fresh (never from the cache, never from the requester's long-expired token: the
        requester principal must still be enabled); the body must reproduce the approved digest; policy
        and limits are decided again inside the commit unit, where ``execution.finalize`` also runs, so
        the approval's final state, its result and the signing event commit together or not at all.
        """
        ctx = RequestContext(request_id=execution.request_id, caller=execution.requester, epoch=-1)
        prepare = stored_preparer(execution.operation, execution.body)
        return await self._sign(ctx, execution.key_id, execution.operation, prepare, approved=execution)

    # -- the four operations ----------------------------------------------------------------------

    @staticmethod
    def _prepare_transaction(
        transaction: Mapping[str, Any] | None, raw: str | None
    ) -> Callable[[KeyRecord], Prepared]:
        def prepare(key: KeyRecord) -> Prepared:
            if (transaction is None) == (raw is None):
                raise InvalidRequest(
                    "give exactly one of 'transaction' (fields) or 'raw' (unsigned serialised hex)",
                    code="invalid_request",
                )
            tx = (
                parse_transaction(_rpc_fields(transaction, key))
                if transaction is not None
                else decode_unsigned_transaction(_unhex(raw or "", "raw"))
            )
            fields = tx.as_json()
            return Prepared(
                tx.digest,
                _tx_summary(tx, fields),
                lambda key, rs: _finish_transaction(tx, key, rs),
                transaction=tx.fields,
                body={"transaction": fields},
                view=lambda: _tx_view(tx, key),
                chain_id=tx.chain_id,
            )

        return prepare

    async def sign_transaction(
        self,
        ctx: RequestContext,
        key_id: str,
        transaction: Mapping[str, Any] | None,
        raw: str | None,
        idempotency: Idempotency | None = None,
    ) -> dict[str, Any]:
        prepare = self._prepare_transaction(transaction, raw)
        return await self._sign(ctx, key_id, "sign_transaction", prepare, idempotency)

    @staticmethod
    def _prepare_message(message: bytes) -> Callable[[KeyRecord], Prepared]:
        def prepare(key: KeyRecord) -> Prepared:
            curve = Curve(key.curve)
            body = {"message": _hex(message)}
            view = _message_view(message, key)
            if curve is Curve.SECP256K1:
                digest = personal_message_digest(message)
                return Prepared(
                    digest,
                    {"scheme": "eip191", "message_length": len(message), "digest": _hex(digest)},
                    lambda k, rs: _finish_eth_message(digest, k, rs),
                    body=body,
                    view={"scheme": "eip191", **view, "digest": _hex(digest)},
                )
            if curve is Curve.P256:
                digest = hashlib.sha256(message).digest()
                return Prepared(
                    digest,
                    {"scheme": "ecdsa-p256-sha256", "message_length": len(message), "digest": _hex(digest)},
                    lambda k, rs: _finish_p256(digest, k, rs),
                    body=body,
                    view={"scheme": "ecdsa-p256-sha256", **view, "digest": _hex(digest)},
                )
            return Prepared(
                message,
                {
                    "scheme": "ed25519",
                    "message_length": len(message),
                    "message_sha256": _hex(hashlib.sha256(message).digest()),
                },
                lambda k, sig: _finish_ed25519(message, k, sig),
                body=body,
                view={"scheme": "ed25519", **view},
            )

        return prepare

    async def sign_message(
        self, ctx: RequestContext, key_id: str, message: bytes, idempotency: Idempotency | None = None
    ) -> dict[str, Any]:
        return await self._sign(ctx, key_id, "sign_message", self._prepare_message(message), idempotency)

    @staticmethod
    def _prepare_typed_data(typed_data: Mapping[str, Any]) -> Callable[[KeyRecord], Prepared]:
        def prepare(key: KeyRecord) -> Prepared:
            typed = typed_data_digest(typed_data)
            # A permit is an approval: decoded strictly (or refused) so policy counts it like approve.
            permits = decode_permits(typed)
            summary: dict[str, Any] = {
                "scheme": "eip712",
                "primary_type": typed.primary_type,
                "domain": typed.domain,
                "digest": _hex(typed.digest),
            }
            if permits:
                summary["permits"] = [p.as_json() for p in permits]
            canonical = typed.as_json()
            chain = typed.domain.get("chainId")
            return Prepared(
                typed.digest,
                summary,
                lambda k, rs: _finish_eth_message(typed.digest, k, rs),
                typed_data_domain=typed.domain,
                permits=permits,
                body={"typed_data": canonical},
                view={
                    "scheme": "eip712",
                    "key_id": key.id,
                    "from": key.address,
                    "primary_type": typed.primary_type,
                    "domain": canonical["domain"],
                    "message": canonical["message"],
                    "permits": [p.as_json() for p in permits],
                    "digest": _hex(typed.digest),
                },
                chain_id=chain if isinstance(chain, int) and not isinstance(chain, bool) else None,
            )

        return prepare

    async def sign_typed_data(
        self,
        ctx: RequestContext,
        key_id: str,
        typed_data: Mapping[str, Any],
        idempotency: Idempotency | None = None,
    ) -> dict[str, Any]:
        return await self._sign(
            ctx, key_id, "sign_typed_data", self._prepare_typed_data(typed_data), idempotency
        )

    @staticmethod
    def _prepare_digest(digest_hex: str) -> Callable[[KeyRecord], Prepared]:
        def prepare(key: KeyRecord) -> Prepared:
            digest = _unhex(digest_hex, "digest")
            if len(digest) != 32:
                raise InvalidRequest("digest must be exactly 32 bytes", code="invalid_digest", field="digest")
            summary: dict[str, Any] = {"scheme": "raw_digest", "blind": True, "digest": _hex(digest)}

            def finish(key: KeyRecord, rs: bytes) -> dict[str, Any]:
                if Curve(key.curve) is Curve.P256:
                    return _finish_p256(digest, key, rs)
                return _finish_eth_message(digest, key, rs)

            view = {**summary, "key_id": key.id, "from": key.address}
            return Prepared(digest, summary, finish, body={"digest": _hex(digest)}, view=view)

        return prepare

    async def sign_digest(
        self, ctx: RequestContext, key_id: str, digest_hex: str, idempotency: Idempotency | None = None
    ) -> dict[str, Any]:
        return await self._sign(ctx, key_id, "sign_raw", self._prepare_digest(digest_hex), idempotency)

    # -- dry run ----------------------------------------------------------------------------------

    async def dry_run(
        self,
        ctx: RequestContext,
        key_id: str,
        operation: str,
        payload: Mapping[str, Any],
        *,
        principal_id: str | None = None,
        candidate: tuple[str, int, str | None, str | None] | None = None,
    ) -> dict[str, Any]:
        """Evaluate a sign request against the live policy (or with a candidate version in place)
        using the ledger as it is now; nothing is signed, reserved or counted. A service principal
        asks for itself; an admin may name any principal."""
        if ctx.caller.role is Role.ADMIN:
            subject_id = principal_id or ctx.caller.principal_id
        elif ctx.caller.role is Role.SERVICE and principal_id in (None, ctx.caller.principal_id):
            subject_id = ctx.caller.principal_id
        else:
            raise Forbidden(
                "dry-run is for admins, or for a service principal about itself", code="role_required"
            )
        prepare = self._prepare_payload(operation, payload)
        now = utcnow()
        async with self._store.read() as reader:
            policies = await load_policies(reader)
            subject = await load_subject(reader, subject_id, now, policies)
            key = await reader.keys.get(key_id)
            if key is None or (
                ctx.caller.role is Role.SERVICE and not any(grant_names_key(g, key) for g in subject.grants)
            ):
                raise NotFound("no such key", code="key_not_found")
            if Curve(key.curve) not in _CURVES[operation]:
                raise Unprocessable(
                    f"{operation} is not possible with a {key.curve} key", code="unsupported_operation"
                )
            prepared = prepare(key)
            request = _request_for(subject, key, operation, prepared)
            policy_set = subject.policy_set
            candidate_ref = None
            if candidate is not None:
                policy_id, version, scope, cand_key = candidate
                record = await reader.policies.get_version(policy_id, version)
                if record is None:
                    raise NotFound("no such policy version", code="policy_not_found")
                attached = AttachedPolicy(parse_stored(record.document), scope=scope, key_id=cand_key)
                policy_set = policy_set.with_candidate(attached)
                candidate_ref = attached.ref().as_dict()
            queries = usage_queries(request, policy_set, now=now)
        async with self._store.write() as writer:
            # Read through a writer so the running totals are exact; nothing is written (no
            # reservation, no audit event), so the transaction commits empty.
            usage = {q: await writer.ledger.usage(q.limit_key, q.since, now) for q in queries}
            writer.ledger.discard()
        decision = evaluate(request, policy_set, Facts(usage), now=now)
        result = decision_summary(decision)
        result["reservations"] = [r.as_dict() for r in decision.reservations]
        result["request"] = prepared.summary
        result["principal_id"] = subject_id
        result["key_id"] = key_id
        result["operation"] = operation
        if candidate_ref is not None:
            result["candidate"] = candidate_ref
        return result

    def _prepare_payload(self, operation: str, payload: Mapping[str, Any]) -> Callable[[KeyRecord], Prepared]:
        if operation == "sign_transaction":
            return self._prepare_transaction(payload.get("transaction"), payload.get("raw"))
        if operation == "sign_message":
            message = payload.get("message")
            if not isinstance(message, bytes):
                raise InvalidRequest("message is required", code="invalid_field", field="message")
            return self._prepare_message(message)
        if operation == "sign_typed_data":
            typed = payload.get("typed_data")
            if not isinstance(typed, Mapping):
                raise InvalidRequest("typed_data is required", code="invalid_field", field="typed_data")
            return self._prepare_typed_data(typed)
        if operation == "sign_raw":
            digest = payload.get("digest")
            if not isinstance(digest, str):
                raise InvalidRequest("digest is required", code="invalid_field", field="digest")
            return self._prepare_digest(digest)
        raise InvalidRequest("unknown operation", code="invalid_operation", field="operation")

    # -- the pipeline -----------------------------------------------------------------------------

    async def _sign(
        self,
        ctx: RequestContext,
        key_id: str,
        operation: str,
        prepare: Callable[[KeyRecord], Prepared],
        idempotency: Idempotency | None = None,
        *,
        approved: ApprovedExecution | None = None,
    ) -> dict[str, Any]:
        if idempotency is None:
            return await self._execute(ctx, key_id, operation, prepare, None, None, approved=approved)

        async def execute(claim: str) -> dict[str, Any]:
            return await self._execute(ctx, key_id, operation, prepare, idempotency, claim, approved=approved)

        async def refused(exc: SignerError) -> None:
            # Refused before anything was judged (the key is reused, or still in progress elsewhere).
            _count(None, operation, exc)
            await self._record_refusal(_event(ctx, key_id, operation, utcnow(), idempotency, approved), exc)

        # At most one request per key reaches the HSM; its duplicates wait for its stored response.
        return await self.idempotency.run(ctx.caller.principal_id, idempotency, execute, refused)

    async def _execute(
        self,
        ctx: RequestContext,
        key_id: str,
        operation: str,
        prepare: Callable[[KeyRecord], Prepared],
        idempotency: Idempotency | None,
        claim: str | None,
        *,
        approved: ApprovedExecution | None = None,
    ) -> dict[str, Any]:
        """The pipeline, for a request without a key or one holding the key's claim (``claim``)."""
        now = started = utcnow()
        event = _event(ctx, key_id, operation, now, idempotency, approved)
        key: KeyRecord | None = None
        response: dict[str, Any] | None = None
        try:
            facts, prepared, request, needs_approval, pre_decision = await self._precheck(
                ctx, key_id, operation, prepare, now, approved
            )
            key = _check_key(ctx, facts.key, facts.subject, operation)
            event["request"] = prepared.summary
            if approved is not None and approved.digest_of(key, prepared) != approved.payload_digest:
                # The stored body no longer reproduces what the approvers approved: never sign it.
                raise Conflict("the payload does not match the approved digest", code="approval_mismatch")
            if not needs_approval:
                raw = await self._hsm.sign(key.hsm_id, Curve(key.curve), prepared.data)
                response = prepared.finish(key, raw)
        except SignerError as exc:
            _count(key, operation, exc)
            await self._record_refusal(event, exc)
            raise
        if response is not None:
            event["result"] = {k: response[k] for k in ("signer", "transaction_hash") if k in response}

        async def unit(writer: Writer) -> dict[str, Any]:
            # Judged at the instant the request started, like the check before signing: the ledger
            # cache answers any window start from memory, and the usage queries can be reused.
            now = started
            current = facts
            if approved is not None:
                # On behalf of a requester whose token may be long gone: the principal must still be
                # enabled, and key, grants and policies are decided again from what is committed now.
                principal = await writer.principals.get(ctx.caller.principal_id)
                if principal is None or principal.disabled_at is not None:
                    raise Forbidden("the requester is disabled", code="requester_disabled")
                current = await self._read_facts(writer, ctx, key_id, now)
                _check_state(_check_key(ctx, current.key, current.subject, operation))
            elif writer.epoch != facts.epoch:
                # A fact moved since we read it: decide again from what is committed now.
                await self._auth.recheck(writer, ctx, now)
                current = await self._read_facts(writer, ctx, key_id, now)
                _check_state(_check_key(ctx, current.key, current.subject, operation))
                self._facts.observe(writer.epoch)
            if idempotency is not None:
                stored = await writer.idempotency.get(ctx.caller.principal_id, idempotency.key)
                if stored is not None and stored.claim is None:
                    # Another request with this key committed first (only if our claim went stale and
                    # was taken over): ours is dropped and audited as such, theirs returned.
                    result = replayed(stored, idempotency)
                    if response is not None:
                        writer.append_audit({**event, "outcome": "duplicate", "signature_discarded": True})
                    return result
                if stored is not None and stored.claim != claim:
                    # Our claim went stale and another request holds the key now: it executes, not us.
                    raise in_progress()
            policy_set = current.subject.policy_set
            judged = request if current is facts else _request_for(current.subject, key, operation, prepared)
            keep = current is facts and pre_decision.bounds is not None
            # The sums the decision before signing read, when it can be kept; otherwise every sum.
            queries = (
                {bound.query for bound in pre_decision.bounds or ()}
                if keep
                else set(usage_queries(judged, policy_set, now=now))
            )
            shadows = [
                (attachment_id, current.subject.candidate_set(attachment_id, attached))
                for attachment_id, attached in current.policies.shadow
                if attached.applies_to(judged)
            ]
            for _, candidate_set in shadows:
                queries |= usage_queries(judged, candidate_set, now=now)
            usage = await _read_usage(writer, queries, now)
            if keep and pre_decision.holds_under(usage):
                # Same request, policy set and instant as the check before signing, and every sum that
                # decision read is still within the range where it comes out the same: the pure engine
                # would return it again.
                decision = pre_decision
            else:
                if keep:
                    # The decision moved: judge again with every sum the engine may read.
                    usage = await _read_usage(
                        writer, queries | usage_queries(judged, policy_set, now=now), now
                    )
                decision = evaluate(judged, policy_set, usage, now=now)
            metrics.policy_decision(decision.effect.value, (reason.rule_id for reason in decision.reasons))
            for attachment_id, candidate_set in shadows:
                candidate = evaluate(judged, candidate_set, usage, now=now)
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
            if decision.needs_approval and approved is None:
                # No signature leaves: the request waits for its approvers (stored in this transaction).
                pending = await self._open_approval(writer, ctx, operation, key, prepared, decision, now)
                if idempotency is not None:
                    await writer.idempotency.insert(
                        IdempotencyRecord(
                            ctx.caller.principal_id, idempotency.key, idempotency.request_digest, pending, now
                        ),
                        claim=claim,
                    )
                writer.append_audit(
                    {
                        **event,
                        "outcome": "pending_approval",
                        "approval_id": pending["approval"]["id"],
                        "decision": decision_summary(decision),
                    }
                )
                return pending
            if not _acceptable(decision, approved):
                raise refusal(decision, current.subject, key)
            if response is None:
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
            if idempotency is not None:
                await writer.idempotency.insert(
                    IdempotencyRecord(
                        ctx.caller.principal_id, idempotency.key, idempotency.request_digest, response, now
                    ),
                    claim=claim,
                )
            writer.append_audit({**event, "outcome": "allowed", "decision": decision_summary(decision)})
            if approved is not None:
                await approved.finalize(writer, response, now)
            return response

        try:
            # The unit only reads and writes through its writer (the signature is already made and
            # stays in memory), so the store may run it again if PostgreSQL aborts the batch.
            result = await self._store.submit(unit, rerunnable=True)
        except (DatabaseUnavailable, AuditUnavailable) as exc:
            # The signature is dropped here and never leaves. Recording the failure would wait for the
            # same database that just failed, past the caller's deadline: the store logged it.
            _count(key, operation, exc)
            raise
        except SignerError as exc:
            # The signature is dropped here and never leaves; the audit event says one was made
            # (none was when the request was judged to need approval before the HSM).
            _count(key, operation, exc)
            discarded = {"signature_discarded": True} if response is not None else {}
            await self._record_refusal({**event, **discarded}, exc)
            raise
        pending = result.get("state") == "pending_approval"
        metrics.signature(key.id, key.curve, operation, "pending_approval" if pending else "allowed")
        return result

    async def _open_approval(
        self,
        writer: Writer,
        ctx: RequestContext,
        operation: str,
        key: KeyRecord,
        prepared: Prepared,
        decision: Decision,
        now: datetime,
    ) -> dict[str, Any]:
        if self._approvals is None:
            raise Forbidden("policy requires approval for this request", code="approval_required")
        return await self._approvals.open(
            writer, ctx, operation=operation, key=key, prepared=prepared, decision=decision, now=now
        )

    async def _precheck(
        self,
        ctx: RequestContext,
        key_id: str,
        operation: str,
        prepare: Callable[[KeyRecord], Prepared],
        now: datetime,
        approved: ApprovedExecution | None = None,
    ) -> tuple[_Facts, Prepared, PolicyRequest, bool, Decision]:
        """Everything that can refuse before the HSM signs: key, grants and every rule, limits judged
        on the usage this process already knows (a lower bound; the commit unit judges them exactly
        under the write lock). Returns the decision too, for the commit unit to keep if it still
        holds, and whether the request needs approval (and has none yet): the HSM is then not asked."""
        if approved is not None:
            async with self._store.read() as reader:
                facts, cached = await self._read_facts(reader, ctx, key_id, now), False
        else:
            facts, cached = await self._cached_facts(ctx, key_id, now)
        for attempt in (0, 1):
            try:
                key = _check_key(ctx, facts.key, facts.subject, operation)
                prepared = prepare(key)
                request = _request_for(facts.subject, key, operation, prepared)
                known = optimistic_facts(self._store.ledger_cache.at_least)
                decision = evaluate(request, facts.subject.policy_set, known, now=now)
                needs_approval = decision.needs_approval and approved is None
                if not needs_approval and not _acceptable(decision, approved):
                    raise refusal(decision, facts.subject, key)
                if needs_approval and self._approvals is None:
                    raise refusal(decision, facts.subject, key)
                _check_state(key)
                return facts, prepared, request, needs_approval, decision
            except SignerError:
                if attempt or not cached:
                    raise
                # Never refuse on cached facts alone: read them again.
                async with self._store.read() as reader:
                    facts = await self._read_facts(reader, ctx, key_id, now)
        raise AssertionError("unreachable")

    async def _cached_facts(self, ctx: RequestContext, key_id: str, now: datetime) -> tuple[_Facts, bool]:
        principal_id = ctx.caller.principal_id
        cache = self._facts
        key = cache.keys.get(key_id)
        subject = cache.grants.get(principal_id)
        policies = cache.policies
        if key is not None and subject is not None and policies is not None:
            return _Facts(key, subject, policies, min(cache.epoch, ctx.epoch)), True
        async with self._store.read() as reader:
            facts = await self._read_facts(reader, ctx, key_id, now)
        if facts.key is not None and cache.observe(facts.epoch):
            cache.keys.put(key_id, facts.key)
            cache.grants.put(principal_id, facts.subject)
            cache.policies = facts.policies
        return _Facts(facts.key, facts.subject, facts.policies, min(facts.epoch, ctx.epoch)), False

    async def _read_facts(
        self, reader: Reader | Writer, ctx: RequestContext, key_id: str, now: datetime
    ) -> _Facts:
        """The key, the caller's groups, grants and policy set, and the epoch they are valid at."""
        epoch = reader.epoch if isinstance(reader, Writer) else await reader.epoch()
        key = await reader.keys.get(key_id)
        policies = await load_policies(reader)
        subject = await load_subject(reader, ctx.caller.principal_id, now, policies)
        return _Facts(key, subject, policies, epoch)

    async def _record_refusal(self, event: dict[str, Any], exc: SignerError) -> None:
        record = {**event, "outcome": _outcome(exc), "error": {"code": exc.code, "status": exc.status}}
        if "decision" in exc.extra:
            record["decision"] = exc.extra["decision"]
        elif "reasons" in exc.extra:
            record["reasons"] = exc.extra["reasons"]

        async def unit(writer: Writer) -> None:
            writer.append_audit(record)

        try:
            await self._store.submit(unit)
        except SignerError:
            # The original error is what the caller needs; the store failure is logged by the store.
            pass


async def _read_usage(writer: Writer, queries: Iterable[UsageQuery], now: datetime) -> Facts:
    """The exact sums (under the write lock) that answer ``queries``."""
    asked = list(queries)
    sums = await writer.ledger.usages([(q.limit_key, q.since) for q in asked], now)
    return Facts(dict(zip(asked, sums, strict=True)))


def _acceptable(decision: Decision, approved: ApprovedExecution | None) -> bool:
    """Allowed outright, or (for an approved execution) asking only for approvals already collected."""
    if decision.effect is Effect.ALLOW:
        return True
    return decision.effect is Effect.REQUIRE_APPROVAL and approved is not None and approved.covers(decision)


def stored_preparer(operation: str, body: Mapping[str, Any]) -> Callable[[KeyRecord], Prepared]:
    """The preparer for a stored canonical body (``Prepared.body``): the same code as a direct request."""
    if operation == "sign_transaction":
        return SigningService._prepare_transaction(body.get("transaction"), body.get("raw"))
    if operation == "sign_message":
        return SigningService._prepare_message(_unhex(str(body.get("message", "")), "message"))
    if operation == "sign_typed_data":
        typed = body.get("typed_data")
        if not isinstance(typed, Mapping):
            raise InvalidRequest("typed_data is required", code="invalid_field", field="typed_data")
        return SigningService._prepare_typed_data(typed)
    if operation == "sign_raw":
        return SigningService._prepare_digest(str(body.get("digest", "")))
    raise InvalidRequest("unknown operation", code="invalid_operation", field="operation")


def prepare_payload(operation: str, body: Mapping[str, Any], key: KeyRecord) -> Prepared:
    return stored_preparer(operation, body)(key)


def _eth(wei: int) -> str:
    """Wei as an exact decimal ETH string (no float)."""
    whole, frac = divmod(wei, 10**18)
    return f"{whole}.{frac:018d}".rstrip("0") if frac else str(whole)


def _tx_view(tx: UnsignedTransaction, key: KeyRecord) -> dict[str, Any]:
    """What an approver reads: every decoded field, value and gas cap in ETH and wei, the selector, the
    decoded token call (``token_call``: method, counterparty, counted amount) and the EIP-7702
    delegates (``TransactionFields.as_json``)."""
    view = {"scheme": "transaction", "key_id": key.id, "from": key.address, **tx.fields.as_json()}
    view["value_eth"] = _eth(tx.fields.value)
    view["max_gas_cost_eth"] = _eth(tx.fields.max_gas_cost)
    if tx.fields.authorizations:
        view["delegates"] = list(tx.fields.delegates)
    return view


def _message_view(message: bytes, key: KeyRecord) -> dict[str, Any]:
    view: dict[str, Any] = {"key_id": key.id, "from": key.address, "message_length": len(message)}
    try:
        view["message_text"] = message.decode("utf-8")
    except UnicodeDecodeError:
        view["message_hex"] = _hex(message)
    return view


def _event(
    ctx: RequestContext,
    key_id: str,
    operation: str,
    now: datetime,
    idempotency: Idempotency | None,
    approved: ApprovedExecution | None,
) -> dict[str, Any]:
    """The audit event's fields every outcome of a signing request carries."""
    event: dict[str, Any] = {
        "kind": f"sign.{operation.removeprefix('sign_')}",
        "operation": operation,
        "request_id": ctx.request_id,
        "at": iso(now),
        "actor": ctx.actor(),
        "key_id": key_id,
    }
    if idempotency is not None:
        event["idempotency_key_sha256"] = hashlib.sha256(idempotency.key.encode()).hexdigest()
    if approved is not None:
        event["approval"] = {"id": approved.approval_id, "payload_digest": approved.payload_digest}
    return event


def _outcome(exc: SignerError) -> str:
    return "denied" if exc.status in (401, 403, 404, 409, 429) else "failed"


def _count(key: KeyRecord | None, operation: str, exc: SignerError) -> None:
    # Only a key that exists names its id: a caller's made-up ids must not become label values.
    metrics.signature(key.id if key else None, key.curve if key else None, operation, _outcome(exc))


# -- finishing: turn the token's bytes into a checked response ------------------------------------


def _unhex(value: str, field: str) -> bytes:
    text = value[2:] if value[:2] in ("0x", "0X") else value
    if len(text) % 2:
        raise InvalidRequest(f"{field} is not valid hex", code="invalid_hex", field=field)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidRequest(f"{field} is not valid hex", code="invalid_hex", field=field) from None


def _rpc_fields(transaction: Mapping[str, Any], key: KeyRecord) -> Mapping[str, Any]:
    """Accept the two JSON-RPC habits eth.parse_transaction does not: ``from`` and ``input``."""
    fields = dict(transaction)
    sender = fields.pop("from", None)
    if sender is not None:
        if not isinstance(sender, str) or key.address is None or sender.lower() != key.address.lower():
            raise Unprocessable("'from' is not this key's address", code="from_mismatch", field="from")
    if "input" in fields:
        data = fields.pop("input")
        if "data" in fields and fields["data"] != data:
            raise InvalidRequest("'input' and 'data' differ", code="invalid_field", field="input")
        fields["data"] = data
    return fields


def _public_key(key: KeyRecord) -> bytes:
    return bytes.fromhex(key.public_key)


def _tx_summary(tx: UnsignedTransaction, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The audit event's view of a transaction (``fields`` is ``tx.as_json()``): the calldata by its
    length and hash, not its bytes."""
    summary = dict(fields)
    if summary.pop("data", None) is not None:
        summary["data_length"] = len(tx.fields.data)
        summary["data_sha256"] = _hex(hashlib.sha256(tx.fields.data).digest())
    summary["digest"] = _hex(tx.digest)
    return summary


def _finish_transaction(tx: UnsignedTransaction, key: KeyRecord, raw_rs: bytes) -> dict[str, Any]:
    sig = recoverable_signature(tx.digest, raw_rs, _public_key(key))
    signed = tx.assemble(sig)
    response: dict[str, Any] = {
        "key_id": key.id,
        "signer": key.address,
        "type": tx.tx_type,
        "chain_id": tx.chain_id,
        "raw_transaction": _hex(signed.raw),
        "transaction_hash": _hex(signed.hash),
        "r": hex(signed.r),
        "s": hex(signed.s),
        "v": signed.v,
    }
    if tx.tx_type != 0:
        response["y_parity"] = signed.y_parity
    return response


def _finish_eth_message(digest: bytes, key: KeyRecord, raw_rs: bytes) -> dict[str, Any]:
    sig = recoverable_signature(digest, raw_rs, _public_key(key))
    signature = message_signature_bytes(sig)
    return {
        "key_id": key.id,
        "signer": key.address,
        "digest": _hex(digest),
        "signature": _hex(signature),
        "r": hex(sig.r),
        "s": hex(sig.s),
        "v": signature[64],
    }


def _finish_p256(digest: bytes, key: KeyRecord, raw_rs: bytes) -> dict[str, Any]:
    der = check_p256(_public_key(key), digest, raw_rs)
    return {
        "key_id": key.id,
        "curve": key.curve,
        "digest": _hex(digest),
        "signature": _hex(raw_rs),
        "signature_der": _hex(der),
    }


def _finish_ed25519(message: bytes, key: KeyRecord, signature: bytes) -> dict[str, Any]:
    check_ed25519(_public_key(key), message, signature)
    return {"key_id": key.id, "curve": key.curve, "signature": _hex(signature)}
