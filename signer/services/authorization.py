"""Authorisation facts for the policy engine, and the engine's decisions as caller-facing errors.

The engine (``policy``) is pure: this module reads what it needs from the store (the caller's groups
and live grants, the policy versions attached in force and in shadow), builds the ``PolicyRequest``
about a resource (a ``ResourceRef``) from the fields its payload gives, and turns a decision that is not
an allow into the error the caller gets: the resource kind's 404 when no grant reaches the resource (none
names it, or every one that does is overridden by a no-access grant: ``policy.grants_reach``; the same
answer as one that does not exist, so there is no existence oracle), 429 with ``Retry-After``
when only rate limits refused, 403 with the reasons otherwise. Loaded facts are immutable values, so a
process caches them per facts epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from policy import (
    AttachedPolicy,
    Decision,
    Effect,
    Facts,
    Grant,
    PolicyDocumentError,
    PolicyRequest,
    PolicySet,
    grants_reach,
    parse_stored_policy_json,
)
from signer.errors import Forbidden, IntegrityError, RateLimited, SignerError
from signer.services.resources import MAKING, ResourceRef, resource_kind
from signer.store import GrantRecord, Reader, Writer

RATE_CODES = frozenset({"rate_limit_exceeded"})
GRANT_CODES = frozenset({"operation_not_granted", "grant_expired", "unknown_operation", "no_access"})


@dataclass(frozen=True, slots=True)
class Policies:
    """The attached documents: ``live`` decide, ``shadow`` are candidates judged beside them."""

    live: tuple[AttachedPolicy, ...] = ()
    shadow: tuple[tuple[str, AttachedPolicy], ...] = ()


# Resources one subject remembers ``reaches`` answers for (see ``Subject.reached``).
_REACHED_MAX = 1024


@dataclass(frozen=True, slots=True)
class Subject:
    """One principal's authorisation facts: groups, live grants and the policy set built from them."""

    principal_id: str
    groups: frozenset[str]
    grants: tuple[GrantRecord, ...]
    policy_set: PolicySet
    candidates: dict[str, PolicySet] = field(default_factory=dict, compare=False)
    # What ``reaches`` answered, by the resource's (type, id, scope): a pure function of this subject's
    # grants and groups, which a Subject never changes (the facts cache builds a new one when the facts
    # epoch moves), asked again by every request of a cached subject. Bounded: starts afresh when full.
    reached: dict[tuple[str, str, str], bool] = field(default_factory=dict, compare=False, repr=False)

    def reaches(self, resource: ResourceRef) -> bool:
        """Whether the subject holds any grant that reaches ``resource`` (see ``holds_any_grant``)."""
        name = (resource.type, resource.id, resource.scope)
        answer = self.reached.get(name)
        if answer is None:
            if len(self.reached) >= _REACHED_MAX:
                self.reached.clear()
            answer = self.reached[name] = reaches(
                self.policy_set.grants, self.principal_id, self.groups, resource
            )
        return answer

    def candidate_set(self, attachment_id: str, candidate: AttachedPolicy) -> PolicySet:
        cached = self.candidates.get(attachment_id)
        if cached is None:
            cached = self.candidates[attachment_id] = self.policy_set.with_candidate(candidate)
        return cached


def to_grant(record: GrantRecord) -> Grant:
    is_group = record.group_name is not None
    return Grant(
        grant_id=record.id,
        principal_id=(record.group_name if is_group else record.principal_id) or "",
        resource_type=record.resource_type,
        resource_id=record.resource_id,
        operations=frozenset(record.operations),
        expires_at=record.expires_at,
        revoked=record.revoked_at is not None,
        subject_type="group" if is_group else "principal",
        max_uses=record.max_uses,
        value_budgets={asset: int(value) for asset, value in record.value_budgets.items()},
        no_access=record.no_access,
    )


def parse_stored(document: str) -> Any:
    try:
        return parse_stored_policy_json(document)
    except PolicyDocumentError:
        # Every version was parsed before it was stored; failing now means the row was altered or
        # this build reads documents differently. Refuse rather than judge without the policy.
        raise IntegrityError("a stored policy document cannot be read", code="policy_unreadable") from None


async def load_policies(reader: Reader | Writer) -> Policies:
    live: list[AttachedPolicy] = []
    shadow: list[tuple[str, AttachedPolicy]] = []
    for attachment, version in await reader.policies.attached_documents():
        attached = AttachedPolicy(
            parse_stored(version.document),
            scope=attachment.scope,
            resource_type=attachment.resource_type,
            resource_id=attachment.resource_id,
        )
        if attachment.mode == "live":
            live.append(attached)
        else:
            shadow.append((attachment.id, attached))
    return Policies(tuple(live), tuple(shadow))


