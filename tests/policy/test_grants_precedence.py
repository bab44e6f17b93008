"""Grant precedence: within one subject the most specific grant about the resource decides (the
resource itself, then deeper scopes; no-access wins a tie); across subjects the answers are unioned.
Checked against a model written from that sentence, over random grant sets and paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import Effect, Grant, GrantRequest, PolicyInputError, evaluate_grants, grants_reach

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OPS = ("sign_transaction", "sign_message")
SEGMENTS = ("acme", "payments", "prod", "ops")
SUBJECTS = (("principal", "p1"), ("principal", "p2"), ("group", "dev"), ("group", "oncall"))
KEYS = ("k1", "k2")


def allow(gid, subject, rtype, rid, ops, **kw):
    return Grant(gid, subject[1], rtype, rid, frozenset(ops), subject_type=subject[0], **kw)


def no_access(gid, subject, rtype, rid, **kw):
    return Grant(gid, subject[1], rtype, rid, frozenset(), subject_type=subject[0], no_access=True, **kw)


DEV = ("group", "dev")


def test_the_issue_example_developers_read_acme_except_payments_prod():
    grants = [
        allow("g1", DEV, "scope", "acme", ["sign_transaction"]),
        no_access("g2", DEV, "scope", "acme/payments/prod"),
    ]

    def decide(scope, principal="p1", groups=frozenset({"dev"})):
        req = GrantRequest(principal, "sign_transaction", "key", "k9", scope=scope, groups=groups)
        return evaluate_grants(req, grants, now=NOW)

    assert decide("acme/ops").effect is Effect.ALLOW
    assert decide("acme/payments").effect is Effect.ALLOW
    refused = decide("acme/payments/prod")
    assert refused.effect is Effect.DENY
    assert [(r.rule_id, r.code) for r in refused.reasons] == [("grant:g2", "no_access")]
    assert decide("acme/payments/prod/databases").effect is Effect.DENY
    # The principal's own grant, or another group's, unions with the developers' answer.
    own = [*grants, allow("g3", ("principal", "p1"), "scope", "acme/payments/prod", ["sign_transaction"])]
    req = GrantRequest(
        "p1", "sign_transaction", "key", "k9", scope="acme/payments/prod", groups=frozenset({"dev"})
    )
    assert evaluate_grants(req, own, now=NOW).effect is Effect.ALLOW
    # A narrower allow for the same group under its no-access reopens that part only.
    reopened = [*grants, allow("g4", DEV, "scope", "acme/payments/prod/ci", ["sign_transaction"])]
    req = GrantRequest(
        "p1", "sign_transaction", "key", "k9", scope="acme/payments/prod/ci", groups=frozenset({"dev"})
    )
    assert evaluate_grants(req, reopened, now=NOW).effect is Effect.ALLOW
    assert not grants_reach(
        grants,
        principal_id="p1",
        groups=frozenset({"dev"}),
        resource_type="key",
        resource_id="k9",
        scope="acme/payments/prod",
    )
    assert grants_reach(
        grants,
        principal_id="p1",
        groups=frozenset({"dev"}),
        resource_type="key",
        resource_id="k9",
        scope="acme/ops",
    )


def test_a_grant_on_the_key_itself_beats_a_no_access_on_its_scope_and_loses_a_tie():
    on_key = allow("g1", DEV, "key", "k1", ["sign_message"])
    closed = no_access("g2", DEV, "scope", "acme")
    req = GrantRequest("p1", "sign_message", "key", "k1", scope="acme", groups=frozenset({"dev"}))
    assert evaluate_grants(req, [closed, on_key], now=NOW).effect is Effect.ALLOW
    tie = no_access("g3", DEV, "key", "k1")
    assert evaluate_grants(req, [on_key, closed, tie], now=NOW).effect is Effect.DENY


def test_expired_or_revoked_no_access_hides_nothing():
    grants = [
        allow("g1", DEV, "scope", "acme", ["sign_message"]),
        no_access("g2", DEV, "scope", "acme/payments", expires_at=NOW),
        no_access("g3", DEV, "scope", "acme/payments", revoked=True),
    ]
    req = GrantRequest("p1", "sign_message", "key", "k1", scope="acme/payments", groups=frozenset({"dev"}))
    assert evaluate_grants(req, grants, now=NOW).effect is Effect.ALLOW
    assert grants_reach(
        grants,
        principal_id="p1",
        groups=frozenset({"dev"}),
        resource_type="key",
        resource_id="k1",
        scope="acme/payments",
        now=NOW,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operations": frozenset({"sign_message"})},
        {"operations": frozenset(), "max_uses": 1},
        {"operations": frozenset(), "value_budgets": {"native": 1}},
    ],
)
def test_a_no_access_grant_lists_no_operations_and_no_limits(kwargs):
    with pytest.raises(PolicyInputError):
        Grant("g1", "p1", "scope", "acme", no_access=True, **kwargs)


def test_zero_operations_is_not_no_access():
    """An allow grant listing nothing covers nothing; it neither allows nor closes anything."""
    grants = [allow("g1", DEV, "scope", "acme", ["sign_message"]), allow("g2", DEV, "scope", "acme/x", [])]
    req = GrantRequest("p1", "sign_message", "key", "k1", scope="acme/x", groups=frozenset({"dev"}))
    assert evaluate_grants(req, grants, now=NOW).effect is Effect.ALLOW


# -- properties --------------------------------------------------------------------------------------

scopes = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map("/".join)
resource_ids = st.one_of(scopes.map(lambda s: ("scope", s)), st.sampled_from(KEYS).map(lambda k: ("key", k)))


@st.composite
def grant_sets(draw):
    grants = []
    for i in range(draw(st.integers(0, 10))):
        subject = draw(st.sampled_from(SUBJECTS))
        rtype, rid = draw(resource_ids)
        expires = draw(st.sampled_from([None, None, NOW, NOW + timedelta(days=1)]))
        revoked = draw(st.booleans()) and draw(st.booleans())
        if draw(st.booleans()):
            grants.append(no_access(f"g{i}", subject, rtype, rid, expires_at=expires, revoked=revoked))
        else:
            ops = draw(st.sets(st.sampled_from(OPS), min_size=1))
            grants.append(allow(f"g{i}", subject, rtype, rid, ops, expires_at=expires, revoked=revoked))
    return grants


def _model_subject_allows(grants, subject, op, key, scope):
    """The sentence, literally: among this subject's live grants about the resource that speak to the
    operation (allows listing it, every no-access), the most specific level decides; no-access wins a tie."""

    def about(g):
        if g.resource_type == "key":
            return g.resource_id == key
        return scope == g.resource_id or scope.startswith(g.resource_id + "/")

    def level(g):
        return 1000 if g.resource_type == "key" else g.resource_id.count("/") + 1

    live = [
        g
        for g in grants
        if (g.subject_type, g.principal_id) == subject
        and not g.revoked
        and (g.expires_at is None or g.expires_at > NOW)
        and about(g)
        and (g.no_access or op in g.operations)
    ]
    if not live:
        return False
    top = max(level(g) for g in live)
    return not any(g.no_access for g in live if level(g) == top)


@settings(max_examples=400, deadline=None)
@given(
    grant_sets(),
    st.sampled_from(OPS),
    st.sampled_from(KEYS),
    scopes,
    st.sets(st.sampled_from(["dev", "oncall", "other"])),
    st.sampled_from(["p1", "p2"]),
)
def test_precedence_matches_the_model(grants, op, key, scope, groups, principal):
    groups = frozenset(groups)
    subjects = [("principal", principal), *(("group", g) for g in groups)]
    expected = any(_model_subject_allows(grants, s, op, key, scope) for s in subjects)
    req = GrantRequest(principal, op, "key", key, scope=scope, groups=groups)
    decision = evaluate_grants(req, grants, now=NOW)
    assert (decision.effect is Effect.ALLOW) == expected
    # Order of the grants never changes the answer.
    assert (evaluate_grants(req, list(reversed(grants)), now=NOW).effect is Effect.ALLOW) == expected
    # The existence check reaches the resource exactly when some operation is allowed.
    reaches = any(_model_subject_allows(grants, s, o, key, scope) for s in subjects for o in OPS)
    assert (
        grants_reach(
            grants,
            principal_id=principal,
            groups=groups,
            resource_type="key",
            resource_id=key,
            scope=scope,
            now=NOW,
        )
        == reaches
    )


@settings(max_examples=200, deadline=None)
@given(grant_sets(), st.sampled_from(OPS), st.sampled_from(KEYS), scopes, st.sampled_from(SUBJECTS))
def test_group_membership_only_adds_access(grants, op, key, scope, extra):
    """Union across subjects: joining another group never takes away what the principal had."""
    before = GrantRequest("p1", op, "key", key, scope=scope, groups=frozenset({"dev"}))
    after = GrantRequest("p1", op, "key", key, scope=scope, groups=frozenset({"dev", extra[1]}))
    if evaluate_grants(before, grants, now=NOW).effect is Effect.ALLOW:
        assert evaluate_grants(after, grants, now=NOW).effect is Effect.ALLOW


@settings(max_examples=200, deadline=None)
@given(grant_sets(), st.sampled_from(OPS), st.sampled_from(KEYS), scopes, st.sampled_from(SUBJECTS), scopes)
def test_a_no_access_grant_never_adds_and_a_narrower_one_closes(grants, op, key, scope, subject, where):
    req = GrantRequest("p1", op, "key", key, scope=scope, groups=frozenset({"dev", "oncall"}))
    closed = [*grants, no_access("gx", subject, "scope", where)]
    if evaluate_grants(req, grants, now=NOW).effect is Effect.DENY:
        assert evaluate_grants(req, closed, now=NOW).effect is Effect.DENY
    # A no-access on the key itself, for every subject that could hold it, closes it entirely.
    everyone = [*grants, *(no_access(f"gk{i}", s, "key", key) for i, s in enumerate(SUBJECTS))]
    assert evaluate_grants(req, everyone, now=NOW).effect is Effect.DENY
