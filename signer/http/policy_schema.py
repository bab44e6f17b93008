"""The policy document's shape as JSON Schema, built from the tables the strict parser reads.

``policy.parse_policy_document`` is what validates a document; this module states the same rules for the
OpenAPI document: the kinds and their fields from the parser's own table (``_KIND_FIELDS``), the effects
each rule class takes, the limits the parser applies (``MAX_RULES``, ``MAX_WINDOW``, ...). Each field's
value schema is written once below, next to the reader it describes; a test holds the two together
(every kind, every field, and documents drawn from this schema parse). Two rules JSON Schema cannot
state are in the schema's description and in ``signer.http.contract.SEMANTIC_REFUSALS``: rule ids are
unique within a document, and a time window ends after it starts. Must never be used to validate: the
parser does that.
"""

from __future__ import annotations

from typing import Any

from policy.decision import Effect
from policy.limits import LIMIT_SUBJECTS
from policy.names import NameKind
from policy.parsing import (
    _KIND_FIELDS,
    MAX_APPROVAL_EXPIRY,
    MAX_CHAIN_ID,
    MAX_QUORUM,
    MAX_RULES,
    MAX_WINDOW,
    RULE_KINDS,
)
from policy.request import KEY_LIFECYCLE_ACTIONS
from policy.rules import ANOMALY_SIGNALS
from policy.windows import WEEKDAYS
from signer.http.patterns import at_most, name_schema

_ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
# A decimal string without leading zeros, below 2**256 (``read_decimal``).
_DECIMAL = {
    "type": "string",
    "pattern": f"^{at_most(2**256 - 1)}$",
    "description": "a decimal string (no leading zeros) below 2**256",
}
_NAME = {"type": "string", "minLength": 1, "maxLength": 64, **name_schema(NameKind.IDENTIFIER)}
_WINDOW = {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW}
_CHAIN_ID = {"type": "integer", "minimum": 0, "maximum": MAX_CHAIN_ID}
# HH:MM or HH:MM:SS, UTC; 24:00 only ends a window (``parse_time_of_day``).
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?"


def _unique_list(items: dict[str, Any], *, max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


# Each field a rule kind may carry: the schema of what its reader in policy/parsing.py accepts.
FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "chain_ids": _unique_list(_CHAIN_ID),
    "addresses": _unique_list(_ADDRESS),
    "delegates": _unique_list(_ADDRESS),
    "max_value": _DECIMAL,
    "asset": {"anyOf": [{"const": "native"}, _ADDRESS]},
    "window_seconds": _WINDOW,
    "per": {"type": "string", "enum": list(LIMIT_SUBJECTS)},
    "max_requests": {"type": "integer", "minimum": 1, "maximum": 10**9},
    "selectors": _unique_list({"type": "string", "pattern": "^0x[0-9a-fA-F]{8}$"}),
    "allow_empty_calldata": {"type": "boolean"},
    "domains": _unique_list(
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "name": {"type": "string", "maxLength": 256},
                "version": {"type": "string", "maxLength": 256},
                "chain_id": _CHAIN_ID,
                "verifying_contract": _ADDRESS,
            },
        }
    ),
    "actions": _unique_list(
        {"type": "string", "enum": list(KEY_LIFECYCLE_ACTIONS)}, max_items=len(KEY_LIFECYCLE_ACTIONS)
    ),
    "signals": _unique_list({"type": "string", "enum": list(ANOMALY_SIGNALS)}, max_items=10),
    "windows": _unique_list(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["days", "start", "end"],
            "properties": {
                "days": {"type": "array", "items": {"enum": list(WEEKDAYS)}, "minItems": 1, "maxItems": 7},
                "start": {"type": "string", "pattern": f"^{_TIME}$"},
                "end": {"type": "string", "pattern": f"^(?:{_TIME}|24:00(?::00)?)$"},
            },
        },
        max_items=100,
    ),
}

APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["quorum", "group", "expires_in_seconds"],
    "properties": {
        "quorum": {"type": "integer", "minimum": 1, "maximum": MAX_QUORUM},
        "group": _NAME,
        "expires_in_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_APPROVAL_EXPIRY},
        "rejections": {"type": "integer", "minimum": 1, "maximum": MAX_QUORUM},
        "signed": {"type": "boolean"},
    },
}


def _effect_variants(effects: frozenset[Effect]) -> list[dict[str, Any]]:
    """``approval`` is required with require_approval and refused with any other effect."""
    variants: list[dict[str, Any]] = []
    others = sorted(e.value for e in effects if e is not Effect.REQUIRE_APPROVAL)
    if others:
        variants.append({"properties": {"effect": {"enum": others}}, "not": {"required": ["approval"]}})
    if Effect.REQUIRE_APPROVAL in effects:
        variants.append(
            {"properties": {"effect": {"const": Effect.REQUIRE_APPROVAL.value}}, "required": ["approval"]}
        )
    return variants


def rule_schema(kind: str) -> dict[str, Any]:
    required, optional, _reader = _KIND_FIELDS[kind]
    effects = RULE_KINDS[kind].effects
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "kind", "effect", *required],
        "properties": {
            "id": _NAME,
            "kind": {"const": kind},
            "effect": {"type": "string", "enum": sorted(e.value for e in effects)},
            "description": {"type": "string", "maxLength": 1000},
            "approval": APPROVAL_SCHEMA,
            **{name: FIELD_SCHEMAS[name] for name in (*required, *optional)},
        },
    }
    variants = _effect_variants(effects)
    if len(variants) > 1:
        schema["oneOf"] = variants
    else:
        schema.update({k: v for k, v in variants[0].items() if k != "properties"})
    return schema


def policy_document_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document (JSON, or the same data as YAML)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "version", "rules"],
        "properties": {
            "id": _NAME,
            "version": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            "description": {"type": "string", "maxLength": 1000},
            "rules": {
                "type": "array",
                "maxItems": MAX_RULES,
                "items": {"oneOf": [rule_schema(kind) for kind in sorted(RULE_KINDS)]},
            },
        },
        "description": "A policy document, parsed strictly (numbers are integers; amounts are decimal "
        "strings). Also: rule ids are unique within the document, and a time window ends after it starts.",
    }