async def load_subject(
    reader: Reader | Writer, principal_id: str, now: datetime, policies: Policies
) -> Subject:
    groups = await reader.groups.of(principal_id)
    grants = tuple(await reader.grants.for_principal(principal_id, groups, now))
    policy_set = PolicySet(tuple(to_grant(g) for g in grants), policies.live)
    return Subject(principal_id, groups, grants, policy_set)


def holds_any_grant(grants: Iterable[GrantRecord], resource: ResourceRef) -> bool:
    """Whether any of one principal's live grants (its own and its groups', as ``for_principal`` reads
    them) reaches ``resource``: an allow of some operation that no no-access grant of the same subject
    overrides (``policy.grants_reach``). A caller it does not reach must get the resource kind's
    not-found answer, the same as for a resource that does not exist: no existence oracle, and a
    resource closed by no-access is not even seen to exist. ``Subject.reaches`` is the same check on
    grants already converted."""
    records = tuple(grants)
    principals = {r.principal_id for r in records if r.principal_id is not None}
    if len(principals) > 1:
        raise ValueError("holds_any_grant takes the grants of one principal")
    groups = frozenset(r.group_name for r in records if r.group_name is not None)
    return reaches(tuple(to_grant(r) for r in records), next(iter(principals), ""), groups, resource)


def reaches(
    grants: Iterable[Grant], principal_id: str, groups: frozenset[str], resource: ResourceRef
) -> bool:
    # Only grants about this kind of resource count: a signing grant on a scope is about its keys, and
    # must not let its holder tell a secret there from a missing one (nor `create` an existing secret).
    about = resource_kind(resource.type).operations - MAKING
    return grants_reach(
        (g for g in grants if g.no_access or g.operations & about),
        principal_id=principal_id,
        groups=groups,
        resource_type=resource.type,
        resource_id=resource.id,
        scope=resource.scope,
    )


def policy_request(
    subject: Subject, resource: ResourceRef, operation: str, fields: Mapping[str, Any]
) -> PolicyRequest:
    """The request policy judges: who asks for which operation on which resource, with the decoded
    fields its payload gives (``transaction``, ``typed_data_domain``, ``permits``: see ``payloads``)."""
    return PolicyRequest(
        principal_id=subject.principal_id,
        operation=operation,
        resource_id=resource.id,
        scope=resource.scope,
        resource_type=resource.type,
        groups=subject.groups,
        **fields,
    )


def optimistic_facts(
    at_least: Callable[[str, datetime | None], int], anomalies: frozenset[str] = frozenset()
) -> Facts:
    """Usage as far as this process already knows it (a lower bound: committed rows it has seen), for
    the check before the HSM signs, read as the engine asks. A limit already spent is refused here
    without a signature being made; one that is not is judged exactly later, under the write lock.
    ``anomalies``: the unusual-access signals seen for the request (``Facts.anomalies``)."""
    return Facts(lookup=lambda query: at_least(query.limit_key, query.since), anomalies=anomalies)


def decision_summary(decision: Decision) -> dict[str, Any]:
    """What the audit event and the caller see of a decision (reservations stay in the ledger)."""
    return {
        "effect": decision.effect.value,
        "reasons": decision.reasons_as_dicts(),
        "policies": [ref.as_dict() for ref in decision.policies],
        "approvals": [a.as_dict() for a in decision.approvals],
    }


def refusal(decision: Decision, subject: Subject, resource: ResourceRef) -> SignerError:
    """The error for a decision that is not an allow."""
    if not subject.reaches(resource):
        return resource_kind(resource.type).not_found()
    summary = decision_summary(decision)
    codes = {reason.code for reason in decision.reasons}
    if decision.effect is Effect.REQUIRE_APPROVAL:
        return Forbidden(
            "policy requires approval for this request",
            code="approval_required",
            reasons=summary["reasons"],
            decision=summary,
        )
    if codes & GRANT_CODES:
        # No usable grant: that is the answer, whatever the rules also said.
        return Forbidden(
            f"the operation is not granted on this {resource.type}",
            code="operation_not_granted",
            reasons=summary["reasons"],
            decision=summary,
        )
    if codes and codes <= RATE_CODES:
        return RateLimited(
            "rate limit reached",
            code="rate_limited",
            reasons=summary["reasons"],
            decision=summary,
            # The engine does not say when a window frees up; one second is the smallest honest hint.
            retry_after=1,
        )
    return Forbidden(
        "policy denied the request", code="policy_denied", reasons=summary["reasons"], decision=summary
    )
