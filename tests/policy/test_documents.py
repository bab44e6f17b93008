"""The strict policy-document parser: every rule kind, error paths, canonical form and digest."""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import RULE_KINDS, PolicyDocumentError, parse_policy_document, parse_policy_json
from policy.reading import field_path

APPROVAL = {"quorum": 2, "group": "treasury", "expires_in_seconds": 3600}
ADDRESS = "0x" + "Ab" * 20

# One valid rule of every kind (the approval variant where a kind takes it).
VALID_RULES: list[dict[str, Any]] = [
    {"id": "chains", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1, 10]},
    {"id": "to", "kind": "recipient_allowlist", "effect": "deny", "addresses": [ADDRESS]},
    {"id": "blocked", "kind": "recipient_denylist", "effect": "deny", "addresses": [ADDRESS]},
    {"id": "cap", "kind": "value_cap", "effect": "require_approval", "max_value": "5", "approval": APPROVAL},
    {"id": "usdc-cap", "kind": "value_cap", "effect": "deny", "max_value": "5", "asset": ADDRESS},
    {
        "id": "daily",
        "kind": "spend_limit",
        "effect": "deny",
        "max_value": "100",
        "window_seconds": 86_400,
        "per": "scope",
        "asset": "native",
    },
    {
        "id": "rate",
        "kind": "rate_limit",
        "effect": "deny",
        "max_requests": 10,
        "window_seconds": 60,
        "per": "key",
    },
    {"id": "calls", "kind": "selector_allowlist", "effect": "deny", "selectors": ["0xA9059CBB"]},
    {
        "id": "domains",
        "kind": "typed_data_domain_allowlist",
        "effect": "deny",
        "domains": [{"name": "Permit2", "chain_id": 1, "verifying_contract": ADDRESS}, {"version": "1"}],
    },
    {"id": "gas", "kind": "gas_cost_cap", "effect": "deny", "max_value": "1000000000000000"},
    {
        "id": "hours",
        "kind": "time_window",
        "effect": "require_approval",
        "approval": APPROVAL,
        "windows": [{"days": ["mon", "fri"], "start": "09:00", "end": "17:30"}],
    },
    {"id": "delegates", "kind": "delegate_allowlist", "effect": "allow", "delegates": [ADDRESS]},
    {"id": "raw", "kind": "raw_digest", "effect": "allow", "description": "HSM attestation digests"},
    {"id": "odd", "kind": "anomaly", "effect": "deny", "signals": ["new_source", "burst"]},
    {
        "id": "irreversible",
        "kind": "key_lifecycle",
        "effect": "require_approval",
        "approval": APPROVAL,
        "actions": ["destroy", "compromise"],
    },
]


def doc(*rules: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"id": "payments", "version": 1, "rules": list(rules), **top}


def test_every_kind_has_a_valid_example():
    assert {r["kind"] for r in VALID_RULES} == set(RULE_KINDS)


def test_a_document_with_every_kind_parses_and_round_trips():
    parsed = parse_policy_document(doc(*VALID_RULES, description="all kinds"))
    assert [r.id for r in parsed.rules] == [r["id"] for r in VALID_RULES]
    again = parse_policy_document(parsed.as_dict())
    assert again == parsed
    assert again.digest == parsed.digest
    assert parsed.digest.startswith("sha256:") and len(parsed.digest) == 7 + 64
    assert parse_policy_json(parsed.canonical_json()) == parsed


def test_canonical_form_spells_values_one_way():
    parsed = parse_policy_document(doc(*VALID_RULES))
    rules = {r["id"]: r for r in parsed.as_dict()["rules"]}
    assert rules["to"]["addresses"] == [ADDRESS.lower()]
    assert rules["calls"]["selectors"] == ["0xa9059cbb"]
    assert rules["cap"]["asset"] == "native"  # defaults are written out
    assert rules["calls"]["allow_empty_calldata"] is True
    assert rules["hours"]["windows"] == [{"days": ["mon", "fri"], "start": "09:00", "end": "17:30"}]


def test_equal_meaning_gives_equal_digest():
    a = parse_policy_document(
        doc({"id": "x", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1, 10]})
    )
    b = parse_policy_document(
        doc(
            {
                "id": "x",
                "kind": "chain_allowlist",
                "effect": "deny",
                "chain_ids": [10, 1, 10],
                "description": "",
            }
        )
    )
    c = parse_policy_document(doc({"id": "x", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1]}))
    assert a.digest == b.digest
    assert a.digest != c.digest
    d = parse_policy_document(doc(VALID_RULES[1] | {"addresses": [ADDRESS.upper().replace("0X", "0x")]}))
    e = parse_policy_document(doc(VALID_RULES[1]))
    assert d.digest == e.digest


