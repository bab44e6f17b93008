"""The pure grant check: table-driven cases with the reasons they must give, and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import OPERATIONS, Effect, Grant, GrantRequest, evaluate_grants

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
