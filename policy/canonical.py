"""Canonical forms: one spelling for every value policy compares or hashes.

Addresses are compared checksum-insensitively, so their canonical form is lower-case ``0x`` + 40 hex
digits (EIP-55 needs keccak, which the standard library lacks, and case carries no meaning for
comparison). Selectors are lower-case ``0x`` + 8 hex digits. Amounts are non-negative integers below
2**256. Canonical JSON (sorted keys, no spaces, UTF-8, no floats) is what a document digest covers, so
two documents that mean the same thing hash the same.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

from policy.errors import PolicyInputError

UINT256_MAX: Final = 2**256 - 1
NATIVE: Final = "native"  # the asset name of the chain's own currency (wei); tokens are named by address

_ADDRESS_RE: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_SELECTOR_RE: Final = re.compile(r"0x[0-9a-fA-F]{8}")


def is_address(text: object) -> bool:
    return isinstance(text, str) and _ADDRESS_RE.fullmatch(text) is not None


def canonical_address(text: str) -> str:
    """``0x`` + 40 lower-case hex digits; raises ``PolicyInputError`` for anything else."""
    if not is_address(text):
        raise PolicyInputError("invalid_address", "an address must be 0x followed by 40 hex digits")
    return text.lower()


def is_selector(text: object) -> bool:
    return isinstance(text, str) and _SELECTOR_RE.fullmatch(text) is not None


def canonical_selector(text: str) -> str:
    if not is_selector(text):
        raise PolicyInputError("invalid_selector", "a selector must be 0x followed by 8 hex digits")
    return text.lower()


def canonical_asset(text: str) -> str:
    """``native`` or a token contract's canonical address."""
    return NATIVE if text == NATIVE else canonical_address(text)


def check_amount(value: int, name: str) -> int:
    # bool is an int subclass; True wei is a bug in the caller, not one wei.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise PolicyInputError("invalid_amount", f"{name} must be an integer in [0, 2**256)")
    return value


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise PolicyInputError("invalid_value", "canonical JSON carries no floats")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8; floats are refused (two spellings of one float
    would hash differently, and amounts must be exact)."""
    _refuse_floats(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_digest(value: Any) -> str:
    """``sha256:`` + hex of the canonical JSON of ``value``."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
