"""Whether collected approvals satisfy the requirements a ``require_approval`` decision set.

The approvals service snapshots a decision's ``approvals`` when the request is created (so lowering a
quorum later changes nothing) and, each time an approval arrives, asks ``check_approvals`` with the
approvers it has verified: members of the group, approving the digest of this exact payload, not
revoked. This module adds the rules that do not depend on storage: the requester never counts, each
person counts once per requirement, and one person cannot fill seats in two requirements (2 of
``treasury`` and 1 of ``security`` means three different people, found by bipartite matching, so the
answer does not depend on the order approvals arrived in). A requirement past its ``expires_at`` (the
instant itself included) denies, and so does an empty list of requirements (fail closed).

``why_not_counted`` is the one rule for whether a recorded vote counts now, from the facts about its
voter as they are at this moment (``VoteStanding``): the service tallies with it, refuses a new vote with
it, and shows approvers its stable code for every vote that does not count. Only principals with the
``approver`` role count; so a vote stops counting at once when its voter is disabled, leaves the
request's groups or has the token it voted with revoked.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from policy.decision import ApprovalRequirement, Decision, Effect, Reason
from policy.windows import utc

APPROVER_ROLE: Final = "approver"

# Stable codes (in the order they are checked) for why a vote does not count, with what approvers read.
NOT_COUNTED: Final[Mapping[str, str]] = {
    "requester": "the requester never counts on its own request",
    "role_not_approver": "only principals with the approver role count",
    "principal_disabled": "the voter's principal is disabled",
    "token_revoked": "the token the vote was cast with is revoked",
    "digest_mismatch": "the vote names another payload digest",
    "not_in_group": "the voter is not in any of the request's groups",
}


@dataclass(frozen=True, slots=True)
class VoteStanding:
    """What is true now about one vote's voter: ``groups`` are the voter's groups among the request's,
    ``token_valid`` says the token it voted with exists and is not revoked."""

    voter: str
    role: str
    disabled: bool
    token_valid: bool
    digest_matches: bool
    groups: frozenset[str]


def why_not_counted(standing: VoteStanding, *, requester: str) -> str | None:
    """None when the vote counts now; otherwise the first ``NOT_COUNTED`` code that applies."""
    if standing.voter == requester:
        return "requester"
    if standing.role != APPROVER_ROLE:
        return "role_not_approver"
    if standing.disabled:
        return "principal_disabled"
    if not standing.token_valid:
        return "token_revoked"
    if not standing.digest_matches:
        return "digest_mismatch"
    if not standing.groups:
        return "not_in_group"
    return None


def _distinct_assignment_size(seats: Sequence[frozenset[str]]) -> int:
    """The most seats that can be filled with each person in at most one seat (Kuhn's algorithm)."""
    holder: dict[str, int] = {}

    def place(seat: int, visited: set[str]) -> bool:
        for person in sorted(seats[seat]):
            if person in visited:
                continue
            visited.add(person)
            if person not in holder or place(holder[person], visited):
                holder[person] = seat
                return True
        return False

    return sum(1 for seat in range(len(seats)) if place(seat, set()))


def check_approvals(
    requirements: Sequence[ApprovalRequirement],
    approvers: Mapping[str, Collection[str]],
    *,
    requester: str,
    now: datetime,
) -> Decision:
    """Allow when every requirement has its quorum of distinct eligible approvers before it expires;
    deny once any requirement has expired; otherwise still ``require_approval``, saying what is missing.
    ``approvers`` maps a group to the principal ids that approved on its behalf."""
    now = utc(now)
    if not requirements:
        # Nothing to satisfy means the caller lost the requirements; approving would fail open.
        return Decision(
            Effect.DENY,
            (Reason("approvals", "no_requirements", "there are no approval requirements to meet"),),
        )
    expired = [r for r in requirements if now >= utc(r.expires_at, "expires_at")]
    if expired:
        return Decision(
            Effect.DENY,
            tuple(
                Reason(
                    f"approval:{r.group}",
                    "approval_expired",
                    f"approvals from {r.group} were due by {r.expires_at.isoformat()}",
                )
                for r in expired
            ),
        )
    eligible = {r.group: frozenset(approvers.get(r.group, ())) - {requester} for r in requirements}
    seats = [eligible[r.group] for r in requirements for _ in range(r.quorum)]
    if _distinct_assignment_size(seats) == len(seats):
        groups = ", ".join(r.group for r in requirements)
        return Decision(
            Effect.ALLOW,
            (Reason("approvals", "approved", f"the required approvals ({groups}) are complete"),),
        )
    return Decision(
        Effect.REQUIRE_APPROVAL,
        tuple(
            Reason(
                f"approval:{r.group}",
                "approval_pending",
                f"{min(len(eligible[r.group]), r.quorum)} of {r.quorum} approvals from {r.group}"
                + ("" if len(requirements) == 1 else " (each person counts for one group only)"),
            )
            for r in requirements
        ),
        approvals=tuple(requirements),
    )
