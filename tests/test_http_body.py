"""The strict body parser: the depth check's shortcut refuses exactly what the full scan refuses, and
``loads_strict`` as a whole answers exactly as it did before the shortcut (the previous check is kept
here as the reference)."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.http import body
from signer.http.body import MAX_DEPTH, _check_depth, loads_strict

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def reference_check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                raise InvalidRequest("JSON nests too deeply", code="malformed_json")
        else:
            depth -= 1


def _outcome(check, text: str, limit: int) -> str | None:
    try:
        check(text, limit)
    except InvalidRequest as exc:
        return f"{exc.code}: {exc}"
    return None


# Texts made of what the check looks at: brackets, quotes, escapes, and a little else.
_TEXTS = st.text(alphabet='[]{}"\\ a,:\n', max_size=80)


@settings(max_examples=3000, deadline=None)
@given(text=_TEXTS, limit=st.integers(min_value=0, max_value=8))
def test_depth_check_refuses_exactly_what_the_full_scan_refuses(text: str, limit: int) -> None:
    assert _outcome(_check_depth, text, limit) == _outcome(reference_check_depth, text, limit)


@settings(max_examples=300, deadline=None)
@given(depth=st.integers(min_value=0, max_value=3 * MAX_DEPTH), quoted=st.integers(0, 40))
def test_depth_check_at_the_default_limit(depth: int, quoted: int) -> None:
    # Brackets inside a string count for the shortcut but not for the scan: both must still agree.
    text = '{"a":"' + "[" * quoted + '","b":' + "[" * depth + "]" * depth + "}"
    assert _outcome(_check_depth, text, MAX_DEPTH) == _outcome(reference_check_depth, text, MAX_DEPTH)


def _loads_outcome(raw: bytes) -> tuple[str, object]:
    try:
        return "ok", loads_strict(raw)
    except InvalidRequest as exc:
        return "refused", (exc.code, str(exc), getattr(exc, "field", None))


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        _JSONISH.map(lambda v: json.dumps(v).encode()),
        st.text(alphabet='[]{}"\\ a1,:.-eE', max_size=60).map(str.encode),
        st.integers(min_value=0, max_value=40).map(lambda d: ("[" * d + "]" * d).encode()),
        st.just(b'{"a":1,"a":2}'),
        st.just(b'{"a":NaN}'),
        st.just(b"\xff"),
    )
)
def test_loads_strict_answers_as_with_the_full_scan(raw: bytes) -> None:
    fast = _loads_outcome(raw)
    original = body._check_depth
    body._check_depth = reference_check_depth  # type: ignore[assignment]
    try:
        full = _loads_outcome(raw)
    finally:
        body._check_depth = original
    assert fast == full
