"""Grants: may this principal perform this operation on this resource, now?

A grant names a principal, a resource and the operations it allows, with an optional expiry. Having a key
does not give anyone the right to use it: with no matching grant the answer is deny. Grants are passed in
by the caller (already filtered to the principal and resource, or not: this module checks both again).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from policy.decision import Decision, Effect, Reason

OPERATIONS = frozenset({"sign_transaction", "sign_message", "sign_typed_data", "sign_raw"})


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    principal_id: str
    resource_type: str
    resource_id: str
    operations: frozenset[str]
    expires_at: datetime | None = None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class GrantRequest:
    principal_id: str
    operation: str
    resource_type: str
    resource_id: str


def evaluate_grants(request: GrantRequest, grants: Iterable[Grant], *, now: datetime) -> Decision:
    """Allow when one live grant covers the principal, resource and operation; otherwise deny."""
    if request.operation not in OPERATIONS:
        return Decision(
            Effect.DENY,
            (Reason("grants", "unknown_operation", f"operation {request.operation!r} is not known"),),
        )
    expired: list[str] = []
    for grant in grants:
        if grant.revoked or grant.principal_id != request.principal_id:
            continue
        if grant.resource_type != request.resource_type or grant.resource_id != request.resource_id:
            continue
        if request.operation not in grant.operations:
            continue
        if grant.expires_at is not None and now >= grant.expires_at:
            expired.append(grant.grant_id)
            continue
        return Decision(
            Effect.ALLOW,
            (
                Reason(
                    f"grant:{grant.grant_id}", "granted", f"grant {grant.grant_id} allows {request.operation}"
                ),
            ),
        )
    if expired:
        return Decision(
            Effect.DENY,
            tuple(Reason(f"grant:{gid}", "grant_expired", f"grant {gid} has expired") for gid in expired),
        )
    return Decision(
        Effect.DENY,
        (
            Reason(
                "grants",
                "operation_not_granted",
                f"no grant allows {request.operation} on this {request.resource_type}",
            ),
        ),
    )
