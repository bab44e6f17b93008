"""The OpenAPI document's rules against the validators they describe (signer.http.models, policy_schema).

A name's pattern must admit every name ``canonical_name`` accepts and be exact on ASCII text; the number
patterns must be exact; the message encodings' patterns are the decoder's own; the policy document's
schema must name every rule kind and field the parser reads, and admit every document it accepts. The
live schemathesis run (tests/test_api_contract.py) then holds the server to the same document.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policy import parse_policy_document
from policy.names import NameKind, NameRefused, canonical_name
from policy.parsing import _KIND_FIELDS, RULE_KINDS
from signer.errors import InvalidRequest
from signer.http import patterns
from signer.http.contract import openapi
from signer.http.policy_schema import FIELD_SCHEMAS, policy_document_schema, rule_schema
from signer.http.routes import api
from signer.http.routes.common import decode_message

CORPUS = Path(__file__).parent / "policy" / "corpus"


def _matches(pattern: str, text: str) -> bool:
    # The document's dialect (ECMA-262, which jsonschema_rs follows), not Python's `$`.
    return jsonschema_rs.is_valid({"type": "string", "pattern": pattern}, text)


def _accepted(text: str, kind: NameKind) -> bool:
    try:
        canonical_name(text, kind)
    except NameRefused:
        return False
    return True


@pytest.mark.parametrize("kind", list(NameKind))
@settings(max_examples=300, derandomize=True, database=None)
@given(ascii_text=st.text(alphabet=string.printable + "\x00\x1f\x7f", max_size=12), text=st.text(max_size=12))
def test_a_name_pattern_admits_every_accepted_name_and_is_exact_on_ascii(
    kind: NameKind, ascii_text: str, text: str
) -> None:
    pattern = str(patterns.name_schema(kind)["pattern"])
    assert _accepted(ascii_text, kind) == _matches(pattern, ascii_text), ascii_text
    if _accepted(text, kind):
        assert _matches(pattern, text), text
    folded = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in ascii_text)
    if _accepted(folded, kind):  # full-width spellings fold to ASCII under NFKC
        assert _matches(pattern, folded), folded


def test_every_name_format_is_a_kind() -> None:
    assert set(patterns.NAME_FORMATS.values()) == set(NameKind)
    for name, kind in patterns.NAME_FORMATS.items():
        assert patterns.name_schema(kind)["format"] == name


@settings(max_examples=300, derandomize=True, database=None)
@given(
    value=st.integers(min_value=0, max_value=2**257) | st.integers(min_value=0, max_value=99999),
    zeros=st.integers(0, 3),
)
def test_number_patterns_are_exact(value: int, zeros: int) -> None:
    text = "0" * zeros + str(value)
    assert _matches(patterns.UINT256_PATTERN, text) == (len(text) <= 78 and value < 2**256)
    assert _matches(f"^{patterns.at_most(65535)}$", str(value)) == (value <= 65535)
    assert not _matches(f"^{patterns.at_most(65535)}$", "0" + str(value))


@settings(max_examples=300, derandomize=True, database=None)
@given(
    message=st.text(alphabet="0123456789abcdefABXx+/= \n", max_size=10),
    encoding=st.sampled_from(["hex", "base64"]),
)
def test_message_patterns_are_the_decoders(message: str, encoding: str) -> None:
    pattern = patterns.HEX_PATTERN if encoding == "hex" else patterns.BASE64_PATTERN
    try:
        decode_message(message, encoding)
        decoded = True
    except InvalidRequest:
        decoded = False
    assert decoded == _matches(pattern, message), (message, encoding)


@settings(max_examples=200, derandomize=True, database=None)
@given(
    host=st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}(\.[a-z0-9]{1,5}){0,2}", fullmatch=True),
    port=st.integers(0, 70000),
)
@example(host="0", port=0)
@example(host="hooks.example", port=0)
@example(host="hooks.example", port=1)
@example(host="hooks.example", port=65535)
@example(host="hooks.example", port=70001)  # an empty port: the default
def test_a_webhook_url_the_pattern_admits_is_well_formed(host: str, port: int) -> None:
    from signer.services.webhooks import check_url

    url = f"https://{host}:{port}/hook" if port <= 70000 else f"https://{host}:/hook"
    try:
        check_url(url)
        accepted = True
    except InvalidRequest:
        accepted = False
    assert accepted == _matches(patterns.WEBHOOK_URL_PATTERN, url), url


def test_the_policy_schema_names_every_kind_and_field_the_parser_reads() -> None:
    assert set(_KIND_FIELDS) == set(RULE_KINDS)
    for kind, (required, optional, _) in _KIND_FIELDS.items():
        schema = rule_schema(kind)
        assert set(schema["required"]) == {"id", "kind", "effect", *required}, kind
        assert set(schema["properties"]) == {
            "id",
            "kind",
            "effect",
            "description",
            "approval",
            *required,
            *optional,
        }
        assert set(schema["properties"]["effect"]["enum"]) == {e.value for e in RULE_KINDS[kind].effects}
    assert set(FIELD_SCHEMAS) == {
        f for required, optional, _ in _KIND_FIELDS.values() for f in (*required, *optional)
    }


def _documents(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        found = [data] if {"id", "version", "rules"} <= set(data) else []
        return found + [d for value in data.values() for d in _documents(value)]
    if isinstance(data, list):
        return [d for value in data for d in _documents(value)]
    return []


def test_every_document_the_parser_accepts_is_valid_against_the_schema() -> None:
    validator = jsonschema_rs.validator_for(policy_document_schema())
    documents = [
        d for path in sorted(CORPUS.glob("*.json")) for d in _documents(json.loads(path.read_text()))
    ]
    assert len(documents) >= 20
    for document in documents:
        parse_policy_document(document)
        errors = [e.message for e in validator.iter_errors(document)]
        assert not errors, (document["id"], errors[:3])


def test_the_served_request_schema_of_a_policy_is_the_parsers_shape() -> None:
    schemas = openapi(api)["components"]["schemas"]
    assert schemas["PolicyDocumentBody"] == {"title": "PolicyDocumentBody", **policy_document_schema()}
    assert re.search("1.0", openapi(api)["info"]["description"])
