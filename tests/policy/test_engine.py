"""How the engine combines grants, documents and rules: precedence, scope overrides, conflicts, errors,
reservations, approvals, shadow evaluation, and the monotonicity of deny."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import (
    ApprovalRequirement,
    AttachedPolicy,
    Delegation,
    Effect,
    Facts,
    Grant,
    PolicyDocument,
    PolicyInputError,
    PolicySet,
    Reservation,
    TypedDataDomain,
    UsageQuery,
    evaluate,
    evaluate_grants,
    evaluate_shadow,
    grant_request,
    rate_key,
    spend_key,
    strongest,
    usage_queries,
)
from policy.limits import LimitRule
from policy.rules import ApprovalSpec, Hit, RawDigest, Rule, RuleContext, ValueCap
from tests.policy.support import (
    ALICE,
    BOB,
    DELEGATE,
    ETHER,
    NOW,
    TOKEN,
    document,
    full_facts,
    grant_all,
    ledger_facts,
    policy_set,
    request,
    rule,
    token_tx,
    tx,
)

CHAINS = rule("chains", "chain_allowlist", chain_ids=[1])


def decide(req, policies, facts=None, now=NOW):
    return evaluate(req, policies, facts if facts is not None else full_facts(req, policies, now), now=now)


def codes(decision):
    return [r.code for r in decision.reasons]


def test_strongest_effect():
    assert strongest([Effect.ALLOW, Effect.DENY, Effect.REQUIRE_APPROVAL]) is Effect.DENY
    assert strongest([Effect.ALLOW, Effect.REQUIRE_APPROVAL]) is Effect.REQUIRE_APPROVAL
    assert strongest([]) is None


def test_no_grant_denies_whatever_the_policy_says():
    policies = policy_set(CHAINS, grants=[])
    assert codes(decide(request(), policies)) == ["operation_not_granted"]
    # Every deny reason is reported, the grant's first.
    mismatched = request(transaction=tx(chain_id=5))
    assert codes(decide(mismatched, policies)) == ["operation_not_granted", "chain_not_allowed"]


def test_no_documents_means_grants_decide():
    decision = decide(request(), PolicySet((grant_all(),)))
    assert decision.effect is Effect.ALLOW
    assert decision.policies == () and decision.reservations == ()


def test_deny_beats_approval_which_beats_allow():
    approval_cap = rule("cap", "value_cap", "require_approval", max_value="0")
    policies = policy_set(approval_cap, CHAINS)
    wanted = decide(request(transaction=tx(chain_id=1, value=5)), policies)
    assert wanted.effect is Effect.REQUIRE_APPROVAL and codes(wanted) == ["value_cap_exceeded"]
    both = decide(request(transaction=tx(chain_id=5, value=5)), policies)
    assert both.effect is Effect.DENY and codes(both) == ["chain_not_allowed"]
    assert both.approvals == () and both.reservations == ()


def test_approvals_merge_per_group():
    policies = policy_set(
        rule(
            "a",
            "value_cap",
            "require_approval",
            max_value="0",
            approval={"quorum": 2, "group": "treasury", "expires_in_seconds": 3600},
        ),
        rule(
            "b",
            "gas_cost_cap",
            "require_approval",
            max_value="0",
            approval={"quorum": 3, "group": "treasury", "expires_in_seconds": 7200},
        ),
        rule(
            "c",
            "time_window",
            "require_approval",
            windows=[{"days": ["sun"], "start": "00:00", "end": "01:00"}],
            approval={"quorum": 1, "group": "security", "expires_in_seconds": 600},
        ),
    )
    decision = decide(request(), policies)
    assert decision.effect is Effect.REQUIRE_APPROVAL
    assert decision.approvals == (
        ApprovalRequirement("security", 1, NOW + timedelta(seconds=600), ("c",)),
        ApprovalRequirement("treasury", 3, NOW + timedelta(hours=1), ("a", "b")),
    )


def _cap(rule_id, ether, policy_id):
    return document(rule(rule_id, "value_cap", max_value=str(ether * ETHER)), policy_id=policy_id)


def test_narrowest_definition_of_a_rule_wins():
    org = AttachedPolicy(_cap("cap", 1, "org"), scope="acme")
    team = AttachedPolicy(_cap("cap", 10, "team"), scope="acme/payments")
    key = AttachedPolicy(_cap("cap", 2, "key"), key_id="k1")
    policies = PolicySet((grant_all(),), (key, team, org))  # order given does not matter
    five = tx(value=5 * ETHER)
    assert decide(request(scope="acme/payments/prod", key="k2", transaction=five), policies).allowed
    billing = decide(request(scope="acme/billing", key="k2", transaction=five), policies)
    assert codes(billing) == ["value_cap_exceeded"] and billing.reasons[0].policy == "org@1"
    pinned = decide(request(scope="acme/payments/prod", key="k1", transaction=five), policies)
    assert codes(pinned) == ["value_cap_exceeded"] and pinned.reasons[0].policy == "key@1"
    # Every applicable document is recorded, broad to narrow, whichever rule won.
    assert [p.attached_to for p in pinned.policies] == ["scope:acme", "scope:acme/payments", "key:k1"]
    assert pinned.policy_digests == (org.document.digest, team.document.digest, key.document.digest)


def test_rules_with_different_ids_all_apply():
    org = AttachedPolicy(_cap("org-cap", 1, "org"), scope="acme")
    team = AttachedPolicy(_cap("team-cap", 10, "team"), scope="acme/payments")
    decision = decide(request(transaction=tx(value=5 * ETHER)), PolicySet((grant_all(),), (org, team)))
    assert [r.rule_id for r in decision.reasons] == ["org-cap"]


def test_documents_elsewhere_do_not_apply():
    elsewhere = AttachedPolicy(document(CHAINS), scope="acme/billing")
    other_key = AttachedPolicy(document(CHAINS), key_id="k9")
    decision = decide(request(transaction=tx(chain_id=5)), PolicySet((grant_all(),), (elsewhere, other_key)))
    assert decision.allowed and decision.policies == ()


def test_one_rule_id_twice_at_one_level_is_a_conflict():
    first = AttachedPolicy(document(CHAINS, policy_id="a"), scope="acme")
    second = AttachedPolicy(
        document(rule("chains", "chain_allowlist", chain_ids=[5]), policy_id="b"), scope="acme"
    )
    decision = decide(request(), PolicySet((grant_all(),), (first, second)))
    assert decision.effect is Effect.DENY
    assert [(r.rule_id, r.code) for r in decision.reasons] == [("chains", "rule_conflict")]
    # A narrower definition settles it.
    settled = AttachedPolicy(document(CHAINS, policy_id="c"), scope="acme/payments")
    assert decide(request(), PolicySet((grant_all(),), (first, second, settled))).allowed


def test_one_policy_attached_twice_at_one_place_is_a_conflict():
    v1 = AttachedPolicy(document(CHAINS, version=1), scope="acme")
    v2 = AttachedPolicy(document(rule("other", "chain_allowlist", chain_ids=[1]), version=2), scope="acme")
    decision = decide(request(), PolicySet((grant_all(),), (v1, v2)))
    assert [(r.rule_id, r.code) for r in decision.reasons] == [("policy:p", "policy_conflict")]


@dataclass(frozen=True, slots=True, kw_only=True)
class Exploding(Rule):
    kind: ClassVar[str] = "exploding"

    def check(self, ctx: RuleContext) -> Hit | None:
        raise ZeroDivisionError("a bug")


def test_a_rule_that_errors_denies_and_is_named():
    spec = ApprovalSpec(1, "ops", timedelta(minutes=5))
    broken = PolicyDocument("p", 1, (Exploding(id="boom", effect=Effect.REQUIRE_APPROVAL, approval=spec),))
    decision = decide(request(), PolicySet((grant_all(),), (AttachedPolicy(broken, scope="acme"),)))
    assert decision.effect is Effect.DENY
    assert decision.reasons_as_dicts() == [
        {
            "rule_id": "boom",
            "code": "rule_error",
            "message": "rule boom could not be evaluated (ZeroDivisionError)",
            "policy": "p@1",
        }
    ]


def test_missing_facts_deny_the_rule_that_needed_them():
    policies = policy_set(rule("daily", "spend_limit", max_value="10", window_seconds=86_400, per="key"))
    decision = evaluate(request(), policies, Facts(), now=NOW)
    assert decision.effect is Effect.DENY
    assert [(r.rule_id, r.code) for r in decision.reasons] == [("daily", "facts_missing")]


DAILY = rule("daily", "spend_limit", max_value=str(3 * ETHER), window_seconds=86_400, per="key")
HOURLY = rule("hourly", "spend_limit", max_value=str(2 * ETHER), window_seconds=3600, per="key")
TEAM = rule("team", "spend_limit", max_value=str(10 * ETHER), window_seconds=86_400, per="scope")
TOKENS = rule("tokens", "spend_limit", max_value="1000", window_seconds=86_400, per="principal", asset=TOKEN)
RATE = rule("rate", "rate_limit", max_requests=2, window_seconds=60, per="principal")


def test_reservations_are_exact_and_one_per_limit_key():
    policies = policy_set(DAILY, HOURLY, TEAM, TOKENS, RATE)
    req = request(transaction=tx(value=ETHER))
    decision = decide(req, policies)
    assert decision.allowed
    assert decision.reservations == (
        Reservation(rate_key("principal", "p1"), 1, NOW, NOW + timedelta(minutes=1)),
        Reservation(
            spend_key("key", "k1", "native"), ETHER, NOW, NOW + timedelta(days=1)
        ),  # daily and hourly
        Reservation(spend_key("scope", "acme", "native"), ETHER, NOW, NOW + timedelta(days=1)),
    )
    json.dumps(decision.as_dict())


def test_usage_queries_are_what_evaluate_reads():
    policies = policy_set(DAILY, HOURLY, TEAM, TOKENS, RATE)
    req = request(transaction=token_tx(700))
    assert usage_queries(req, policies, now=NOW) == {
        # no native value moves, so native limits ask nothing
        UsageQuery(spend_key("principal", "p1", TOKEN), NOW - timedelta(days=1)),
        UsageQuery(rate_key("principal", "p1"), NOW - timedelta(minutes=1)),
    }
    assert decide(req, policies).reservations == (
        Reservation(rate_key("principal", "p1"), 1, NOW, NOW + timedelta(minutes=1)),
        Reservation(spend_key("principal", "p1", TOKEN), 700, NOW, NOW + timedelta(days=1)),
    )


def test_limits_read_the_ledger_through_the_window():
    policies = policy_set(DAILY, HOURLY)
    req = request(transaction=tx(value=ETHER))
    key = spend_key("key", "k1", "native")
    ledger = [
        Reservation(key, ETHER, NOW - timedelta(days=1), None),  # exactly a day ago: out of the daily window
        Reservation(key, ETHER, NOW - timedelta(hours=2), None),  # in the daily window only
        Reservation(key, ETHER, NOW - timedelta(minutes=30), None),  # in both
    ]
    assert decide(req, policies, ledger_facts(req, policies, ledger)).allowed  # day: 3 of 3, hour: 2 of 2
    ledger.append(Reservation(key, 1, NOW - timedelta(hours=23), None))
    decision = decide(req, policies, ledger_facts(req, policies, ledger))
    assert [(r.rule_id, r.code) for r in decision.reasons] == [("daily", "spend_limit_exceeded")]


def test_per_scope_limits_count_over_the_attachment_scope():
    team_doc = document(TEAM)
    key_doc = document(
        rule("key-team", "spend_limit", max_value="1", window_seconds=60, per="scope"), policy_id="k"
    )
    policies = PolicySet(
        (grant_all(),),
        (AttachedPolicy(team_doc, scope="acme/payments"), AttachedPolicy(key_doc, key_id="k1")),
    )
    keys = {r.limit_key for r in decide(request(transaction=tx(value=1)), policies).reservations}
    assert keys == {
        spend_key("scope", "acme/payments", "native"),
        spend_key("scope", "acme/payments/prod", "native"),
    }


def test_deny_reserves_nothing_and_approval_reserves():
    policies = policy_set(DAILY, rule("cap", "value_cap", "require_approval", max_value="0"))
    pending = decide(request(transaction=tx(value=ETHER)), policies)
    assert pending.effect is Effect.REQUIRE_APPROVAL and len(pending.reservations) == 1
    over = decide(request(transaction=tx(value=4 * ETHER)), policies)
    assert over.effect is Effect.DENY and over.reservations == ()


def test_grants_by_group_and_scope_with_budgets():
    grants = (
        Grant(
            "g-team",
            "payers",
            "scope",
            "acme/payments",
            frozenset({"sign_transaction"}),
            subject_type="group",
            max_uses=10,
            value_budgets={"native": 5 * ETHER},
        ),
    )
    policies = PolicySet(grants)
    req = request(groups={"payers"}, transaction=tx(value=ETHER))
    decision = decide(req, policies)
    assert decision.allowed and decision.reasons[0].rule_id == "grant:g-team"
    assert {(r.limit_key, r.amount, r.window_end) for r in decision.reservations} == {
        ("grant:g-team:uses", 1, None),
        ("grant:g-team:spend:native", ETHER, None),
    }
    assert codes(decide(request(transaction=tx(value=ETHER)), policies)) == ["operation_not_granted"]
    assert codes(decide(request(groups={"payers"}, transaction=token_tx(1)), policies)) == [
        "asset_not_budgeted"
    ]


def test_grant_decision_matches_the_grant_check_alone():
    policies = policy_set(CHAINS)
    req = request()
    alone = evaluate_grants(grant_request(req), policies.grants, now=NOW)
    assert decide(req, policies).reasons == alone.reasons


def test_secrets_are_judged_by_grants_and_request_rules():
    policies = policy_set(RATE, rule("cap", "value_cap", max_value="0"), CHAINS)
    req = request("read_secret", key="db-password")
    decision = decide(req, policies)
    assert decision.allowed
    assert [r.limit_key for r in decision.reservations] == [rate_key("principal", "p1")]
    key_grant_only = PolicySet((Grant("g", "p1", "key", "db-password", frozenset({"read_secret"})),))
    assert not decide(req, key_grant_only).allowed  # a key grant is not a secret grant


def test_evaluation_is_pure_so_a_dry_run_is_the_same_call():
    policies = policy_set(DAILY, RATE, CHAINS)
    req = request(transaction=tx(value=ETHER))
    facts = full_facts(req, policies)
    assert decide(req, policies, facts) == decide(req, policies, facts)


def test_shadow_evaluates_a_candidate_beside_the_live_policy():
    live_doc = document(rule("cap", "value_cap", max_value=str(2 * ETHER)), version=3)
    live = PolicySet((grant_all(),), (AttachedPolicy(live_doc, scope="acme"),))
    candidate_doc = document(rule("cap", "value_cap", max_value=str(ETHER // 2)), DAILY, version=4)
    candidate = live.with_candidate(AttachedPolicy(candidate_doc, scope="acme"))
    assert [a.document.version for a in candidate.documents] == [4]
    req = request(transaction=tx(value=ETHER))
    facts = Facts.from_reservations(
        usage_queries(req, live, now=NOW) | usage_queries(req, candidate, now=NOW), []
    )
    shadow = evaluate_shadow(req, live, candidate, facts, now=NOW)
    assert shadow.live.allowed and shadow.live.policy_digests == (live_doc.digest,)
    assert shadow.candidate.effect is Effect.DENY and shadow.candidate.policy_digests == (
        candidate_doc.digest,
    )
    assert shadow.differs
    assert json.loads(json.dumps(shadow.as_dict()))["candidate"]["reasons"][0]["code"] == "value_cap_exceeded"
    same = evaluate_shadow(req, live, live, facts, now=NOW)
    assert not same.differs


# -- property: adding a deny rule never turns a deny into an allow ---------------------------------------

ADDRESSES = [ALICE, BOB, TOKEN, DELEGATE]

rule_pool = st.sampled_from(
    [
        rule("chains", "chain_allowlist", chain_ids=[1]),
        rule("to", "recipient_allowlist", addresses=[ALICE, TOKEN]),
        rule("blocked", "recipient_denylist", addresses=[BOB]),
        rule("cap", "value_cap", "require_approval", max_value=str(ETHER)),
        rule("token-cap", "value_cap", max_value="100", asset=TOKEN),
        rule("daily", "spend_limit", max_value=str(2 * ETHER), window_seconds=86_400, per="key"),
        rule("rate", "rate_limit", "require_approval", max_requests=3, window_seconds=60, per="principal"),
        rule("calls", "selector_allowlist", selectors=["0xa9059cbb"]),
        rule("domains", "typed_data_domain_allowlist", domains=[{"chain_id": 1}]),
        rule("gas", "gas_cost_cap", max_value=str(10**15)),
        rule("hours", "time_window", windows=[{"days": ["wed"], "start": "10:00", "end": "11:00"}]),
        rule("raw", "raw_digest", "allow"),
        rule("raw2", "raw_digest", "require_approval"),
        rule("delegates", "delegate_allowlist", "allow", delegates=[DELEGATE]),
    ]
)
deny_pool = st.sampled_from(
    [
        rule("new-chains", "chain_allowlist", chain_ids=[10]),
        rule("new-cap", "value_cap", max_value="0"),
        rule("new-blocked", "recipient_denylist", addresses=[ALICE]),
        rule("new-daily", "spend_limit", max_value="5", window_seconds=3600, per="scope"),
        rule("new-rate", "rate_limit", max_requests=1, window_seconds=3600, per="key"),
        rule("new-hours", "time_window", windows=[{"days": ["sun"], "start": "00:00", "end": "01:00"}]),
        rule("new-calls", "selector_allowlist", selectors=["0x095ea7b3"], allow_empty_calldata=False),
    ]
)
attachments = st.sampled_from(
    [{"scope": "acme"}, {"scope": "acme/payments/prod"}, {"key_id": "k1"}, {"scope": "globex"}]
)


@st.composite
def requests(draw):
    operation = draw(st.sampled_from(["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]))
    if operation == "sign_typed_data":
        return request(operation, domain=TypedDataDomain(chain_id=draw(st.sampled_from([None, 1, 5]))))
    if operation != "sign_transaction":
        return request(operation)
    if draw(st.booleans()):
        transaction = token_tx(draw(st.sampled_from([1, 100, 101])), draw(st.sampled_from(ADDRESSES)))
    else:
        delegations = tuple(
            Delegation(draw(st.sampled_from([0, 1])), d)
            for d in draw(st.lists(st.sampled_from(ADDRESSES), max_size=2))
        )
        transaction = tx(
            chain_id=draw(st.sampled_from([1, 10])),
            to=draw(st.sampled_from([*ADDRESSES, None])),
            value=draw(st.sampled_from([0, 1, ETHER, 3 * ETHER])),
            delegations=delegations,
        )
    return request(transaction=transaction)


@st.composite
def policy_sets(draw):
    documents = []
    for index in range(draw(st.integers(0, 3))):
        rules = draw(st.lists(rule_pool, max_size=5, unique_by=lambda r: r["id"]))
        documents.append(AttachedPolicy(document(*rules, policy_id=f"d{index}"), **draw(attachments)))
    grants = draw(st.sampled_from([(), (grant_all(),), (grant_all(max_uses=1),)]))
    return PolicySet(grants, tuple(documents))


@settings(max_examples=300, deadline=None)
@given(requests(), policy_sets(), deny_pool, attachments, st.data())
def test_adding_a_deny_rule_never_loosens(req, policies, deny_rule, where, data):
    tightened = PolicySet(
        policies.grants,
        (*policies.documents, AttachedPolicy(document(deny_rule, policy_id="added"), **where)),
    )
    queries = sorted(usage_queries(req, tightened, now=NOW), key=lambda q: q.limit_key)
    # Some sums answered (any value), some withheld: the property holds either way.
    answered = data.draw(st.lists(st.booleans(), min_size=len(queries), max_size=len(queries)))
    values = data.draw(st.lists(st.integers(0, 4 * ETHER), min_size=len(queries), max_size=len(queries)))
    facts = Facts({q: v for q, v, keep in zip(queries, values, answered, strict=True) if keep})
    before = evaluate(req, policies, facts, now=NOW)
    after = evaluate(req, tightened, facts, now=NOW)
    assert after.effect.severity >= before.effect.severity
    if before.effect is Effect.DENY:
        assert after.effect is Effect.DENY
    if after.allowed:
        # An allow needs a grant that allows on its own.
        assert evaluate_grants(grant_request(req), tightened.grants, now=NOW, facts=facts).allowed


def test_rules_built_in_code_are_checked_like_parsed_ones():
    with pytest.raises(PolicyInputError):
        ValueCap(id="cap", effect=Effect.REQUIRE_APPROVAL, max_value=1)  # approval missing
    with pytest.raises(PolicyInputError):
        ValueCap(id="cap", effect=Effect.ALLOW, max_value=1)  # guards do not allow
    with pytest.raises(PolicyInputError):
        RawDigest(id="raw", effect=Effect.DENY)  # unlocks do not deny
    spec = ApprovalSpec(1, "ops", timedelta(minutes=5))
    with pytest.raises(PolicyInputError):
        ValueCap(id="cap", effect=Effect.DENY, max_value=1, approval=spec)
    assert ValueCap(id="cap", effect=Effect.REQUIRE_APPROVAL, max_value=1, approval=spec).approval == spec


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokenLimit(LimitRule):
    """Checks fine, then fails to say what it reserves."""

    kind: ClassVar[str] = "broken_limit"

    def limit_key(self, ctx: RuleContext) -> str | None:
        return "spend:key:k1:native"

    def amount(self, ctx: RuleContext) -> int:
        raise ArithmeticError("a bug")

    def room(self, amount: int) -> int:
        return 0

    def exceeded(self, used: int, amount: int) -> Hit:
        return Hit("never", "never")

    def check(self, ctx: RuleContext) -> Hit | None:
        return None


def test_a_limit_that_cannot_say_what_it_reserves_denies():
    broken = PolicyDocument(
        "p", 1, (BrokenLimit(id="lim", effect=Effect.DENY, window=timedelta(1), per="key"),)
    )
    decision = decide(request(), PolicySet((grant_all(),), (AttachedPolicy(broken, scope="acme"),)))
    assert decision.effect is Effect.DENY and decision.reservations == ()
    assert [(r.rule_id, r.code) for r in decision.reasons] == [("lim", "rule_error")]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeylessLimit(BrokenLimit):
    kind: ClassVar[str] = "keyless_limit"

    def limit_key(self, ctx: RuleContext) -> str | None:
        raise LookupError("a bug")


def test_a_limit_without_a_key_asks_nothing_and_denies():
    broken = PolicyDocument(
        "p", 1, (KeylessLimit(id="lim", effect=Effect.DENY, window=timedelta(1), per="key"),)
    )
    policies = PolicySet((grant_all(),), (AttachedPolicy(broken, scope="acme"),))
    assert usage_queries(request(), policies, now=NOW) == frozenset()
    assert [r.code for r in decide(request(), policies).reasons] == ["rule_error"]


# -- keeping a decision when only the usage moved (Decision.holds_under) ---------------------------

# Sums on and beside every edge the pools can draw (limits of 1-3 uses or requests, 2 ether, 150 tokens,
# amounts of 0, 1, 100, 101 or whole ethers), so that off-by-one bounds get caught.
_EDGES = sorted(
    {e + d for e in (0, 1, 2, 3, 50, 100, 150, ETHER, 2 * ETHER) for d in (-1, 0, 1) if e + d >= 0}
)
usage_values = st.one_of(st.integers(0, 2), st.sampled_from(_EDGES), st.integers(0, 4 * ETHER))
grant_sets = st.sampled_from(
    [
        (),
        (grant_all(),),
        (grant_all(max_uses=1),),
        (grant_all(max_uses=3, value_budgets={"native": 2 * ETHER}),),
        (Grant("g-first", "p1", "scope", "acme", frozenset({"sign_transaction"}), max_uses=2), grant_all()),
        (
            Grant("g-first", "p1", "scope", "acme", frozenset({"sign_transaction"}), max_uses=2),
            grant_all(value_budgets={"native": ETHER, TOKEN: 150}),
        ),
    ]
)


def _facts_for(queries, data):
    if data.draw(st.integers(0, 4)):
        answered = [True] * len(queries)  # mostly every sum answered, or nearly everything denies
    else:
        answered = data.draw(st.lists(st.booleans(), min_size=len(queries), max_size=len(queries)))
    values = data.draw(st.lists(usage_values, min_size=len(queries), max_size=len(queries)))
    return Facts({q: v for q, v, keep in zip(queries, values, answered, strict=True) if keep})


limit_pool = st.sampled_from(
    [
        rule("daily", "spend_limit", max_value=str(2 * ETHER), window_seconds=86_400, per="key"),
        rule("hourly", "spend_limit", max_value=str(ETHER), window_seconds=3600, per="key"),
        rule("team", "spend_limit", "require_approval", max_value="3", window_seconds=60, per="scope"),
        rule("tokens", "spend_limit", max_value="150", window_seconds=600, per="principal", asset=TOKEN),
        rule("rate", "rate_limit", max_requests=3, window_seconds=60, per="principal"),
        rule("burst", "rate_limit", "require_approval", max_requests=2, window_seconds=10, per="key"),
    ]
)


@st.composite
def limited_cases(draw):
    """Transactions under limit-heavy policies: mostly allowed, every sum near an edge."""
    rules = draw(st.lists(limit_pool, min_size=1, max_size=4, unique_by=lambda r: r["id"]))
    where = draw(st.sampled_from([{"scope": "acme"}, {"key_id": "k1"}]))
    policies = PolicySet(draw(grant_sets), (AttachedPolicy(document(*rules), **where),))
    if draw(st.booleans()):
        transaction = token_tx(draw(st.sampled_from([1, 100, 101])), ALICE)
    else:
        transaction = tx(value=draw(st.sampled_from([0, 1, ETHER])))
    return request(transaction=transaction), policies


@settings(max_examples=500, deadline=None)
@given(st.one_of(limited_cases(), st.tuples(requests(), policy_sets())), grant_sets, st.data())
def test_a_decision_that_holds_under_other_usage_is_what_evaluate_returns_there(case, grants, data):
    req, policies = case
    if not policies.grants:
        policies = PolicySet(grants, policies.documents)
    queries = sorted(usage_queries(req, policies, now=NOW), key=lambda q: (q.limit_key, str(q.since)))
    first = _facts_for(queries, data)
    if data.draw(st.booleans()):
        second = _facts_for(queries, data)
    else:
        # The case the service meets: the same sums, some a little higher.
        moves = data.draw(st.lists(st.integers(0, 2), min_size=len(queries), max_size=len(queries)))
        second = Facts({q: v + moves[queries.index(q)] for q, v in first.usage.items()})
    decision = evaluate(req, policies, first, now=NOW)
    if len(first.usage) == len(queries):
        # Sums read on demand decide exactly as sums read beforehand.
        on_demand = evaluate(req, policies, Facts(lookup=lambda q: first.usage[q]), now=NOW)
        assert on_demand == decision and on_demand.bounds == decision.bounds
    if decision.allowed and decision.bounds is not None:
        assert decision.holds_under(first)
    if not decision.allowed:
        assert not decision.holds_under(first)
    if decision.holds_under(second):
        again = evaluate(req, policies, second, now=NOW)
        assert again == decision
        assert again.reasons == decision.reasons and again.reservations == decision.reservations


def test_an_allow_holds_while_every_limit_keeps_its_room():
    daily = rule("daily", "spend_limit", max_value=str(2 * ETHER), window_seconds=86_400, per="key")
    rate = rule("rate", "rate_limit", max_requests=3, window_seconds=60, per="principal")
    policies = PolicySet((grant_all(max_uses=10),), (AttachedPolicy(document(daily, rate), scope="acme"),))
    req = request(transaction=tx(value=ETHER))
    queries = usage_queries(req, policies, now=NOW)
    spend = next(q for q in queries if q.limit_key.startswith("spend:"))
    calls = next(q for q in queries if q.limit_key.startswith("rate:"))
    uses = next(q for q in queries if q.limit_key.startswith("grant:"))
    known = Facts({spend: 0, calls: 0, uses: 0})
    decision = evaluate(req, policies, known, now=NOW)
    assert decision.allowed
    # Up to the edge of every limit the decision is the same one; one past any edge it is not.
    edge = Facts({spend: ETHER, calls: 2, uses: 9})
    assert decision.holds_under(edge) and evaluate(req, policies, edge, now=NOW) == decision
    for past in (
        {spend: ETHER + 1, calls: 2, uses: 9},
        {spend: ETHER, calls: 3, uses: 9},
        {spend: 0, calls: 0, uses: 10},
    ):
        assert not decision.holds_under(Facts(past))
        assert not evaluate(req, policies, Facts(past), now=NOW).allowed
    # A sum the decision read but the new facts do not answer: not known to hold.
    assert not decision.holds_under(Facts({spend: 0, calls: 0}))
    # A refusal quotes the sums in its reasons: never kept.
    refused = evaluate(req, policies, Facts({spend: 2 * ETHER, calls: 0, uses: 0}), now=NOW)
    assert not refused.allowed and not refused.holds_under(Facts({spend: 2 * ETHER, calls: 0, uses: 0}))


def test_an_allow_by_a_later_grant_holds_only_while_the_earlier_one_stays_used_up():
    ops = frozenset({"sign_transaction"})
    first = Grant("g-first", "p1", "scope", "acme", ops, max_uses=2)
    second = Grant("g-second", "p1", "scope", "acme", ops, max_uses=10)
    policies = PolicySet((first, second), ())
    req = request(transaction=tx(value=ETHER))
    queries = usage_queries(req, policies, now=NOW)
    uses_first, uses_second = sorted(queries, key=lambda q: q.limit_key)
    decision = evaluate(req, policies, Facts({uses_first: 2, uses_second: 0}), now=NOW)
    assert [r.rule_id for r in decision.reasons] == ["grant:g-second"]
    assert decision.holds_under(Facts({uses_first: 5, uses_second: 9}))
    # With a use left on the first grant, it would be the one that allows: another decision.
    assert not decision.holds_under(Facts({uses_first: 1, uses_second: 0}))
    again = evaluate(req, policies, Facts({uses_first: 1, uses_second: 0}), now=NOW)
    assert [r.rule_id for r in again.reasons] == ["grant:g-first"]


def test_facts_read_on_demand_are_checked_like_given_ones():
    query = UsageQuery("rate:key:k1", None)
    assert Facts(lookup=lambda q: 3).used(query) == 3
    assert Facts({query: 1}, lookup=lambda q: 3).used(query) == 1
    for bad in (-1, True, "2"):
        with pytest.raises(PolicyInputError):
            Facts(lookup=lambda q, bad=bad: bad).used(query)
