"""``sign_authorization``: an EIP-7702 authorisation signed on its own is judged like the delegations of a
type-4 transaction: denied by default, unlocked per delegate, subject to the chain allowlist (0 = any
chain) and the denylist, and refused as input when it comes with another operation."""

from __future__ import annotations

import pytest

from policy import Delegation, Effect, Grant, PolicyError, PolicyRequest, PolicySet, evaluate
from tests.policy.support import ALICE, DELEGATE, NOW, full_facts, policy_set, rule

OPS = frozenset({"sign_authorization"})


def grants() -> tuple[Grant, ...]:
    return (Grant("g-auth", "p1", "scope", "acme", OPS),)


def auth(chain_id: int = 1, delegate: str = DELEGATE) -> PolicyRequest:
    return PolicyRequest(
        "p1", "sign_authorization", "k1", "acme/payments/prod", authorization=Delegation(chain_id, delegate)
    )


def judge(req: PolicyRequest, policies: PolicySet) -> tuple[Effect, set[str]]:
    decision = evaluate(req, policies, full_facts(req, policies), now=NOW)
    return decision.effect, {r.code for r in decision.reasons}


def test_denied_unless_the_delegate_is_listed() -> None:
    assert judge(auth(), policy_set(grants=grants())) == (Effect.DENY, {"delegate_not_allowed"})
    unlocked = policy_set(rule("d", "delegate_allowlist", "allow", delegates=[DELEGATE]), grants=grants())
    assert judge(auth(), unlocked)[0] is Effect.ALLOW
    assert judge(auth(delegate=ALICE), unlocked) == (Effect.DENY, {"delegate_not_allowed"})


def test_an_approval_unlock_asks_approvers() -> None:
    policies = policy_set(
        rule("d", "delegate_allowlist", "require_approval", delegates=[DELEGATE]), grants=grants()
    )
    assert judge(auth(), policies)[0] is Effect.REQUIRE_APPROVAL


def test_chain_allowlist_and_denylist_apply() -> None:
    unlock = rule("d", "delegate_allowlist", "allow", delegates=[DELEGATE])
    chains = policy_set(unlock, rule("c", "chain_allowlist", chain_ids=[1]), grants=grants())
    assert judge(auth(1), chains)[0] is Effect.ALLOW
    assert judge(auth(0), chains) == (Effect.DENY, {"chain_not_allowed"})
    assert judge(auth(10), chains) == (Effect.DENY, {"chain_not_allowed"})
    denied = policy_set(unlock, rule("x", "recipient_denylist", addresses=[DELEGATE]), grants=grants())
    assert judge(auth(), denied) == (Effect.DENY, {"recipient_denied"})


def test_other_rules_do_not_concern_it() -> None:
    policies = policy_set(
        rule("d", "delegate_allowlist", "allow", delegates=[DELEGATE]),
        rule("cap", "value_cap", max_value="0"),
        rule("r", "recipient_allowlist", addresses=[ALICE]),
        grants=grants(),
    )
    assert judge(auth(), policies)[0] is Effect.ALLOW


def test_the_grant_must_name_the_operation() -> None:
    others = (Grant("g", "p1", "scope", "acme", frozenset({"sign_raw", "sign_transaction"})),)
    unlocked = policy_set(rule("d", "delegate_allowlist", "allow", delegates=[DELEGATE]), grants=others)
    assert judge(auth(), unlocked)[0] is Effect.DENY


def test_an_authorization_comes_with_its_operation_only() -> None:
    with pytest.raises(PolicyError):
        PolicyRequest("p1", "sign_raw", "k1", "acme", authorization=Delegation(1, DELEGATE))
    with pytest.raises(PolicyError):
        PolicyRequest("p1", "sign_authorization", "k1", "acme")
    assert auth().delegations == (Delegation(1, DELEGATE),)