def test_version_is_part_of_the_digest():
    one = parse_policy_document(doc(VALID_RULES[0]))
    two = parse_policy_document(doc(VALID_RULES[0], version=2))
    assert one.digest != two.digest
    assert (one.label, two.label) == ("payments@1", "payments@2")


def _rule(index: int, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID_RULES[index])
    for key, value in changes.items():
        if value is DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


DROP = object()


@pytest.mark.parametrize(
    ("data", "path", "code"),
    [
        ([], "", "invalid_type"),
        ({"version": 1, "rules": []}, "id", "missing_field"),
        (doc(owner="me"), "", "unknown_field"),
        (doc(id="Payments"), "id", "invalid_name"),
        (doc(version=0), "version", "invalid_value"),
        (doc(version="1"), "version", "invalid_type"),
        (doc(version=True), "version", "invalid_type"),
        (doc(version=1.0), "version", "invalid_type"),
        ({"id": "p", "version": 1, "rules": {}}, "rules", "invalid_type"),
        (doc("chain_allowlist"), "rules[0]", "invalid_type"),
        (doc({"id": "x", "effect": "deny"}), "rules[0].kind", "missing_field"),
        (doc(_rule(0, kind="chain_list")), "rules[0].kind", "invalid_value"),
        (doc(_rule(0, chainIds=[1])), "rules[0]", "unknown_field"),
        (doc(_rule(0, chain_ids=DROP)), "rules[0].chain_ids", "missing_field"),
        (doc(_rule(0, chain_ids=[])), "rules[0].chain_ids", "invalid_value"),
        (doc(_rule(0, chain_ids=[1, "10"])), "rules[0].chain_ids[1]", "invalid_type"),
        (doc(_rule(0, chain_ids=[1, -1])), "rules[0].chain_ids[1]", "invalid_value"),
        (doc(_rule(0, effect="allow")), "rules[0].effect", "invalid_value"),
        (doc(_rule(0, effect="permit")), "rules[0].effect", "invalid_value"),
        (doc(_rule(0, effect="require_approval")), "rules[0].approval", "missing_field"),
        (doc(_rule(0, approval=APPROVAL)), "rules[0].approval", "invalid_value"),
        (doc(_rule(3, approval={**APPROVAL, "quorum": 0})), "rules[0].approval.quorum", "invalid_value"),
        (doc(_rule(3, approval={**APPROVAL, "m": 2})), "rules[0].approval", "unknown_field"),
        (
            doc(_rule(3, approval={**APPROVAL, "expires_in_seconds": 0})),
            "rules[0].approval.expires_in_seconds",
            "invalid_value",
        ),
        (doc(_rule(3, max_value=5)), "rules[0].max_value", "invalid_type"),
        (doc(_rule(3, max_value="5.0")), "rules[0].max_value", "invalid_type"),
        (doc(_rule(3, max_value="05")), "rules[0].max_value", "invalid_type"),
        (doc(_rule(3, max_value="-5")), "rules[0].max_value", "invalid_type"),
        (doc(_rule(3, max_value="0x10")), "rules[0].max_value", "invalid_type"),
        (doc(_rule(3, max_value=str(2**256))), "rules[0].max_value", "invalid_value"),
        (doc(_rule(4, asset="usdc")), "rules[0].asset", "invalid_value"),
        (doc(_rule(1, addresses=["0x1234"])), "rules[0].addresses[0]", "invalid_value"),
        (doc(_rule(5, per="tenant")), "rules[0].per", "invalid_value"),
        (doc(_rule(5, window_seconds=0)), "rules[0].window_seconds", "invalid_value"),
        (doc(_rule(5, window_seconds=86_400.0)), "rules[0].window_seconds", "invalid_type"),
        (doc(_rule(6, max_requests=0)), "rules[0].max_requests", "invalid_value"),
        (doc(_rule(7, selectors=["a9059cbb"])), "rules[0].selectors[0]", "invalid_value"),
        (doc(_rule(7, allow_empty_calldata="yes")), "rules[0].allow_empty_calldata", "invalid_type"),
        (doc(_rule(8, domains=[{}])), "rules[0].domains[0]", "invalid_value"),
        (doc(_rule(8, domains=[{"chainId": 1}])), "rules[0].domains[0]", "unknown_field"),
        (
            doc(_rule(10, windows=[{"days": ["monday"], "start": "09:00", "end": "17:00"}])),
            "rules[0].windows[0].days[0]",
            "invalid_value",
        ),
        (
            doc(_rule(10, windows=[{"days": ["mon"], "start": "17:00", "end": "09:00"}])),
            "rules[0].windows[0].end",
            "invalid_value",
        ),
        (
            doc(_rule(10, windows=[{"days": ["mon"], "start": "9", "end": "17:00"}])),
            "rules[0].windows[0].start",
            "invalid_value",
        ),
        (
            doc(_rule(10, windows=[{"days": ["mon"], "start": "24:00", "end": "24:00"}])),
            "rules[0].windows[0].start",
            "invalid_value",
        ),
        (doc(_rule(11, effect="deny")), "rules[0].effect", "invalid_value"),
        (doc(_rule(12, max_value="1")), "rules[0]", "unknown_field"),
        (doc(VALID_RULES[0], _rule(1, id="chains")), "rules[1].id", "duplicate_rule_id"),
        (doc(_rule(0, id="grant:g1")), "rules[0].id", "invalid_name"),
        (doc(_rule(0, description=7)), "rules[0].description", "invalid_type"),
        (doc(_rule(0, **{"x" * 500: 1})), "rules[0]", "unknown_field"),
    ],
)
def test_errors_name_the_path(data, path, code):
    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_document(data)
    assert (caught.value.path, caught.value.code) == (path, code)
    assert str(caught.value).startswith(f"{path}: " if path else "")
    assert len(str(caught.value)) < 300


