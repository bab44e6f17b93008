"""Strict readers for plain data (dicts, lists, strings, ints loaded from JSON or YAML).

Each reader takes a value and the path it was found at and returns a typed, canonical value or raises
``PolicyDocumentError`` naming that path (``rules[2].max_value: must be a decimal string``). Objects
refuse unknown fields, reported by the path of the object that holds one and the fields allowed there,
never by the caller's field name (an error never repeats what it was sent); integers refuse booleans
and floats; amounts are decimal strings so that no reader on the way (YAML, JavaScript) rounds them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, TypeVar

from policy.canonical import NATIVE, UINT256_MAX, is_address, is_selector
from policy.errors import PolicyDocumentError
from policy.names import NameKind, NameRefused, canonical_name

T = TypeVar("T")

_DECIMAL_RE: Final = re.compile(r"0|[1-9][0-9]{0,77}")
_PLAIN_KEY_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def field_path(path: str, key: str) -> str:
    shown = key if _PLAIN_KEY_RE.fullmatch(key) else json.dumps(key[:64])
    return f"{path}.{shown}" if path else shown


def item_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def fail(path: str, code: str, message: str) -> PolicyDocumentError:
    return PolicyDocumentError(path, code, message)


def read_object(
    value: Any, path: str, *, required: Collection[str], optional: Collection[str] = ()
) -> Mapping[str, Any]:
    """A mapping with string keys, no key outside ``required`` and ``optional``, every required key."""
    if not isinstance(value, Mapping):
        raise fail(path, "invalid_type", "must be an object")
    allowed = set(required) | set(optional)
    for key in value:
        if not isinstance(key, str):
            raise fail(path, "invalid_type", "field names must be strings")
    if any(key not in allowed for key in value):
        where = f"in {path}" if path else "in the document"
        raise fail(path, "unknown_field", f"unknown field {where} (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in value:
            raise fail(field_path(path, key), "missing_field", "is required")
    return value


def read_list(
    value: Any, path: str, item: Callable[[Any, str], T], *, min_items: int = 0, max_items: int = 10_000
) -> list[T]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise fail(path, "invalid_type", "must be a list")
    if not min_items <= len(value) <= max_items:
        raise fail(path, "invalid_value", f"must have between {min_items} and {max_items} items")
    return [item(element, item_path(path, index)) for index, element in enumerate(value)]


def read_string(value: Any, path: str, *, max_length: int = 1000) -> str:
    if not isinstance(value, str):
        raise fail(path, "invalid_type", "must be a string")
    if len(value) > max_length:
        raise fail(path, "invalid_value", f"must be at most {max_length} characters")
    return value


def read_name(value: Any, path: str) -> str:
    """A policy id, rule id or group name: the canonical form (``policy.names``) or ``invalid_name``."""
    text = read_string(value, path, max_length=64)
    try:
        return canonical_name(text, NameKind.IDENTIFIER, max_length=64)
    except NameRefused as exc:
        raise fail(path, "invalid_name", exc.message) from None


def read_choice(value: Any, path: str, choices: Sequence[str]) -> str:
    text = read_string(value, path, max_length=64)
    if text not in choices:
        raise fail(path, "invalid_value", "must be one of " + ", ".join(choices))
    return text


def read_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise fail(path, "invalid_type", "must be true or false")
    return value


def read_int(value: Any, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, "invalid_type", "must be an integer")
    if not minimum <= value <= maximum:
        raise fail(path, "invalid_value", f"must be between {minimum} and {maximum}")
    return value


def read_decimal(value: Any, path: str) -> int:
    """A non-negative integer below 2**256 written as a decimal string without leading zeros."""
    if not isinstance(value, str) or not _DECIMAL_RE.fullmatch(value):
        raise fail(path, "invalid_type", "must be a decimal string")
    amount = int(value)
    if amount > UINT256_MAX:
        raise fail(path, "invalid_value", "must be below 2**256")
    return amount


def read_address(value: Any, path: str) -> str:
    if not is_address(value):
        raise fail(path, "invalid_value", "must be an address: 0x followed by 40 hex digits")
    return str(value).lower()


def read_selector(value: Any, path: str) -> str:
    if not is_selector(value):
        raise fail(path, "invalid_value", "must be a selector: 0x followed by 8 hex digits")
    return str(value).lower()


def read_asset(value: Any, path: str) -> str:
    if value == NATIVE:
        return NATIVE
    if not is_address(value):
        raise fail(path, "invalid_value", "must be 'native' or a token address")
    return str(value).lower()
