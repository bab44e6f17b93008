"""Registered functions: canonical signatures, their selectors, a contract ABI's functions, and
calldata decoded against a registered signature for the approver's page.

An operator registers either one function signature (``payout(address,uint256)``) or a contract's ABI
JSON; ``parse_signature`` checks a signature is canonical Solidity ABI (types that ``eth_abi`` can
encode, no spaces, no names), ``abi_functions`` turns an ABI's ``function`` entries into canonical
signatures, and ``selector_of`` is the first four bytes of their Keccak-256. ``decode_call`` decodes
calldata strictly (the exact canonical encoding re-encodes to the same bytes) and answers None when it
does not, so a page never shows arguments the contract would read differently. Pure, no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError, ParseError
from eth_abi.grammar import parse as parse_type
from eth_abi.registry import registry

from signer.errors import InvalidRequest
from signer.eth.primitives import keccak256, to_checksum_address

_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,99}")
MAX_SIGNATURE = 1000
MAX_ABI_FUNCTIONS = 500


def _split_types(inner: str) -> list[str]:
    """Top-level comma split of a parameter list (tuples nest in parentheses)."""
    if inner == "":
        return []
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced parentheses")
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError("unbalanced parentheses")
    parts.append(inner[start:])
    return parts


def parse_signature(text: Any, field: str = "signature") -> tuple[str, list[str]]:
    """``name(type,...)`` in canonical form: its name and argument types; InvalidRequest otherwise."""
    bad = InvalidRequest(
        "signature must be a canonical Solidity function signature such as transfer(address,uint256)",
        code="invalid_signature",
        field=field,
    )
    if not isinstance(text, str) or not 3 <= len(text) <= MAX_SIGNATURE or not text.endswith(")"):
        raise bad
    name, paren, rest = text.partition("(")
    if not paren or not _NAME.fullmatch(name):
        raise bad
    try:
        types = _split_types(rest[:-1])
        for kind in types:
            parsed = parse_type(kind)
            parsed.validate()
            if parsed.to_type_str() != kind or not registry.has_encoder(kind):
                raise ValueError("not canonical")
    except (ParseError, ValueError):  # ABITypeError is a ValueError
        raise bad from None
    return name, types


def selector_of(signature: str) -> str:
    """``0x`` + the first 4 bytes of keccak256(signature), lowercase hex."""
    return "0x" + keccak256(signature.encode("ascii"))[:4].hex()


def _canonical_type(entry: Any) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ValueError("an input without a type")
    kind = str(entry["type"])
    if kind.startswith("tuple"):
        components = entry.get("components")
        if not isinstance(components, list):
            raise ValueError("a tuple without components")
        return "(" + ",".join(_canonical_type(c) for c in components) + ")" + kind[len("tuple") :]
    return kind


def abi_functions(abi: Any) -> list[str]:
    """The canonical signatures of an ABI JSON's ``function`` entries (a list, or ``{"abi": [...]}``
    as compilers write it); InvalidRequest ``invalid_abi`` when it is not one."""
    bad = InvalidRequest("abi must be a contract ABI (a list of entries)", code="invalid_abi", field="abi")
    if isinstance(abi, dict):
        abi = abi.get("abi")
    if not isinstance(abi, list):
        raise bad
    found: list[str] = []
    for entry in abi:
        if not isinstance(entry, dict) or entry.get("type", "function") != "function":
            continue
        try:
            name = entry.get("name")
            inputs = entry.get("inputs", [])
            if not isinstance(inputs, list):
                raise ValueError("inputs not a list")
            signature = f"{name}({','.join(_canonical_type(i) for i in inputs)})"
        except ValueError:
            raise bad from None
        parse_signature(signature, "abi")
        if signature not in found:
            found.append(signature)
    if not found or len(found) > MAX_ABI_FUNCTIONS:
        raise InvalidRequest(
            f"abi must hold 1 to {MAX_ABI_FUNCTIONS} functions", code="invalid_abi", field="abi"
        )
    return found


def _shown(kind: str, value: Any) -> Any:
    """A decoded value as JSON text: addresses checksummed, bytes as 0x-hex,
    integers as decimal strings, arrays and tuples element by element."""
    if kind.endswith("]"):
        inner = kind[: kind.rindex("[")]
        return [_shown(inner, v) for v in value]
    if kind.startswith("("):
        parts = _split_types(kind[1:-1])
        return [_shown(part, v) for part, v in zip(parts, value, strict=True)]
    if kind == "address":
        return to_checksum_address(bytes.fromhex(str(value)[2:]))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, bool):
        return value
    return str(value)


def decode_call(signature: str, data: bytes) -> list[dict[str, Any]] | None:
    """The arguments of ``data`` (selector included) as ``[{"type", "value"}]`` when they are exactly
    the canonical encoding for ``signature``; None when they are not (shown undecoded)."""
    _, types = parse_signature(signature)
    if data[:4].hex() != selector_of(signature)[2:]:
        return None
    body = data[4:]
    try:
        values = abi_decode(types, body, strict=True)
        if abi_encode(types, values) != body:
            return None
    except (DecodingError, EncodingError, ValueError, TypeError, OverflowError):
        return None
    return [{"type": kind, "value": _shown(kind, value)} for kind, value in zip(types, values, strict=True)]
