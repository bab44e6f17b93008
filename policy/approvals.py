"""Whether collected approvals satisfy the requirements a ``require_approval`` decision set.

The approvals service snapshots a decision's ``approvals`` when the request is created (so lowering a
quorum later changes nothing) and, each time an approval arrives, asks ``check_approvals`` with the
approvers it has verified: members of the group, approving the digest of this exact payload, not
revoked. This module adds the rules that do not depend on storage: the requester never counts, each
person counts once per requirement, and one person cannot fill seats in two requirements (2 of
``treasury`` and 1 of ``security`` means three different people, found by bipartite matching, so the
answer does not depend on the order approvals arrived in). A requirement past its ``expires_at`` (the
instant itself included) denies, and so does an empty list of requirements (fail closed).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from policy.decision import ApprovalRequirement, Decision, Effect, Reason
from policy.windows import utc


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
