"""The pure grant check: table-driven cases with the reasons they must give, and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import (
    OPERATIONS,
    Amount,
    Effect,
    Facts,
    Grant,
    GrantRequest,
    PolicyInputError,
    UsageQuery,
    evaluate_grants,
    grant_usage_queries,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def grant(gid="g1", principal="p1", key="k1", ops=("sign_transaction",), expires=None, revoked=False):
    return Grant(gid, principal, "key", key, frozenset(ops), expires, revoked)


def request(principal="p1", op="sign_transaction", key="k1"):
    return GrantRequest(principal, op, "key", key)


@pytest.mark.parametrize(
    ("grants", "req", "effect", "codes"),
    [
        ([], request(), Effect.DENY, ["operation_not_granted"]),
        ([grant()], request(), Effect.ALLOW, ["granted"]),
        ([grant(principal="p2")], request(), Effect.DENY, ["operation_not_granted"]),
        ([grant(key="k2")], request(), Effect.DENY, ["operation_not_granted"]),
        ([grant(ops=("sign_message",))], request(), Effect.DENY, ["operation_not_granted"]),
        ([grant(revoked=True)], request(), Effect.DENY, ["operation_not_granted"]),
        ([grant(expires=NOW)], request(), Effect.DENY, ["grant_expired"]),
        ([grant(expires=NOW + timedelta(microseconds=1))], request(), Effect.ALLOW, ["granted"]),
        ([grant(expires=NOW), grant("g2")], request(), Effect.ALLOW, ["granted"]),
        ([grant(ops=OPERATIONS)], request(op="launch_missiles"), Effect.DENY, ["unknown_operation"]),
    ],
)
def test_table(grants, req, effect, codes):
    decision = evaluate_grants(req, grants, now=NOW)
    assert decision.effect is effect
    assert [r.code for r in decision.reasons] == codes
    assert all(r.message for r in decision.reasons)


def test_reason_names_the_grant_that_allowed():
    decision = evaluate_grants(request(), [grant("g7")], now=NOW)
    assert decision.reasons[0].rule_id == "grant:g7"
    assert decision.reasons_as_dicts() == [
        {"rule_id": "grant:g7", "code": "granted", "message": "grant g7 allows sign_transaction"}
    ]


grants_strategy = st.lists(
    st.builds(
        grant,
        gid=st.sampled_from(["a", "b", "c"]),
        principal=st.sampled_from(["p1", "p2"]),
        key=st.sampled_from(["k1", "k2"]),
        ops=st.sets(st.sampled_from(sorted(OPERATIONS))),
        expires=st.one_of(st.none(), st.sampled_from([NOW - timedelta(1), NOW, NOW + timedelta(1)])),
        revoked=st.booleans(),
    ),
    max_size=6,
)


@given(grants_strategy, st.sampled_from(sorted(OPERATIONS)))
def test_allow_needs_a_live_matching_grant(grants, op):
    decision = evaluate_grants(request(op=op), grants, now=NOW)
    live = [
        g
        for g in grants
        if not g.revoked
        and g.principal_id == "p1"
        and g.resource_id == "k1"
        and op in g.operations
        and (g.expires_at is None or NOW < g.expires_at)
    ]
    assert decision.allowed == bool(live)


@given(grants_strategy, grants_strategy, st.sampled_from(sorted(OPERATIONS)))
def test_removing_grants_never_turns_deny_into_allow(grants, extra, op):
    if not evaluate_grants(request(op=op), grants + extra, now=NOW).allowed:
        assert not evaluate_grants(request(op=op), grants, now=NOW).allowed


# -- groups, scopes, secrets, use counts and budgets -------------------------------------------------------

ETHER = 10**18
TOKEN = "0x" + "70" * 20


def scoped(
    gid="s1",
    subject="p1",
    scope="acme/payments",
    ops=("sign_transaction",),
    subject_type="principal",
    **extra,
):
    return Grant(gid, subject, "scope", scope, frozenset(ops), subject_type=subject_type, **extra)


def wide_request(
    principal="p1",
    op="sign_transaction",
    key="k1",
    scope="acme/payments/prod",
    groups=(),
    amounts=(),
    resource_type="key",
):
    return GrantRequest(principal, op, resource_type, key, scope, frozenset(groups), tuple(amounts))


@pytest.mark.parametrize(
    ("grants", "req", "effect", "codes"),
    [
        ([scoped()], wide_request(), Effect.ALLOW, ["granted"]),
        ([scoped(scope="acme")], wide_request(), Effect.ALLOW, ["granted"]),
        ([scoped(scope="acme/payments/prod")], wide_request(), Effect.ALLOW, ["granted"]),
        ([scoped(scope="acme/pay")], wide_request(), Effect.DENY, ["operation_not_granted"]),
        ([scoped(scope="acme/payments/prod/eu")], wide_request(), Effect.DENY, ["operation_not_granted"]),
        ([scoped(scope="Not A Scope")], wide_request(), Effect.DENY, ["operation_not_granted"]),
        ([scoped()], wide_request(scope=None), Effect.DENY, ["operation_not_granted"]),
        (
            [scoped("g", "payers", subject_type="group")],
            wide_request(groups=["payers"]),
            Effect.ALLOW,
            ["granted"],
        ),
        (
            [scoped("g", "payers", subject_type="group")],
            wide_request(),
            Effect.DENY,
            ["operation_not_granted"],
        ),
        ([scoped("g", "p1", subject_type="group")], wide_request(), Effect.DENY, ["operation_not_granted"]),
        (
            [scoped(ops=("read_secret",))],
            wide_request(op="read_secret", resource_type="secret"),
            Effect.ALLOW,
            ["granted"],
        ),
        (
            [Grant("g", "p1", "secret", "k1", frozenset({"read_secret"}))],
            wide_request(op="read_secret", resource_type="secret"),
            Effect.ALLOW,
            ["granted"],
        ),
        (
            [grant(ops=("read_secret",))],
            wide_request(op="read_secret", resource_type="secret"),
            Effect.DENY,
            ["operation_not_granted"],
        ),
    ],
)
def test_subjects_and_resources(grants, req, effect, codes):
    decision = evaluate_grants(req, grants, now=NOW)
    assert decision.effect is effect
    assert [r.code for r in decision.reasons] == codes


def _usage(grant_id, uses=0, native=0, token=0):
    return Facts(
        {
            UsageQuery(f"grant:{grant_id}:uses", None): uses,
            UsageQuery(f"grant:{grant_id}:spend:native", None): native,
            UsageQuery(f"grant:{grant_id}:spend:{TOKEN}", None): token,
        }
    )


BUDGETED = scoped(
    "b", max_uses=3, value_budgets={"native": 5 * ETHER, TOKEN.upper().replace("0X", "0x"): 1000}
)
ONE_ETHER = [Amount("native", ETHER)]


@pytest.mark.parametrize(
    ("facts", "amounts", "effect", "codes"),
    [
        (_usage("b"), ONE_ETHER, Effect.ALLOW, ["granted"]),
        (
            _usage("b", uses=2, native=4 * ETHER),
            ONE_ETHER,
            Effect.ALLOW,
            ["granted"],
        ),  # exactly at both limits
        (_usage("b", uses=3), ONE_ETHER, Effect.DENY, ["grant_uses_exhausted"]),
        (_usage("b", native=4 * ETHER + 1), ONE_ETHER, Effect.DENY, ["grant_budget_exceeded"]),
        (_usage("b", token=1000), [Amount(TOKEN, 1)], Effect.DENY, ["grant_budget_exceeded"]),
        (_usage("b"), [Amount("0x" + "11" * 20, 1)], Effect.DENY, ["asset_not_budgeted"]),
        (_usage("b"), [], Effect.ALLOW, ["granted"]),
        (Facts(), ONE_ETHER, Effect.DENY, ["grant_usage_unknown"]),
    ],
)
def test_use_counts_and_budgets(facts, amounts, effect, codes):
    decision = evaluate_grants(wide_request(amounts=amounts), [BUDGETED], now=NOW, facts=facts)
    assert decision.effect is effect
    assert [r.code for r in decision.reasons] == codes
    if decision.allowed:
        expected = {("grant:b:uses", 1)} | {(f"grant:b:spend:{a.asset}", a.value) for a in amounts}
        assert {(r.limit_key, r.amount) for r in decision.reservations} == expected
        assert all(r.window_start == NOW and r.window_end is None for r in decision.reservations)
    else:
        assert decision.reservations == ()


def test_an_unlimited_grant_is_preferred_and_charges_nothing():
    unlimited = scoped("u")
    decision = evaluate_grants(
        wide_request(amounts=ONE_ETHER), [BUDGETED, unlimited], now=NOW, facts=_usage("b")
    )
    assert decision.reasons[0].rule_id == "grant:u" and decision.reservations == ()


def test_an_exhausted_grant_falls_back_to_the_next():
    other = scoped("c", max_uses=1)
    facts = Facts({**_usage("b", uses=3).usage, UsageQuery("grant:c:uses", None): 0})
    decision = evaluate_grants(wide_request(amounts=ONE_ETHER), [BUDGETED, other], now=NOW, facts=facts)
    assert decision.reasons[0].rule_id == "grant:c"
    assert [r.limit_key for r in decision.reservations] == ["grant:c:uses"]


def test_usage_queries_cover_exactly_the_live_limited_grants():
    expired = scoped("e", max_uses=1, expires_at=NOW)
    queries = grant_usage_queries(wide_request(amounts=ONE_ETHER), [BUDGETED, expired, scoped("u")], now=NOW)
    assert queries == {UsageQuery("grant:b:uses", None), UsageQuery("grant:b:spend:native", None)}


@pytest.mark.parametrize(
    "bad",
    [
        {"subject_type": "team"},
        {"max_uses": -1},
        {"max_uses": True},
        {"value_budgets": {"wei": 1}},
        {"value_budgets": {"native": -1}},
    ],
)
def test_malformed_grants_are_refused(bad):
    with pytest.raises(PolicyInputError):
        scoped(**bad)


def test_naive_instants_are_refused():
    with pytest.raises(PolicyInputError):
        evaluate_grants(request(), [grant()], now=datetime(2026, 1, 1))
    with pytest.raises(PolicyInputError):
        evaluate_grants(request(), [grant(expires=datetime(2027, 1, 1))], now=NOW)
