"""Counting approvals: quorum of distinct people, never the requester, one seat per person across
groups, and expiry at the instant itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import NOT_COUNTED, ApprovalRequirement, Effect, VoteStanding, check_approvals, why_not_counted
from tests.policy.support import NOW

TREASURY = ApprovalRequirement("treasury", 2, NOW + timedelta(hours=1), ("cap",))
SECURITY = ApprovalRequirement("security", 1, NOW + timedelta(hours=1), ("hours",))


@pytest.mark.parametrize(
    ("requirements", "approvers", "effect", "codes"),
    [
        ([TREASURY], {}, Effect.REQUIRE_APPROVAL, ["approval_pending"]),
        ([TREASURY], {"treasury": ["ann"]}, Effect.REQUIRE_APPROVAL, ["approval_pending"]),
        ([TREASURY], {"treasury": ["ann", "ann"]}, Effect.REQUIRE_APPROVAL, ["approval_pending"]),
        ([TREASURY], {"treasury": ["ann", "requester"]}, Effect.REQUIRE_APPROVAL, ["approval_pending"]),
        ([TREASURY], {"treasury": ["ann", "bob"]}, Effect.ALLOW, ["approved"]),
        ([TREASURY], {"security": ["ann", "bob"]}, Effect.REQUIRE_APPROVAL, ["approval_pending"]),
        # Ann cannot fill a treasury seat and the security seat at once...
        (
            [TREASURY, SECURITY],
            {"treasury": ["ann", "bob"], "security": ["ann"]},
            Effect.REQUIRE_APPROVAL,
            ["approval_pending", "approval_pending"],
        ),
        # ...but the matching finds a way when one exists, whatever the order.
        (
            [SECURITY, TREASURY],
            {"treasury": ["ann", "bob", "cid"], "security": ["ann"]},
            Effect.ALLOW,
            ["approved"],
        ),
        ([TREASURY], {"treasury": ["ann", "bob"]}, Effect.ALLOW, ["approved"]),
    ],
)
def test_approval_table(requirements, approvers, effect, codes):
    decision = check_approvals(requirements, approvers, requester="requester", now=NOW)
    assert decision.effect is effect
    assert [r.code for r in decision.reasons] == codes


def test_pending_says_what_is_missing():
    decision = check_approvals([TREASURY], {"treasury": ["ann"]}, requester="r", now=NOW)
    assert decision.reasons[0].message == "1 of 2 approvals from treasury"
    assert decision.approvals == (TREASURY,)


def test_expiry_includes_the_instant():
    at_expiry = check_approvals(
        [TREASURY], {"treasury": ["ann", "bob"]}, requester="r", now=TREASURY.expires_at
    )
    assert at_expiry.effect is Effect.DENY and at_expiry.reasons[0].code == "approval_expired"
    just_before = TREASURY.expires_at - timedelta(microseconds=1)
    assert check_approvals([TREASURY], {"treasury": ["ann", "bob"]}, requester="r", now=just_before).allowed


people = st.sampled_from(["ann", "bob", "cid", "dee", "requester"])


@given(st.lists(people, max_size=6), st.lists(people, max_size=6), st.integers(1, 3), st.integers(1, 2))
def test_allow_needs_that_many_distinct_non_requesters(treasury, security, quorum_t, quorum_s):
    requirements = [
        ApprovalRequirement("treasury", quorum_t, NOW + timedelta(1), ("a",)),
        ApprovalRequirement("security", quorum_s, NOW + timedelta(1), ("b",)),
    ]
    decision = check_approvals(
        requirements, {"treasury": treasury, "security": security}, requester="requester", now=NOW
    )
    eligible_t, eligible_s = set(treasury) - {"requester"}, set(security) - {"requester"}
    if decision.allowed:
        assert len(eligible_t) >= quorum_t and len(eligible_s) >= quorum_s
        assert len(eligible_t | eligible_s) >= quorum_t + quorum_s
    elif len(eligible_t - eligible_s) >= quorum_t and len(eligible_s) >= quorum_s:
        pytest.fail("enough disjoint approvers were present")


def test_no_requirements_is_not_an_approval():
    decision = check_approvals([], {"treasury": ["ann", "bob"]}, requester="r", now=NOW)
    assert decision.effect is Effect.DENY and decision.reasons[0].code == "no_requirements"


standings = st.builds(
    VoteStanding,
    voter=st.sampled_from(["ann", "requester"]),
    role=st.sampled_from(["approver", "service", "admin", "auditor", "", "Approver"]),
    disabled=st.booleans(),
    token_valid=st.booleans(),
    digest_matches=st.booleans(),
    groups=st.frozensets(st.sampled_from(["treasury", "security"])),
)


@given(standings)
def test_a_vote_counts_only_when_every_condition_holds(standing: VoteStanding) -> None:
    """Counted iff: not the requester, the approver role (exactly), enabled, token valid, the digest
    matches and in one of the request's groups; otherwise the first failing condition's stable code."""
    why = why_not_counted(standing, requester="requester")
    failing = [
        code
        for code, holds in (
            ("requester", standing.voter != "requester"),
            ("role_not_approver", standing.role == "approver"),
            ("principal_disabled", not standing.disabled),
            ("token_revoked", standing.token_valid),
            ("digest_mismatch", standing.digest_matches),
            ("not_in_group", bool(standing.groups)),
        )
        if not holds
    ]
    assert why == (failing[0] if failing else None)
    assert list(NOT_COUNTED) == [
        "requester",
        "role_not_approver",
        "principal_disabled",
        "token_revoked",
        "digest_mismatch",
        "not_in_group",
    ]
