"""Grants: may this principal perform this operation on this resource, now, within the grant's budget?

A grant names a subject (a principal, or a group the principal belongs to), a resource (one key, one
secret, or a scope prefix covering every key and secret at or below it), the operations it allows, and
optionally an expiry (the instant itself is already expired), a use count and value budgets per asset
(wei as ``native``, ERC-20 amounts per token address). Existence is not permission: with no matching
live grant the answer is deny, whoever created the key. A revoked grant is as if absent.

A grant either allows the operations it lists or, with ``no_access``, says "no access at all" to what it
names (every operation, now and as operations are added; it lists none). The two cannot be confused:
an allow grant lists at least one operation (a stored one that lists none covers nothing), a no-access
grant lists none and carries no limits. Its job is the exception: "developers may use all of ``acme``
except ``acme/payments/prod``". It is a flag of its own rather than an ``effect: deny`` because it is
not the deny of policy rules, which wins over everything: it only overrides within its own subject.

Precedence, per subject (the principal itself, or one group), over that subject's live grants about
the resource: the most specific decides. A grant on the resource itself (a key or secret id) beats any
scope grant; a deeper scope beats a shallower one; at equal specificity no-access wins. An allow grant
speaks only of the operations it lists, so for one operation the subject's answer is allow exactly
when some live allow grant for that operation is strictly more specific than every live no-access
grant of the same subject about the resource. A narrower allow therefore adds and never takes away
(granting ``sign_raw`` on one key does not remove what a scope grant gave there); only no-access takes
away, and a narrower allow reopens what a broader no-access closed.

Across subjects, access is the union of each subject's answer: the principal may do what its own grants
or any one of its groups allows. Why not "an explicit deny anywhere wins" (AWS IAM) or "most specific
across every subject, deny wins on a tie" (Vault/OpenBao's merged ACL, NTFS): both let one group's
exception take away what another group (or the principal's own grant) gives, so joining an on-call
group that is granted ``acme/payments/prod`` would do nothing for a developer, and what a group grants
could not be read off that group's grants alone. Under the union, each subject's grants are a
self-contained statement, and group membership only ever adds access. A guardrail that must win
whoever is granted belongs in policy rules, where deny wins over everything.

Expired and revoked grants take no part (an expired no-access grant no longer hides anything); an
allow grant whose use count or budget is spent cannot be used, and another covering grant may be.
Among the usable allow grants not overridden, one without limits is used in preference; otherwise the
first one (in the order given) whose budget still has room, and the decision carries the reservations
that charge it. A grant with value budgets covers only the assets it budgets: a token transfer through
a grant that budgets only wei is refused, so budgets cannot be dodged by moving another asset; nor can
a call to a budgeted token that the signer does not decode use the grant (nothing could be charged). Usage
comes from ``Facts`` (the grant's lifetime sums); without them a limited grant cannot be used.

``grants_reach`` is the existence side of the same rule: whether any operation is allowed on the
resource, ignoring limits. A resource it does not reach must look exactly like one that does not exist.
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
from policy.request import EVERY_ASSET, KNOWN_OPERATIONS, OPERATIONS, Amount
from policy.scopes import is_scope, path_contains, scope_segments
from policy.windows import utc

__all__ = [
    "OPERATIONS",
    "Grant",
    "GrantRequest",
    "evaluate_grants",
    "grant_usage_queries",
    "grants_reach",
]

SUBJECT_TYPES = frozenset({"principal", "group"})
# A grant names one resource (of any kind: the service checks the kind against its registry of
# resource kinds, and a grant is judged by kind and id alone, so a new kind needs nothing here) or a scope.
SCOPE = "scope"
# A grant naming the resource itself is more specific than a scope grant at any depth.
_ON_RESOURCE = 1 << 16


@dataclass(frozen=True, slots=True)
class Grant:
    """``principal_id`` names a principal, or a group when ``subject_type`` is ``group``;
    ``resource_id`` is a key id, a secret id or (``resource_type`` ``scope``) a scope prefix.
    ``value_budgets`` maps ``native`` or a token address to the most the grant may ever move.
    ``no_access`` makes it an explicit "no access" to what it names: no operations, no limits."""

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
    no_access: bool = False
    # The scope of a scope grant, split; None for other grants and for a malformed stored scope, which
    # then covers nothing rather than failing every check it takes part in.
    scope_path: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.subject_type not in SUBJECT_TYPES:
            raise PolicyInputError("invalid_grant", "subject_type must be 'principal' or 'group'")
        if not isinstance(self.resource_type, str) or not self.resource_type:
            raise PolicyInputError("invalid_grant", "resource_type must be a resource kind or 'scope'")
        if self.max_uses is not None and (
            isinstance(self.max_uses, bool) or not isinstance(self.max_uses, int) or self.max_uses < 0
        ):
            raise PolicyInputError("invalid_grant", "max_uses must be a non-negative integer")
        if self.no_access is not True and self.no_access is not False:
            raise PolicyInputError("invalid_grant", "no_access must be true or false")
        if self.no_access and (self.operations or self.limited):
            raise PolicyInputError(
                "invalid_grant", "a no-access grant lists no operations and carries no limits"
            )
        budgets = {canonical_asset(a): check_amount(v, "budget") for a, v in self.value_budgets.items()}
        object.__setattr__(self, "value_budgets", MappingProxyType(budgets))
        covers_scope = self.resource_type == SCOPE and is_scope(self.resource_id)
        object.__setattr__(self, "scope_path", tuple(self.resource_id.split("/")) if covers_scope else None)

    @property
    def limited(self) -> bool:
        return self.max_uses is not None or bool(self.value_budgets)

    @property
    def specificity(self) -> int:
        """How narrowly the grant names its resource: the scope's depth, or more for one resource."""
        if self.resource_type != SCOPE:
            return _ON_RESOURCE
        return len(self.scope_path) if self.scope_path is not None else 0

    @property
    def subject(self) -> tuple[str, str]:
        return (self.subject_type, self.principal_id)


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
    uncounted_contract: str | None = None  # see PolicyRequest.uncounted_contract
    scope_path: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = scope_segments(self.scope) if self.scope is not None else None
        object.__setattr__(self, "scope_path", path)


