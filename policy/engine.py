"""The engine: one pure call from request, policy set, facts and ``now`` to a decision with reasons.

How a decision arises (the whole contract, in order):

1. **Grants say who.** Some live grant must cover the principal (or one of its groups), the resource
   (or a scope above it) and the operation, with room in its use count and budgets, and not be
   overridden by a no-access grant of the same subject at least as specific; otherwise deny.
   Existence is not permission. ``policy.grants`` states the precedence and why.
2. **Documents say what.** Every document attached to a scope containing the resource's scope, or to
   the key itself, applies. Rules are merged by id: where one id is defined at two levels, the
   narrowest definition (deepest scope; a key is narrower than any scope) replaces the others; the
   same id twice at one level, or one policy id attached twice at one place, is a conflict and denies.
   Redefining an id is a replacement, not an addition: it can loosen what a broader scope said.
3. **Each rule in force is checked.** A guard fires when the request is outside what it accepts; an
   unlock fires when the request uses what it unlocks. A firing rule contributes its effect. A rule that
   cannot be evaluated (a usage sum it needs was not given, or any error) contributes deny, with a
   reason naming it.
4. **Defaults deny what is dangerous unless unlocked**: ``sign_raw`` needs a firing ``raw_digest``
   rule; every EIP-7702 delegate (in a type-4 transaction, or an authorisation signed on its own) must
   be on a ``delegate_allowlist`` rule in force.
5. **The strongest effect wins**: deny over require_approval over allow. With no deny and no approval,
   the grant's allow stands. So a request is allowed exactly when a grant allows it, no rule in force
   denies or asks for approval, and whatever it does that is denied by default has been unlocked.
   No policy document at all means the grants alone decide (minus the defaults of step 4).

The reasons are those of the winning effect, in order: grant, then rules broad to narrow in document
order, then defaults. An allow or approval decision carries the reservations to record atomically with
it (one per limit key: the grant's budget rows and every spend or rate limit in force that concerns the
request); a deny carries none. ``usage_queries`` lists the sums the caller must read first.

A key's lifecycle transitions (``destroy_key``, ``compromise_key``...) are admin operations, allowed by the
caller's role rather than by a grant: ``evaluate_lifecycle`` judges them against the ``key_lifecycle``
rules in force alone (attached to the key or a scope above it, merged as above; a conflict denies), with
allow as the default. Deny still wins over require_approval.

Dry run is the same call with nothing recorded afterwards. ``evaluate_shadow`` judges the request
against the live set and a candidate set together; only the live decision counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from policy.decision import (
    ApprovalRequirement,
    Decision,
    Effect,
    PolicyRef,
    Reason,
    ShadowDecision,
    strongest,
)
from policy.documents import AttachedPolicy, PolicySet
from policy.facts import Facts, MissingFactError, Reservation, UsageBound, UsageQuery
from policy.grants import GrantRequest, evaluate_grants, grant_usage_queries
from policy.limits import LimitRule
from policy.request import KEY_LIFECYCLE_OPERATIONS, PolicyRequest
from policy.rules import ApprovalSpec, DelegateAllowlist, KeyLifecycle, Rule, RuleContext
from policy.windows import utc

DEFAULT_RULE_ID = "default"


@dataclass(frozen=True, slots=True)
class _Placed:
    """A rule in force and the document and attachment it came from."""

    rule: Rule
    attached: AttachedPolicy
    limit: LimitRule | None  # the rule again when it is stateful, so the hot path needs no isinstance

    def limit_scope(self, request: PolicyRequest) -> str:
        return self.attached.scope if self.attached.scope is not None else request.scope


_NO_FACTS = Facts()


class _Contexts:
    """What each rule sees. Only limits see the facts, so every usage sum a decision depends on is
    read by a rule that reports its range (``LimitRule.judge``), which ``Decision.holds_under`` relies
    on; and only limits read the scope, so the other rules share one context. The other rules see the
    anomaly signals alone (no usage): they are fixed for the request, not a sum that may move."""

    def __init__(self, request: PolicyRequest, now: datetime, facts: Facts) -> None:
        self._request, self._now, self._facts = request, now, facts
        plain_facts = Facts(anomalies=facts.anomalies) if facts.anomalies else _NO_FACTS
        self.plain = RuleContext(request, now, request.scope, plain_facts)
        self._by_scope: dict[str, RuleContext] = {}

    def __call__(self, placed: _Placed) -> RuleContext:
        if placed.limit is None:
            return self.plain
        scope = placed.limit_scope(self._request)
        ctx = self._by_scope.get(scope)
        if ctx is None:
            ctx = self._by_scope[scope] = RuleContext(self._request, self._now, scope, self._facts)
        return ctx


@dataclass(frozen=True, slots=True)
class _Finding:
    effect: Effect
    reason: Reason
    approval: ApprovalSpec | None = None


@dataclass(frozen=True, slots=True)
class _InForce:
    """The merged rules for one combination of applicable documents."""

    refs: tuple[PolicyRef, ...]
    rules: tuple[_Placed, ...]
    conflicts: tuple[Reason, ...]
    allowed_delegates: frozenset[str]


def _in_force(request: PolicyRequest, policies: PolicySet) -> _InForce:
    which = tuple(i for i, a in enumerate(policies.documents) if a.applies_to(request))
    merged = policies.merge_cache.get(which)
    if merged is None:
        merged = policies.merge_cache[which] = _merge([policies.documents[i] for i in which])
    return cast(_InForce, merged)  # the cache holds nothing else


def _merge(attachments: list[AttachedPolicy]) -> _InForce:
    applicable = sorted(attachments, key=lambda a: a.depth)  # stable: one level keeps the caller's order
    conflicts: list[Reason] = []
    seen_policies: set[tuple[str, str]] = set()
    for attached in applicable:
        place = (attached.document.policy_id, attached.attached_to)
        if place in seen_policies:
            conflicts.append(
                Reason(
                    f"policy:{place[0]}",
                    "policy_conflict",
                    f"policy {place[0]} is attached twice at {place[1]}",
                )
            )
        seen_policies.add(place)
    winners: dict[str, tuple[int, int, _Placed]] = {}  # rule id -> (depth, order, placed)
    clashing: dict[str, str] = {}
    order = 0
    for attached in applicable:
        for rule in attached.document.rules:
            order += 1
            earlier = winners.get(rule.id)
            if earlier is not None and earlier[0] == attached.depth:
                clashing[rule.id] = attached.attached_to
            else:
                # Documents come broad to narrow: a deeper definition settles a clash above it.
                clashing.pop(rule.id, None)
            limit = rule if isinstance(rule, LimitRule) else None
            winners[rule.id] = (attached.depth, order, _Placed(rule, attached, limit))
    for rule_id, where in clashing.items():
        conflicts.append(Reason(rule_id, "rule_conflict", f"rule {rule_id} is defined twice at {where}"))
    rules = tuple(
        placed
        for rule_id, (_depth, _order, placed) in sorted(winners.items(), key=lambda item: item[1][1])
        if rule_id not in clashing
    )
    delegates = frozenset().union(*(p.rule.delegates for p in rules if isinstance(p.rule, DelegateAllowlist)))
    return _InForce(tuple(a.ref() for a in applicable), rules, tuple(conflicts), delegates)


def grant_request(request: PolicyRequest) -> GrantRequest:
    return GrantRequest(
        principal_id=request.principal_id,
        operation=request.operation,
        resource_type=request.resource_type,
        resource_id=request.resource_id,
        scope=request.scope,
        groups=request.groups,
        amounts=request.amounts,
        uncounted_contract=request.uncounted_contract,
    )


def usage_queries(request: PolicyRequest, policies: PolicySet, *, now: datetime) -> frozenset[UsageQuery]:
    """The usage sums ``evaluate`` will read for this request: read them under the same lock that will
    record the reservations, and pass them in ``Facts``."""
    now = utc(now)
    needed = set(grant_usage_queries(grant_request(request), policies.grants, now=now))
    context = _Contexts(request, now, Facts())
    for placed in _in_force(request, policies).rules:
        if placed.limit is None:
            continue
        try:
            query = placed.limit.usage_query(context(placed))
        # No logging here (pure package): evaluate() meets the same error and denies, naming the rule.
        except Exception:  # noqa: BLE001, S112
            continue
        if query is not None:
            needed.add(query)
    return frozenset(needed)


def _check(
    placed: _Placed, ctx: RuleContext
) -> tuple[_Finding | None, Reservation | None, UsageBound | None]:
    """The rule's finding (None when it does not fire) and, for a limit, what it would reserve and,
    when it passed, the range of its sum within which it still would."""
    rule = placed.rule
    try:
        if placed.limit is not None:
            hit, reservation, bound = placed.limit.judge(ctx)
        else:
            hit, reservation, bound = rule.check(ctx), None, None
    except MissingFactError as exc:
        message = f"rule {rule.id} could not be evaluated: {exc.message}"
        reason = Reason(rule.id, "facts_missing", message, placed.attached.document.label)
        return _Finding(Effect.DENY, reason), None, None
    except Exception as exc:  # noqa: BLE001 - in a signer a rule that errors must deny, never be skipped
        message = f"rule {rule.id} could not be evaluated ({type(exc).__name__})"
        reason = Reason(rule.id, "rule_error", message, placed.attached.document.label)
        return _Finding(Effect.DENY, reason), None, None
    if hit is None:
        return None, reservation, bound
    reason = Reason(rule.id, hit.code, hit.message, placed.attached.document.label)
    return _Finding(rule.effect, reason, rule.approval), reservation, None


def _defaults(request: PolicyRequest, in_force: _InForce, fired: set[str]) -> list[_Finding]:
    findings = []
    if request.operation == "sign_raw" and not any(
        p.rule.kind == "raw_digest" and p.rule.id in fired for p in in_force.rules
    ):
        findings.append(
            _Finding(
                Effect.DENY,
                Reason(
                    DEFAULT_RULE_ID,
                    "raw_digest_not_allowed",
                    "signing a raw digest is denied unless a raw_digest rule allows it",
                ),
            )
        )
    if request.delegations:
        for delegate in dict.fromkeys(d.delegate for d in request.delegations):
            if delegate not in in_force.allowed_delegates:
                findings.append(
                    _Finding(
                        Effect.DENY,
                        Reason(
                            DEFAULT_RULE_ID,
                            "delegate_not_allowed",
                            f"EIP-7702 delegation to {delegate} is denied unless a delegate_allowlist "
                            "allows it",
                        ),
                    )
                )
    return findings


def _merge_reservations(reservations: Iterable[Reservation]) -> tuple[Reservation, ...]:
    """One row per limit key: rules sharing a key (a daily and an hourly limit) charge it once, kept
    for the longest window that reads it."""
    merged: dict[str, Reservation] = {}
    for r in reservations:
        kept = merged.get(r.limit_key)
        if kept is None:
            merged[r.limit_key] = r
            continue
        ends = [e for e in (kept.window_end, r.window_end) if e is not None]
        end = max(ends) if len(ends) == 2 else None
        merged[r.limit_key] = Reservation(r.limit_key, max(kept.amount, r.amount), r.window_start, end)
    return tuple(merged[k] for k in sorted(merged))


def _approvals(findings: Iterable[_Finding], now: datetime) -> tuple[ApprovalRequirement, ...]:
    """One requirement per approver group: the largest quorum, the earliest expiry, the fewest
    rejections and signed approvals if any rule asked for them."""
    by_group: dict[str, ApprovalRequirement] = {}
    for finding in findings:
        spec = finding.approval
        if finding.effect is not Effect.REQUIRE_APPROVAL or spec is None:
            continue
        expires_at = now + spec.expires_in
        seen = by_group.get(spec.group)
        if seen is None:
            by_group[spec.group] = ApprovalRequirement(
                spec.group, spec.quorum, expires_at, (finding.reason.rule_id,), spec.rejections, spec.signed
            )
        else:
            by_group[spec.group] = ApprovalRequirement(
                spec.group,
                max(seen.quorum, spec.quorum),
                min(seen.expires_at, expires_at),
                (*seen.rule_ids, finding.reason.rule_id),
                min(seen.rejections, spec.rejections),
                seen.signed or spec.signed,
            )
    return tuple(by_group[g] for g in sorted(by_group))


def evaluate(request: PolicyRequest, policies: PolicySet, facts: Facts, *, now: datetime) -> Decision:
    """Judge ``request`` against ``policies`` given ``facts`` at ``now`` (aware; used in UTC)."""
    now = utc(now)
    granted = evaluate_grants(grant_request(request), policies.grants, now=now, facts=facts)
    findings = [_Finding(granted.effect, reason) for reason in granted.reasons]
    in_force = _in_force(request, policies)
    findings += [_Finding(Effect.DENY, reason) for reason in in_force.conflicts]
    fired: set[str] = set()
    reservations = list(granted.reservations)
    bounds: list[UsageBound] | None = None if granted.bounds is None else list(granted.bounds)
    context = _Contexts(request, now, facts)
    for placed in in_force.rules:
        finding, reservation, bound = _check(placed, context(placed))
        if finding is not None:
            findings.append(finding)
            fired.add(placed.rule.id)
        if bound is not None and bounds is not None:
            bounds.append(bound)
        if reservation is not None:
            reservations.append(reservation)
    findings += _defaults(request, in_force, fired)
    effect = strongest(f.effect for f in findings) or Effect.DENY
    reasons = tuple(f.reason for f in findings if f.effect is effect)
    if effect is Effect.DENY:
        return Decision(effect, reasons, in_force.refs)
    return Decision(
        effect,
        reasons,
        in_force.refs,
        _merge_reservations(reservations),
        _approvals(findings, now) if effect is Effect.REQUIRE_APPROVAL else (),
        # A limit that fired quotes its sum in the reasons, so only an allow can be kept as it is.
        tuple(bounds) if bounds is not None and effect is Effect.ALLOW else None,
    )


def evaluate_lifecycle(request: PolicyRequest, policies: PolicySet, *, now: datetime) -> Decision:
    """Judge a key lifecycle transition (``request.operation`` is ``<action>_key``) by an admin: the
    role already allows it, so the default is allow; only the ``key_lifecycle`` rules in force may deny
    it or ask for approval (grants and every other rule say nothing about admin operations)."""
    now = utc(now)
    if request.operation not in KEY_LIFECYCLE_OPERATIONS or request.resource_type != "key":
        reason = Reason(DEFAULT_RULE_ID, "unknown_operation", "not a key lifecycle operation")
        return Decision(Effect.DENY, (reason,))
    in_force = _in_force(request, policies)
    findings = [_Finding(Effect.DENY, reason) for reason in in_force.conflicts]
    context = _Contexts(request, now, Facts())
    for placed in in_force.rules:
        if isinstance(placed.rule, KeyLifecycle):
            finding, _reservation, _bound = _check(placed, context(placed))
            if finding is not None:
                findings.append(finding)
    if not findings:
        reason = Reason(DEFAULT_RULE_ID, "admin_role", "an admin may change a key's state")
        return Decision(Effect.ALLOW, (reason,), in_force.refs)
    effect = strongest(f.effect for f in findings) or Effect.DENY
    reasons = tuple(f.reason for f in findings if f.effect is effect)
    if effect is Effect.DENY:
        return Decision(effect, reasons, in_force.refs)
    return Decision(effect, reasons, in_force.refs, (), _approvals(findings, now))


def evaluate_shadow(
    request: PolicyRequest, live: PolicySet, candidate: PolicySet, facts: Facts, *, now: datetime
) -> ShadowDecision:
    """The live decision (which counts) and the candidate's would-be decision (which does not), from
    the same facts: pass facts answering ``usage_queries`` of both sets."""
    return ShadowDecision(
        evaluate(request, live, facts, now=now), evaluate(request, candidate, facts, now=now)
    )
