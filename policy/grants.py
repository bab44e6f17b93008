"""Grants: may this principal perform this operation on this resource, now, within the grant's budget?

A grant names a subject (a principal, or a group the principal belongs to), a resource (one key, one
secret, or a scope prefix covering every key and secret at or below it), the operations it allows, and
optionally an expiry (the instant itself is already expired), a use count and value budgets per asset
(wei as ``native``, ERC-20 amounts per token address). Existence is not permission: with no matching
live grant the answer is deny, whoever created the key. A revoked grant is as if absent.

When several grants cover a request, one without limits is used in preference; otherwise the first one
(in the order given) whose budget still has room, and the decision carries the reservations that charge
it. A grant with value budgets covers only the assets it budgets: a token transfer through a grant
that budgets only wei is refused, so budgets cannot be dodged by moving another asset. Usage comes from
``Facts`` (the grant's lifetime sums); without them a limited grant cannot be used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from policy.canonical import canonical_asset, check_amount
from policy.decision import Decision, Effect, Reason
from policy.errors import PolicyInputError
from policy.facts import (
    Facts,
    MissingFactError,
    Reservation,
    UsageBound,
    UsageQuery,
    grant_spend_key,
    grant_uses_key,
)
from policy.request import KNOWN_OPERATIONS, OPERATIONS, Amount
from policy.scopes import is_scope, path_contains, scope_segments
from policy.windows import utc

__all__ = ["OPERATIONS", "Grant", "GrantRequest", "evaluate_grants", "grant_usage_queries"]

SUBJECT_TYPES = frozenset({"principal", "group"})
GRANT_RESOURCE_TYPES = frozenset({"key", "secret", "scope"})


@dataclass(frozen=True, slots=True)
class Grant:
    """``principal_id`` names a principal, or a group when ``subject_type`` is ``group``;
    ``resource_id`` is a key id, a secret id or (``resource_type`` ``scope``) a scope prefix.
    ``value_budgets`` maps ``native`` or a token address to the most the grant may ever move."""

    grant_id: str
    principal_id: str
    resource_type: str
    resource_id: str
    operations: frozenset[str]
    expires_at: datetime | None = None
    revoked: bool = False
    subject_type: str = "principal"
    max_uses: int | None = None
    value_budgets: Mapping[str, int] = field(default_factory=dict, hash=False)
    # The scope of a scope grant, split; None for other grants and for a malformed stored scope, which
    # then covers nothing rather than failing every check it takes part in.
    scope_path: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.subject_type not in SUBJECT_TYPES:
            raise PolicyInputError("invalid_grant", "subject_type must be 'principal' or 'group'")
        if self.resource_type not in GRANT_RESOURCE_TYPES:
            raise PolicyInputError("invalid_grant", "resource_type must be 'key', 'secret' or 'scope'")
        if self.max_uses is not None and (
            isinstance(self.max_uses, bool) or not isinstance(self.max_uses, int) or self.max_uses < 0
        ):
            raise PolicyInputError("invalid_grant", "max_uses must be a non-negative integer")
        budgets = {canonical_asset(a): check_amount(v, "budget") for a, v in self.value_budgets.items()}
        object.__setattr__(self, "value_budgets", MappingProxyType(budgets))
        covers_scope = self.resource_type == "scope" and is_scope(self.resource_id)
        object.__setattr__(self, "scope_path", tuple(self.resource_id.split("/")) if covers_scope else None)

    @property
    def limited(self) -> bool:
        return self.max_uses is not None or bool(self.value_budgets)


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What the grant check needs: who, which operation, on which resource at which scope, and the
    amounts the request moves (for budgets)."""

    principal_id: str
    operation: str
    resource_type: str
    resource_id: str
    scope: str | None = None
    groups: frozenset[str] = frozenset()
    amounts: tuple[Amount, ...] = ()
    scope_path: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = scope_segments(self.scope) if self.scope is not None else None
        object.__setattr__(self, "scope_path", path)


def _covers(grant: Grant, request: GrantRequest) -> bool:
    if grant.subject_type == "group":
        if grant.principal_id not in request.groups:
            return False
    elif grant.principal_id != request.principal_id:
        return False
    if request.operation not in grant.operations:
        return False
    if grant.resource_type == "scope":
        return (
            grant.scope_path is not None
            and request.scope_path is not None
            and path_contains(grant.scope_path, request.scope_path)
        )
    return grant.resource_type == request.resource_type and grant.resource_id == request.resource_id


def _usage_queries(grant: Grant, request: GrantRequest) -> list[UsageQuery]:
    queries = []
    if grant.max_uses is not None:
        queries.append(UsageQuery(grant_uses_key(grant.grant_id), None))
    for amount in request.amounts:
        if amount.asset in grant.value_budgets:
            queries.append(UsageQuery(grant_spend_key(grant.grant_id, amount.asset), None))
    return queries


