"""Where a document attaches: a scope, or one resource by reference (``resource_type``, ``resource_id``),
with ``key_id`` the older spelling of a key reference. A reference applies to that kind and id only (a
key and a secret sharing an id are different places), is narrower than any scope, and is named
``<type>:<id>`` in decisions."""

from __future__ import annotations

import pytest

from policy import AttachedPolicy, PolicyInputError
from tests.policy.support import document, request, rule

DOC = document(rule("burst", "rate_limit", max_requests=1, window_seconds=60, per="principal"))


def test_key_id_is_a_key_reference() -> None:
    by_id = AttachedPolicy(DOC, key_id="k1")
    by_ref = AttachedPolicy(DOC, resource_type="key", resource_id="k1")
    assert by_id == by_ref and by_ref.key_id == "k1" and by_id.attached_to == "key:k1"
    assert AttachedPolicy(DOC, key_id="k1", resource_type="key", resource_id="k1") == by_ref


def test_a_reference_applies_to_its_kind_and_id_only() -> None:
    on_secret = AttachedPolicy(DOC, resource_type="secret", resource_id="k1")
    assert on_secret.attached_to == "secret:k1" and on_secret.key_id is None
    assert on_secret.applies_to(request("read_secret", key="k1"))
    assert not on_secret.applies_to(request("sign_message", key="k1"))  # a key with the same id
    assert not on_secret.applies_to(request("read_secret", key="k2"))
    on_key = AttachedPolicy(DOC, key_id="k1")
    assert on_key.applies_to(request("sign_message", key="k1"))
    assert not on_key.applies_to(request("read_secret", key="k1"))
    assert on_secret.depth > AttachedPolicy(DOC, scope="acme/payments/prod").depth


@pytest.mark.parametrize(
    "place",
    [
        {},
        {"scope": "acme", "resource_type": "secret", "resource_id": "s1"},
        {"scope": "acme", "key_id": "k1"},
        {"resource_type": "secret"},
        {"resource_id": "s1"},
        {"resource_type": "vault", "resource_id": "s1"},
        {"resource_type": "secret", "resource_id": ""},
        {"key_id": "k1", "resource_type": "secret", "resource_id": "k1"},
        {"key_id": "k1", "resource_type": "key", "resource_id": "k2"},
    ],
)
def test_exactly_one_whole_place(place: dict[str, str]) -> None:
    with pytest.raises(PolicyInputError):
        AttachedPolicy(DOC, **place)  # type: ignore[arg-type]
