"""canonical_json: one text per value, floats and NaN refused, any string round-trips losslessly."""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer.audit import (
    AuditEvent,
    Outcome,
    _canonical_text,
    canonical_json,
    format_at,
    make_event,
    parse_at,
    parse_canonical,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def test_known_answer() -> None:
    value = {"b": [1, True, None, "x"], "a": {"z": -(2**80), "y": ""}, "é": "ü\n"}
    assert canonical_json(value) == b'{"a":{"y":"","z":-1208925819614629174706176},"b":[1,true,null,"x"],' + (
        b'"\\u00e9":"\\u00fc\\n"}'
    )


def test_key_order_and_container_type_do_not_matter() -> None:
    a = {"b": 1, "a": [1, 2], "c": {"y": 1, "x": 2}}
    b = OrderedDict([("c", OrderedDict([("x", 2), ("y", 1)])), ("a", (1, 2)), ("b", 1)])
    assert canonical_json(a) == canonical_json(b)


@pytest.mark.parametrize(
    "bad",
    [
        1.0,
        {"x": 0.5},
        [float("nan")],
        {"x": float("inf")},
        {"x": -float("inf")},
        {1: "int key"},
        {("a",): 1},
        {"x": b"bytes"},
        {"x": {1, 2}},
        {"x": datetime(2026, 1, 1, tzinfo=UTC)},
        {"x": object()},
        "\ud800",
        {"x": "a\udfffb"},
        {"\udc00": 1},
    ],
)
def test_refuses_what_has_no_single_text(bad: Any) -> None:
    with pytest.raises(ValueError):
        canonical_json(bad)


def test_refuses_absurd_nesting() -> None:
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError):
        canonical_json(deep)


@pytest.mark.parametrize("leaf", ["leaf", 1, True, None])
@pytest.mark.parametrize("container", ["list", "object"])
def test_nesting_limit_is_exact_whatever_the_leaf(leaf: Any, container: str) -> None:
    # The leaf sits at depth 64 (accepted) or 65 (refused), as a plain scalar item or otherwise.
    def nest(levels: int) -> Any:
        value = leaf
        for _ in range(levels):
            value = [value] if container == "list" else {"k": value}
        return value

    assert canonical_json(nest(64)) == _canonical_text(nest(64))
    with pytest.raises(ValueError, match="nesting"):
        canonical_json(nest(65))
    with pytest.raises(ValueError, match="nesting"):
        _canonical_text(nest(65))


