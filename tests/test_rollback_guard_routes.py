"""Every route the rollback guard refuses is a route the API has: a renamed route cannot slip past it."""

from __future__ import annotations

from signer.http.rollback_guard import HIGH_RISK
from signer.http.routes import api


def test_every_guarded_route_exists() -> None:
    declared = {(op.method, op.path) for op in api.operations}
    assert HIGH_RISK <= declared, sorted(HIGH_RISK - declared)
    # Signing, approving, secret reads and grant changes are all covered.
    paths = {path for _, path in HIGH_RISK}
    assert {p for m, p in declared if m == "POST" and "/sign/" in p} <= paths
    assert {"/v1/approvals/{approval_id}/approve", "/v1/secrets/{secret_id}/fetch", "/v1/grants"} <= paths