def _charge(
    grant: Grant, request: GrantRequest, facts: Facts, now: datetime
) -> tuple[tuple[Reservation, ...], Reason | None, tuple[UsageBound, ...] | None]:
    """The reservations that use ``grant`` for ``request``, or the reason it cannot be used; and the
    range of each sum read within which that outcome stays the same (None when a sum was missing)."""
    rule_id = f"grant:{grant.grant_id}"
    reservations = []
    bounds = []
    try:
        if grant.max_uses is not None:
            query = UsageQuery(grant_uses_key(grant.grant_id), None)
            uses = facts.used(query)
            if uses + 1 > grant.max_uses:
                message = f"grant {grant.grant_id} has been used {uses} of {grant.max_uses} times"
                bounds.append(UsageBound(query, low=grant.max_uses))
                return (), Reason(rule_id, "grant_uses_exhausted", message), tuple(bounds)
            bounds.append(UsageBound(query, high=grant.max_uses - 1))
            reservations.append(Reservation(grant_uses_key(grant.grant_id), 1, now, None))
        for amount in request.amounts if grant.value_budgets else ():
            budget = grant.value_budgets.get(amount.asset)
            if budget is None:
                message = f"grant {grant.grant_id} has no budget for {amount.asset}"
                return (), Reason(rule_id, "asset_not_budgeted", message), tuple(bounds)
            key = grant_spend_key(grant.grant_id, amount.asset)
            query = UsageQuery(key, None)
            spent = facts.used(query)
            if spent + amount.value > budget:
                message = (
                    f"grant {grant.grant_id}: {amount.value} {amount.asset} would bring the total to "
                    f"{spent + amount.value}, over its budget of {budget}"
                )
                bounds.append(UsageBound(query, low=budget - amount.value + 1))
                return (), Reason(rule_id, "grant_budget_exceeded", message), tuple(bounds)
            bounds.append(UsageBound(query, high=budget - amount.value))
            reservations.append(Reservation(key, amount.value, now, None))
    except MissingFactError:
        message = f"the usage of grant {grant.grant_id} is not known, so its limits cannot be checked"
        return (), Reason(rule_id, "grant_usage_unknown", message), None
    return tuple(reservations), None, tuple(bounds)


def grant_usage_queries(
    request: GrantRequest, grants: Iterable[Grant], *, now: datetime
) -> frozenset[UsageQuery]:
    """The usage sums ``evaluate_grants`` needs for the live limited grants that cover ``request``."""
    now = utc(now)
    needed: set[UsageQuery] = set()
    for grant in grants:
        if grant.limited and _live(grant, now) and _covers(grant, request):
            needed.update(_usage_queries(grant, request))
    return frozenset(needed)


def _live(grant: Grant, now: datetime) -> bool:
    return not grant.revoked and (grant.expires_at is None or now < utc(grant.expires_at, "expires_at"))


def evaluate_grants(
    request: GrantRequest, grants: Iterable[Grant], *, now: datetime, facts: Facts | None = None
) -> Decision:
    """Allow when a live grant covers the subject, resource and operation and has room in its limits
    (the decision then carries the reservations that charge it); otherwise deny, saying why."""
    now = utc(now)
    if request.operation not in KNOWN_OPERATIONS:
        return Decision(
            Effect.DENY,
            (Reason("grants", "unknown_operation", f"operation {request.operation!r} is not known"),),
        )
    facts = facts if facts is not None else Facts()
    refusals: list[Reason] = []
    chosen: tuple[Grant, tuple[Reservation, ...]] | None = None
    # Every sum read, with its range: a grant examined after the chosen one can still replace it (an
    # unlimited grant does), so all of them count, which errs on the side of evaluating again.
    bounds: list[UsageBound] | None = []
    for grant in grants:
        if grant.revoked or not _covers(grant, request):
            continue
        if not _live(grant, now):
            refusals.append(
                Reason(f"grant:{grant.grant_id}", "grant_expired", f"grant {grant.grant_id} has expired")
            )
            continue
        if not grant.limited:
            chosen = (grant, ())
            break
        reservations, refusal, read = _charge(grant, request, facts, now)
        if read is None or bounds is None:
            bounds = None
        else:
            bounds += read
        if refusal is not None:
            refusals.append(refusal)
        elif chosen is None:
            chosen = (grant, reservations)
    if chosen is not None:
        grant, reservations = chosen
        message = f"grant {grant.grant_id} allows {request.operation}"
        return Decision(
            Effect.ALLOW,
            (Reason(f"grant:{grant.grant_id}", "granted", message),),
            reservations=reservations,
            bounds=None if bounds is None else tuple(bounds),
        )
    if refusals:
        return Decision(Effect.DENY, tuple(refusals))
    return Decision(
        Effect.DENY,
        (
            Reason(
                "grants",
                "operation_not_granted",
                f"no grant allows {request.operation} on this {request.resource_type}",
            ),
        ),
    )
