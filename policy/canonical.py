"""Canonical forms: one spelling for every value policy compares or hashes.

Addresses are compared checksum-insensitively, so their canonical form is lower-case ``0x`` + 40 hex
digits (EIP-55 needs keccak, which the standard library lacks, and case carries no meaning for
comparison). Selectors are lower-case ``0x`` + 8 hex digits. Amounts are non-negative integers below
2**256. Canonical JSON (sorted keys, no spaces, ASCII with ``\\u`` escapes, no floats) is the project's
one JSON encoder for anything hashed or compared: a document digest covers it, so two documents that
mean the same thing hash the same, and ``signer.audit`` chains events over the very same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
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


# -- canonical JSON: the one encoder ---------------------------------------------------------------
#
# Every byte string the project hashes or compares as JSON is written here: policy document digests,
# audit events and their hash chain (``signer.audit``), approval payload digests, idempotency request
# digests. One form only: sorted keys (by code point), no insignificant whitespace, integers only,
# and ASCII output (every non-ASCII character and DEL as a ``\\uXXXX`` escape, so control characters,
# U+2028 and bidi overrides can never split, recolour or reorder an exported line). Policy documents
# stored before this encoder was the only one were written with raw UTF-8; ``legacy_utf8_digest``
# reads them (and only them) so their stored digests keep naming them.

MAX_DEPTH: Final = 64


# The types that are canonical as they are: an item of one of these is not visited on its own.
_PLAIN_SCALARS: Final = frozenset((str, int, bool, type(None)))


def check_canonical(value: Any, depth: int = 0) -> None:
    """Refuse (``PolicyInputError``) what ``canonical_json`` cannot write as exactly one text."""
    # A walk before encoding, because json.dumps would silently print floats, turn int keys into
    # strings and accept NaN: each of those gives one value two texts, which a hash cannot have.
    if depth > MAX_DEPTH:
        raise PolicyInputError("invalid_value", "canonical JSON: nesting deeper than 64 levels")
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return
    # Below, a plain scalar item is passed over without a call of its own (an audit event is mostly
    # strings, once per request); past the depth limit it is still visited, so it is refused as before.
    deeper = depth + 1
    if kind is list or kind is tuple:
        # Before the Mapping test: a list is never one, and that isinstance is an ABC's (slow) check.
        for item in value:
            if type(item) not in _PLAIN_SCALARS or deeper > MAX_DEPTH:
                check_canonical(item, deeper)
        return
    if kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str:
                raise PolicyInputError("invalid_value", "canonical JSON: object keys must be strings")
            if type(item) not in _PLAIN_SCALARS or deeper > MAX_DEPTH:
                check_canonical(item, deeper)
        return
    if isinstance(value, float):
        raise PolicyInputError(
            "invalid_value", "canonical JSON: floats are not allowed (use integers or decimal strings)"
        )
    if isinstance(value, str | int):
        # Subclasses (StrEnum, IntEnum) encode as their plain value; json.dumps handles them.
        return
    raise PolicyInputError("invalid_value", f"canonical JSON: unsupported type {kind.__name__}")


def _plain(value: Any) -> Any:
    # json.dumps only knows dict/list; other Mappings become dicts. Called after _check.
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if type(value) is list or type(value) is tuple:
        return [_plain(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    """The one byte string for ``value``: sorted keys, no whitespace, integers only, UTF-8 in its ASCII
    subset (every non-ASCII character is written as a ``\\uXXXX`` escape).

    Raises ``PolicyInputError`` (a ``ValueError``, code ``invalid_value``) for floats, NaN, non-string
    keys, unpaired surrogates, nesting beyond 64 levels and any type JSON does not have.
    """
    check_canonical(value, 0)
    plain = _plain(value)
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    if "\\ud" in text:
        # Astral characters and unpaired surrogates both print as \udXXX; only the latter cannot be
        # UTF-8, and only a strict encode tells them apart. Rare, so the common path skips it.
        try:
            json.dumps(plain, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise PolicyInputError(
                "invalid_value", "canonical JSON: string holds an unpaired surrogate"
            ) from None
    return text.encode("ascii")


def _reject_constant(name: str) -> Any:
    raise PolicyInputError("invalid_value", f"not canonical JSON: {name}")


def _reject_float(text: str) -> Any:
    raise PolicyInputError("invalid_value", "not canonical JSON: float")


def parse_canonical(data: str | bytes) -> Any:
    """Parse ``data`` and return it only if it is exactly the canonical encoding of what it holds
    (``PolicyInputError``, a ``ValueError``, otherwise)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        value = json.loads(raw, parse_float=_reject_float, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise PolicyInputError("invalid_value", "not canonical JSON: not UTF-8") from None
    except json.JSONDecodeError:
        raise PolicyInputError("invalid_value", "not canonical JSON: malformed") from None
    if canonical_json(value) != raw:
        raise PolicyInputError("invalid_value", "not canonical JSON")
    return value


def sha256_digest(value: Any) -> str:
    """``sha256:`` + hex of the canonical JSON of ``value``."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def legacy_utf8_digest(text: str, value: Any) -> str | None:
    """The digest a stored text was given when policy documents were written with raw UTF-8, or None.

    Before ``canonical_json`` was the only encoder, policy documents were stored as the same sorted,
    compact JSON but with non-ASCII characters (and DEL) raw. Such a row's stored digest is the sha256
    of that text; this returns it when ``text`` is exactly that spelling of ``value`` (and differs from
    the canonical one), so a version stored then is still named by the digest it was stored (and
    audited, and approved) under. Nothing new is ever written this way.
    """
    check_canonical(value, 0)
    legacy = json.dumps(
        _plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    if text != legacy or (text.isascii() and "\x7f" not in text):
        return None
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
