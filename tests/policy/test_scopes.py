"""Scope names: validity, whole-segment containment, and "narrowest definition wins"."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import PolicyInputError, is_scope, narrowest, scope_contains


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("acme", True),
        ("acme/payments/prod", True),
        ("a.b_c-d/0", True),
        ("", False),
        ("/acme", False),
        ("acme/", False),
        ("acme//prod", False),
        ("Acme", False),
        ("-acme", False),
        ("acme/pay ments", False),
        ("/".join(["a"] * 16), True),
        ("/".join(["a"] * 17), False),
        ("a" * 63, True),
        ("a" * 64, False),
        (None, False),
    ],
)
def test_scope_validity(text, valid):
    assert is_scope(text) is valid


@pytest.mark.parametrize(
    ("outer", "inner", "contains"),
    [
        ("acme", "acme", True),
        ("acme", "acme/payments/prod", True),
        ("acme/payments", "acme/payments/prod", True),
        ("acme/pay", "acme/payments", False),  # whole segments, not string prefixes
        ("acme/payments/prod", "acme/payments", False),
        ("acme", "acmecorp", False),
        ("other", "acme/payments", False),
    ],
)
def test_containment_is_on_whole_segments(outer, inner, contains):
    assert scope_contains(outer, inner) is contains


def test_containment_refuses_invalid_scopes():
    with pytest.raises(PolicyInputError) as caught:
        scope_contains("acme/", "acme")
    assert caught.value.code == "invalid_scope"


def test_narrowest_visible_definition_wins():
    definitions = [("acme", "org"), ("acme/payments", "team"), ("acme/payments/dev", "dev"), ("other", "x")]
    assert narrowest("acme/payments/prod", definitions) == "team"
    assert narrowest("acme/payments/dev/eu", definitions) == "dev"
    assert narrowest("acme/billing", definitions) == "org"
    assert narrowest("globex", definitions) is None


def test_two_definitions_at_one_scope_are_ambiguous():
    with pytest.raises(PolicyInputError) as caught:
        narrowest("acme/payments", [("acme", 1), ("acme", 2)])
    assert caught.value.code == "ambiguous_definition"
    # ... unless a narrower one settles it.
    assert narrowest("acme/payments", [("acme", 1), ("acme", 2), ("acme/payments", 3)]) == 3


segments = st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=4)


@given(segments, segments)
def test_containment_matches_segment_prefix(outer, inner):
    assert scope_contains("/".join(outer), "/".join(inner)) == (inner[: len(outer)] == outer)
