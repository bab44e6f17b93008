"""A small model of the service's ledger: requests arrive one at a time (as they do under the lock), the
caller answers the engine's usage queries from the ledger and records the reservations of every
non-denied decision. Whatever the arrivals, no rolling window ever holds more than the limit, and
nothing that fits is refused."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policy import Effect, Facts, Grant, PolicySet, Reservation, evaluate, usage_queries
from tests.policy.support import ETHER, NOW, TOKEN, policy_set, request, rule, token_tx, tx

WINDOW = timedelta(hours=1)
LIMIT = 10 * ETHER

arrivals = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3 * 3600 * 10**6).map(lambda us: timedelta(microseconds=us)),
        st.sampled_from([0, 1, ETHER, 3 * ETHER, 5 * ETHER, LIMIT, LIMIT + 1]),
        st.sampled_from(["k1", "k2"]),
    ),
    max_size=40,
)


def _run(policies, arrivals, make_request, watched_key=None):
    """Feed arrivals in time order; return the ledger and, per arrival, the decision and the model's own
    sum for ``watched_key`` in the window just before deciding."""
    ledger: list[Reservation] = []
    decisions = []
    for offset, amount, key in sorted(arrivals, key=lambda a: a[0]):
        now = NOW + offset
        req = make_request(amount, key)
        watched = watched_key(key) if watched_key else None
        before = sum(r.amount for r in ledger if r.limit_key == watched and r.window_start > now - WINDOW)
        facts = Facts.from_reservations(usage_queries(req, policies, now=now), ledger)
        decision = evaluate(req, policies, facts, now=now)
        if decision.effect is not Effect.DENY:
            ledger.extend(decision.reservations)
        decisions.append((amount, before, decision))
    return ledger, decisions


def _window_sum(ledger, limit_key, at):
    return sum(r.amount for r in ledger if r.limit_key == limit_key and at - WINDOW < r.window_start <= at)


@settings(max_examples=200, deadline=None)
@given(arrivals, st.sampled_from(["key", "principal", "scope"]))
def test_spend_never_exceeds_the_limit_in_any_window(arrivals, per):
    policies = policy_set(rule("limit", "spend_limit", max_value=str(LIMIT), window_seconds=3600, per=per))
    subject = {
        "key": lambda key: f"spend:key:{key}:native",
        "principal": lambda key: "spend:principal:p1:native",
        "scope": lambda key: "spend:scope:acme:native",
    }[per]
    ledger, decisions = _run(
        policies, arrivals, lambda amount, key: request(key=key, transaction=tx(value=amount)), subject
    )
    for limit_key in {r.limit_key for r in ledger}:
        for row in ledger:  # the busiest window ends at some recording instant
            assert _window_sum(ledger, limit_key, row.window_start) <= LIMIT
    for amount, before, decision in decisions:
        # Exact, not merely safe: refused exactly when it would not fit.
        assert (decision.effect is Effect.DENY) == (amount > 0 and before + amount > LIMIT)


@settings(max_examples=100, deadline=None)
@given(arrivals)
def test_token_spend_is_limited_like_native(arrivals):
    policies = policy_set(
        rule("t", "spend_limit", max_value="500", window_seconds=3600, per="principal", asset=TOKEN)
    )
    ledger, _ = _run(
        policies, arrivals, lambda amount, key: request(key=key, transaction=token_tx(amount % 600))
    )
    for row in ledger:
        assert _window_sum(ledger, f"spend:principal:p1:{TOKEN}", row.window_start) <= 500


@settings(max_examples=100, deadline=None)
@given(arrivals)
def test_rate_never_exceeds_the_limit(arrivals):
    policies = policy_set(rule("r", "rate_limit", max_requests=3, window_seconds=3600, per="key"))
    ledger, decisions = _run(policies, arrivals, lambda amount, key: request(key=key, transaction=tx()))
    for key in ("k1", "k2"):
        for row in ledger:
            assert _window_sum(ledger, f"rate:key:{key}", row.window_start) <= 3
    allowed = sum(1 for _, _, d in decisions if d.allowed)
    assert allowed == len(ledger)


@settings(max_examples=100, deadline=None)
@given(arrivals)
def test_grant_budget_is_never_overspent(arrivals):
    grant = Grant(
        "g",
        "p1",
        "scope",
        "acme",
        frozenset({"sign_transaction"}),
        max_uses=5,
        value_budgets={"native": LIMIT},
    )
    policies = PolicySet((grant,))
    ledger, _ = _run(policies, arrivals, lambda amount, key: request(key=key, transaction=tx(value=amount)))
    assert sum(r.amount for r in ledger if r.limit_key == "grant:g:spend:native") <= LIMIT
    assert sum(r.amount for r in ledger if r.limit_key == "grant:g:uses") <= 5