def _held(grant: Grant, principal_id: str, groups: frozenset[str]) -> bool:
    if grant.subject_type == "group":
        return grant.principal_id in groups
    return grant.principal_id == principal_id


def _names(grant: Grant, resource_type: str, resource_id: str, scope_path: tuple[str, ...] | None) -> bool:
    """Whether ``grant`` is about the resource at all: by kind and id, or a scope at or above its scope."""
    if grant.resource_type == SCOPE:
        return (
            grant.scope_path is not None
            and scope_path is not None
            and path_contains(grant.scope_path, scope_path)
        )
    return grant.resource_type == resource_type and grant.resource_id == resource_id


def _covers(grant: Grant, request: GrantRequest) -> bool:
    """An allow grant held by the requester, for the operation, about the resource."""
    return (
        request.operation in grant.operations
        and _held(grant, request.principal_id, request.groups)
        and _names(grant, request.resource_type, request.resource_id, request.scope_path)
    )


def _barriers(
    grants: Iterable[Grant],
    principal_id: str,
    groups: frozenset[str],
    resource_type: str,
    resource_id: str,
    scope_path: tuple[str, ...] | None,
    now: datetime | None,
) -> dict[tuple[str, str], Grant]:
    """Per subject, its most specific live no-access grant about the resource: an allow grant of that
    subject must be strictly more specific to count."""
    barriers: dict[tuple[str, str], Grant] = {}
    for grant in grants:
        if (
            grant.no_access
            and not grant.revoked
            and (now is None or _live(grant, now))
            and _held(grant, principal_id, groups)
            and _names(grant, resource_type, resource_id, scope_path)
        ):
            seen = barriers.get(grant.subject)
            if seen is None or grant.specificity > seen.specificity:
                barriers[grant.subject] = grant
    return barriers


def _overridden(grant: Grant, barriers: Mapping[tuple[str, str], Grant]) -> bool:
    barrier = barriers.get(grant.subject) if barriers else None
    return barrier is not None and barrier.specificity >= grant.specificity


def grants_reach(
    grants: Iterable[Grant],
    *,
    principal_id: str,
    groups: frozenset[str],
    resource_type: str,
    resource_id: str,
    scope: str | None,
    now: datetime | None = None,
) -> bool:
    """Whether the principal holds any grant that reaches the resource: for some subject, an allow grant
    (of any operation) about it that no no-access grant of that subject overrides. A caller it does not
    reach must get the same answer as for a resource that does not exist. With ``now`` None every
    unrevoked grant counts as live (the caller loaded only grants live at the time)."""
    now = None if now is None else utc(now)
    path = scope_segments(scope) if scope is not None else None
    grants = tuple(grants)
    barriers = _barriers(grants, principal_id, groups, resource_type, resource_id, path, now)
    return any(
        grant.operations
        and not grant.no_access
        and not grant.revoked
        and (now is None or _live(grant, now))
        and _held(grant, principal_id, groups)
        and _names(grant, resource_type, resource_id, path)
        and not _overridden(grant, barriers)
        for grant in grants
    )


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
        if request.uncounted_contract == EVERY_ASSET and grant.value_budgets:
            message = (
                f"grant {grant.grant_id} budgets value, and the transaction calls the signing account "
                "itself (its EIP-7702 delegate's code) in a way the signer does not decode"
            )
            return (), Reason(rule_id, "token_call_not_counted", message), tuple(bounds)
        if request.uncounted_contract is not None and request.uncounted_contract in grant.value_budgets:
            message = (
                f"grant {grant.grant_id} budgets token {request.uncounted_contract}, and the request acts on "
                "it in a way the signer does not decode"
            )
            return (), Reason(rule_id, "token_call_not_counted", message), tuple(bounds)
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
        if grant.limited and not grant.revoked and _live(grant, now) and _covers(grant, request):
            needed.update(_usage_queries(grant, request))
    return frozenset(needed)


def _live(grant: Grant, now: datetime) -> bool:
    return not grant.revoked and (grant.expires_at is None or now < utc(grant.expires_at, "expires_at"))


def evaluate_grants(
    request: GrantRequest, grants: Iterable[Grant], *, now: datetime, facts: Facts | None = None
) -> Decision:
    """Allow when a live grant covers the subject, resource and operation, no no-access grant of the
    same subject overrides it, and it has room in its limits (the decision then carries the reservations
    that charge it); otherwise deny, saying why."""
    now = utc(now)
    if request.operation not in KNOWN_OPERATIONS:
        return Decision(
            Effect.DENY,
            (Reason("grants", "unknown_operation", f"operation {request.operation!r} is not known"),),
        )
    facts = facts if facts is not None else Facts()
    grants = grants if isinstance(grants, tuple) else tuple(grants)
    barriers = _barriers(
        grants,
        request.principal_id,
        request.groups,
        request.resource_type,
        request.resource_id,
        request.scope_path,
        now,
    )
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
        if _overridden(grant, barriers):
            barrier = barriers[grant.subject]
            message = (
                f"grant {barrier.grant_id} says no access here, overriding grant {grant.grant_id} "
                f"of the same {grant.subject_type}"
            )
            reason = Reason(f"grant:{barrier.grant_id}", "no_access", message)
            if all(r.rule_id != reason.rule_id for r in refusals):
                refusals.append(reason)
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
