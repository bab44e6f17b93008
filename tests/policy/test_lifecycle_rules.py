"""Key lifecycle rules and ``evaluate_lifecycle``: an admin's transition is allowed by its role unless a
``key_lifecycle`` rule in force denies it or asks for approval; other rules (time windows, anomalies,
value caps) and grants say nothing about it, and a lifecycle rule never fires for signing."""

from __future__ import annotations

from policy import AttachedPolicy, Effect, PolicySet, evaluate, evaluate_lifecycle
from tests.policy.support import NOW, document, full_facts, policy_set, request, rule

GUARD = rule("irreversible", "key_lifecycle", "require_approval", actions=["destroy", "compromise"])
NEVER = rule("never", "key_lifecycle", "deny", actions=["destroy"])
CLOSED = rule("closed", "time_window", windows=[{"days": ["sun"], "start": "00:00", "end": "00:01"}])


def lifecycle(operation: str, *rules: dict, scope: str = "acme") -> Effect:
    decision = evaluate_lifecycle(request(operation), policy_set(*rules, scope=scope, grants=()), now=NOW)
    return decision.effect


def test_no_rule_allows_by_role_and_listed_actions_need_approval() -> None:
    assert lifecycle("destroy_key") is Effect.ALLOW
    assert lifecycle("destroy_key", GUARD) is Effect.REQUIRE_APPROVAL
    assert lifecycle("compromise_key", GUARD) is Effect.REQUIRE_APPROVAL
    assert lifecycle("deactivate_key", GUARD) is Effect.ALLOW
    decision = evaluate_lifecycle(request("destroy_key"), policy_set(GUARD, grants=()), now=NOW)
    assert [(a.group, a.quorum) for a in decision.approvals] == [("treasury", 2)]
    assert [r.rule_id for r in decision.reasons] == ["irreversible"]
    assert decision.policies  # the document that asked is named (its digest binds the approval)


def test_deny_wins_and_only_lifecycle_rules_judge() -> None:
    assert lifecycle("destroy_key", GUARD, NEVER) is Effect.DENY
    assert lifecycle("compromise_key", GUARD, NEVER) is Effect.REQUIRE_APPROVAL
    # A time window closed now says nothing about an admin's transition.
    assert lifecycle("destroy_key", CLOSED) is Effect.ALLOW
    # A rule attached elsewhere does not apply.
    assert lifecycle("destroy_key", GUARD, scope="other") is Effect.ALLOW
    on_other_key = PolicySet((), (AttachedPolicy(document(GUARD), resource_type="key", resource_id="k2"),))
    assert evaluate_lifecycle(request("destroy_key"), on_other_key, now=NOW).effect is Effect.ALLOW
    on_this_key = PolicySet((), (AttachedPolicy(document(GUARD), resource_type="key", resource_id="k1"),))
    assert evaluate_lifecycle(request("destroy_key"), on_this_key, now=NOW).effect is Effect.REQUIRE_APPROVAL


def test_not_a_lifecycle_operation_is_denied_and_signing_never_fires_the_rule() -> None:
    assert lifecycle("sign_message", GUARD) is Effect.DENY
    signing = request("sign_message")
    policies = policy_set(GUARD)
    assert evaluate(signing, policies, full_facts(signing, policies), now=NOW).effect is Effect.ALLOW