def test_the_message_reads_like_the_example():
    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_document(doc(VALID_RULES[0], VALID_RULES[1], _rule(3, max_value=5)))
    assert str(caught.value) == "rules[2].max_value: must be a decimal string"


@pytest.mark.parametrize(
    ("text", "path", "code"),
    [
        ('{"id": "p", "id": "q", "version": 1, "rules": []}', "", "duplicate_field"),
        ('{"id": "p", "version": 1.0, "rules": []}', "", "invalid_type"),
        ('{"id": "p", "version": NaN, "rules": []}', "", "invalid_type"),
        ('{"id": "p", "version": 1, "rules": [', "", "malformed_json"),
        (b'{"id": "\xff"}', "", "malformed_json"),
        ("[" * 33 + "]" * 33, "", "too_deep"),
    ],
)
def test_json_text_is_read_strictly(text, path, code):
    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_json(text)
    assert (caught.value.path, caught.value.code) == (path, code)


def test_deep_json_is_refused_before_the_c_scanner_can_overflow_the_stack():
    # eth-account (through py_ecc) raises the recursion limit to 100000 in the service process; with
    # that limit json.loads of this input overflows the C stack and kills the process. Refusing it first
    # keeps the parser safe whatever the limit is.
    original = sys.getrecursionlimit()
    sys.setrecursionlimit(max(original, 100_000))
    try:
        with pytest.raises(PolicyDocumentError) as caught:
            parse_policy_json("[" * 200_000 + "]" * 200_000)
    finally:
        sys.setrecursionlimit(original)
    assert caught.value.code == "too_deep"


def test_a_string_full_of_quotes_and_brackets_still_parses():
    text = json.dumps(doc(VALID_RULES[0], description='say \\"[{ and }]\\" twice: [[[[' * 20))
    assert parse_policy_json(text).description.startswith('say \\"[{')


# -- property: an unknown field never parses, wherever it is put ----------------------------------------


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


KNOWN_FIELDS = {"id", "version", "rules", "description", "asset", "allow_empty_calldata"} | _keys(VALID_RULES)


def _objects(value: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every object inside ``value`` with the path the parser reports for it."""
    found = []
    if isinstance(value, dict):
        found.append((path, value))
        for key, child in value.items():
            found += _objects(child, field_path(path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _objects(child, f"{path}[{index}]")
    return found


@given(
    st.lists(st.sampled_from(range(len(VALID_RULES))), min_size=0, max_size=5, unique=True),
    st.data(),
    st.text(min_size=1, max_size=80).filter(lambda k: k not in KNOWN_FIELDS),
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just({}), st.just([])),
)
def test_an_unknown_field_never_parses(indexes, data, key, value):
    document = doc(*(copy.deepcopy(VALID_RULES[i]) for i in indexes))
    parse_policy_document(document)  # valid before the change
    path, target = data.draw(st.sampled_from(_objects(document, "")))
    target[key] = value
    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_document(document)
    assert caught.value.code == "unknown_field"
    # Reported by the object that holds it, never by its name: the same error whatever the name was.
    assert caught.value.path == path
    del target[key]
    target["zz-some-other-field"] = value
    with pytest.raises(PolicyDocumentError) as other:
        parse_policy_document(document)
    assert str(caught.value) == str(other.value)
