"""The pure decision engine: who may do what, and what may be signed, decided from arguments alone.

Standard library only: no I/O, no clock, no asyncio. Callers pass the request, the policy set (grants
and attached policy documents), the facts (usage sums read from the ledger) and ``now``; the engine
returns a ``Decision`` naming its reasons, the documents it consulted (with digests), the reservations
to record atomically with it and any approvals required. Default deny; deny wins over
require_approval, which wins over allow; a rule that fails to evaluate denies. ``policy.engine``'s
docstring states exactly how an allow arises. Import from this package root, never from its modules.

Typical use by the service, inside the transaction that records the decision::

    queries = usage_queries(request, policy_set, now=now)
    facts = Facts({q: <SUM(amount) WHERE limit_key = q.limit_key AND window_start > q.since> ...})
    decision = evaluate(request, policy_set, facts, now=now)
    if decision.effect is not Effect.DENY: record decision.reservations
"""

from policy.approvals import NOT_COUNTED, VoteStanding, check_approvals, why_not_counted
from policy.canonical import (
    NATIVE,
    canonical_address,
    canonical_json,
    check_canonical,
    parse_canonical,
    sha256_digest,
)
from policy.decision import (
    ApprovalRequirement,
    Decision,
    Effect,
    PolicyRef,
    Reason,
    ShadowDecision,
    strongest,
)
from policy.documents import AttachedPolicy, PolicyDocument, PolicySet
from policy.engine import evaluate, evaluate_lifecycle, evaluate_shadow, grant_request, usage_queries
from policy.errors import PolicyDocumentError, PolicyError, PolicyInputError
from policy.facts import (
    Facts,
    Reservation,
    UsageBound,
    UsageQuery,
    grant_spend_key,
    grant_uses_key,
    rate_key,
    spend_key,
)
from policy.grants import Grant, GrantRequest, evaluate_grants, grant_usage_queries, grants_reach
from policy.parsing import (
    MAX_WINDOW,
    RULE_KINDS,
    parse_policy_document,
    parse_policy_json,
    parse_stored_policy_json,
)
from policy.request import (
    KEY_LIFECYCLE_ACTIONS,
    KEY_LIFECYCLE_OPERATIONS,
    KNOWN_OPERATIONS,
    OPERATIONS,
    RESOURCE_TYPES,
    SECRET_GRANT_OPERATIONS,
    SECRET_OPERATIONS,
    Amount,
    BatchCallView,
    Delegation,
    PolicyRequest,
    TokenMovement,
    TransactionView,
    TypedDataDomain,
)
from policy.scopes import is_scope, narrowest, scope_contains
from policy.windows import counts_toward, rolling_since

__all__ = [
    "KEY_LIFECYCLE_ACTIONS",
    "KEY_LIFECYCLE_OPERATIONS",
    "KNOWN_OPERATIONS",
    "MAX_WINDOW",
    "NATIVE",
    "NOT_COUNTED",
    "OPERATIONS",
    "RESOURCE_TYPES",
    "RULE_KINDS",
    "SECRET_GRANT_OPERATIONS",
    "SECRET_OPERATIONS",
    "Amount",
    "ApprovalRequirement",
    "AttachedPolicy",
    "BatchCallView",
    "Decision",
    "Delegation",
    "Effect",
    "Facts",
    "Grant",
    "GrantRequest",
    "PolicyDocument",
    "PolicyDocumentError",
    "PolicyError",
    "PolicyInputError",
    "PolicyRef",
    "PolicyRequest",
    "PolicySet",
    "Reason",
    "Reservation",
    "ShadowDecision",
    "TokenMovement",
    "TransactionView",
    "TypedDataDomain",
    "UsageBound",
    "UsageQuery",
    "VoteStanding",
    "canonical_address",
    "canonical_json",
    "check_approvals",
    "check_canonical",
    "counts_toward",
    "evaluate",
    "evaluate_grants",
    "evaluate_lifecycle",
    "evaluate_shadow",
    "grant_request",
    "grant_spend_key",
    "grant_usage_queries",
    "grant_uses_key",
    "grants_reach",
    "is_scope",
    "narrowest",
    "parse_canonical",
    "parse_policy_document",
    "parse_policy_json",
    "parse_stored_policy_json",
    "rate_key",
    "rolling_since",
    "scope_contains",
    "sha256_digest",
    "spend_key",
    "strongest",
    "usage_queries",
    "why_not_counted",
]
