"""The existence check on stored grant records: a resource a no-access grant closes to a subject is not
reached through that subject, and the principal's own grants and each group's are unioned."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from signer.services.authorization import holds_any_grant
from signer.services.resources import ResourceRef
from signer.store import GrantRecord

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def record(gid: str, *, scope: str, ops: list[str], group: str | None = "dev", principal: str | None = None):
    return GrantRecord(
        id=gid,
        principal_id=principal,
        resource_type="scope",
        resource_id=scope,
        operations=ops,
        expires_at=None,
        created_by=None,
        created_at=NOW,
        group_name=None if principal else group,
        no_access=not ops,
    )


def key_at(scope: str) -> ResourceRef:
    return ResourceRef("key", "k1", scope, "active")


def test_no_access_hides_and_the_principals_own_grant_unions() -> None:
    grants = [
        record("g1", scope="acme", ops=["sign_message"]),
        record("g2", scope="acme/payments/prod", ops=[]),
    ]
    assert holds_any_grant(grants, key_at("acme/ops"))
    assert not holds_any_grant(grants, key_at("acme/payments/prod"))
    assert not holds_any_grant(grants, key_at("acme/payments/prod/db"))
    own = record("g3", scope="acme/payments", ops=["sign_message"], principal="p1")
    assert holds_any_grant([*grants, own], key_at("acme/payments/prod"))
    oncall = record("g4", scope="acme/payments/prod", ops=["sign_message"], group="oncall")
    assert holds_any_grant([*grants, oncall], key_at("acme/payments/prod"))


def test_the_records_must_be_one_principals() -> None:
    grants = [
        record("g1", scope="acme", ops=["sign_message"], principal="p1"),
        record("g2", scope="acme", ops=["sign_message"], principal="p2"),
    ]
    with pytest.raises(ValueError):
        holds_any_grant(grants, key_at("acme"))
