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
    # Every other way to a signature or a secret value: JSON-RPC, the KMS API, resolving references.
    assert {"/v1/rpc", "/v1/kms", "/v1/secrets/resolve"} <= paths


def test_every_route_that_signs_or_releases_a_value_is_guarded() -> None:
    """Operations whose service records its own decisions (signing, approving, fetching) are exactly
    the ones that release something: each of them but a rejection is guarded."""
    from signer.http.refusals import SERVICE_AUDITED

    by_id = {op.operation_id: (op.method, op.path) for op in api.operations}
    releasing = {by_id[op] for op in SERVICE_AUDITED - {"reject"}}
    assert releasing <= HIGH_RISK, sorted(releasing - HIGH_RISK)