def test_enum_subclasses_encode_as_their_values() -> None:
    class Color(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    assert canonical_json({"c": Color.RED, "l": Level.HIGH}) == b'{"c":"red","l":3}'


def test_hostile_strings_round_trip_and_stay_on_one_ascii_line() -> None:
    hostile = [
        'line1\nforged line {"seq":1}\r\n',
        "\x1b[2J\x1b[31mred\x1b[0m",
        "\u2028\u2029\x85 separators",
        "\u202eright-to-left override",
        '"quote" \\ backslash / slash',
        "\x00\x01\x7f controls",
        "emoji \U0001f600 and astral \U00010348",
        "",
    ]
    for text in hostile:
        encoded = canonical_json({"label": text})
        assert encoded.isascii()
        assert b"\n" not in encoded and b"\r" not in encoded and b"\x1b" not in encoded
        assert json.loads(encoded) == {"label": text}
        assert parse_canonical(encoded) == {"label": text}


@given(json_values)
def test_any_json_value_round_trips_and_is_a_fixed_point(value: Any) -> None:
    encoded = canonical_json(value)
    assert json.loads(encoded) == value
    assert canonical_json(json.loads(encoded)) == encoded
    assert parse_canonical(encoded) == value


@pytest.mark.parametrize(
    "text",
    [
        '{"b":1,"a":2}',  # unsorted
        '{"a": 1}',  # whitespace
        '{"a":1.0}',  # float
        '{"a":NaN}',
        '{"a":1,"a":2}',  # duplicate key
        '{"a":"\u00e9"}',  # raw non-ASCII where an escape is canonical
        '{"a":"\\u0041"}',  # needless escape
        "[1,2]\n",
    ],
)
def test_parse_canonical_rejects_other_spellings(text: str) -> None:
    with pytest.raises(ValueError):
        parse_canonical(text)


def test_timestamps() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5)))
    text = format_at(moment)
    assert text == "2026-01-02T08:04:05.000006Z"
    assert parse_at(text) == moment
    assert parse_at("2026-01-02T08:04:05Z") == moment.replace(microsecond=0)
    assert parse_at("2026-01-02T08:04:05+00:00").tzinfo == UTC
    for bad in ["2026-01-02T08:04:05", "2026-01-02T08:04:05+01:00", "yesterday", "", " 2026-01-02T08:04:05Z"]:
        with pytest.raises(ValueError):
            parse_at(bad)
    with pytest.raises(ValueError):
        format_at(datetime(2026, 1, 1))


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.timezones(),
        allow_imaginary=False,
    )
)
def test_an_event_keeps_the_instant_its_text_names(moment: datetime) -> None:
    """``AuditEvent.of`` keeps ``at`` in UTC for the writer's record: the instant ``parse_at`` reads back
    from the event's text, or None where it leaves that to ``parse_at`` (years before 1000)."""
    event = AuditEvent.of("key.disable", at=moment, outcome=Outcome.ALLOWED, actor=None, request_id=None)
    kept = event._at
    if kept is None:
        assert len(event["at"]) != 27
    else:
        assert kept == parse_at(event["at"]) and kept.tzinfo == UTC
    assert event.with_fields(note="x")._at == kept


def test_make_event() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    event = make_event("sign.transaction", at=at, outcome="allowed", actor={"name": "r"}, key_id="key_1")
    assert event == {
        "kind": "sign.transaction",
        "at": "2026-01-02T00:00:00.000000Z",
        "request_id": None,
        "actor": {"name": "r"},
        "outcome": "allowed",
        "key_id": "key_1",
    }
    canonical_json(event)
    with pytest.raises(TypeError):
        make_event("x", at=at, outcome="allowed", **{"kind": "shadow"})
    with pytest.raises(ValueError):
        canonical_json(make_event("x", at=at, outcome="allowed", fee=0.1))


class _Level(IntEnum):
    LOW = 1


class _Mode(StrEnum):
    LIVE = "live"


ascii_heavy_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(st.characters(max_codepoint=0x7F))
    | st.text()
    | st.sampled_from(
        [_Level.LOW, _Mode.LIVE, "\x7f", "\x00\x1f", "\u2028", "\U0001f600", 2**64, -(2**63) - 1]
    ),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(
            st.text(st.characters(max_codepoint=0x7F), max_size=4) | st.text(max_size=3), inner, max_size=5
        )
    ),
    max_leaves=30,
)


@given(ascii_heavy_values)
def test_the_fast_encoder_writes_the_reference_bytes(value: Any) -> None:
    # The service writes with orjson where it can; an auditor verifies with the standard library alone.
    from signer import audit

    assert audit.orjson is not None, "orjson is a dependency of the service"
    assert canonical_json(value) == audit._canonical_text(value)


def test_an_event_shaped_like_a_signature_takes_the_fast_path_with_the_same_bytes() -> None:
    from signer import audit

    event = {
        "kind": "sign.transaction",
        "at": "2026-11-22T15:00:00.000000Z",
        "request": {"chainId": 1, "value": str(10**30), "nonce": 7, "to": "0x" + "ab" * 20},
        "decision": {"effect": _Mode.LIVE, "reasons": [{"rule_id": "grant:g1", "code": "granted"}]},
        "n": _Level.LOW,
    }
    assert canonical_json(event) == audit._canonical_text(event)


@given(
    st.datetimes(
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        )
    )
)
def test_format_at_writes_what_strftime_writes(moment: datetime) -> None:
    """The fast spelling is strftime's text for every aware moment (years before 1000 included)."""
    assert format_at(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
