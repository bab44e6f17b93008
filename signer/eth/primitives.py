"""Ethereum value primitives: keccak, strict parsing of JSON quantities, hex and addresses, EIP-55.

Every JSON value that reaches a signature passes through one of these parsers, so there is exactly one
canonical form for an integer (a Python ``int``), a byte string (``bytes``) and an address (EIP-55
checksummed ``str``) before policy sees it. Parsers raise ``InvalidRequest`` with a stable code and the
offending ``field``; messages never echo the caller's value (it may be huge or carry control bytes).
"""

from __future__ import annotations

import re
from typing import Any, Final

import coincurve
from eth_hash.auto import keccak as _keccak

from signer.errors import IntegrityError, InvalidRequest

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N: Final = SECP256K1_N // 2

UINT64_MAX: Final = 2**64 - 1
UINT256_MAX: Final = 2**256 - 1

_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")
_DEC_DIGITS = re.compile(r"[0-9]+")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
# 2**256 has 78 decimal digits and 65 hex digits: anything longer (after leading zeros) is out of
# range, and refusing it before int() keeps a megabyte-long digit string from costing quadratic time.
_MAX_DEC_DIGITS = 78
_MAX_HEX_DIGITS = 64


def keccak256(data: bytes) -> bytes:
    return bytes(_keccak(data))


def invalid(code: str, field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, code=code, field=field)


def parse_quantity(value: Any, field: str, *, maximum: int = UINT256_MAX) -> int:
    """An unsigned integer from a JSON int, a ``0x`` hex string or a decimal string.

    Hex input may carry leading zeros (some clients pad); the result is a plain ``int`` either way.
    Bools and floats are refused even when integral: ``1.0`` and ``true`` are not amounts.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(
            "invalid_field", field, f"{field} must be an integer, a 0x hex string or a decimal string"
        )
    if isinstance(value, int):
        number = value
    else:
        text = value
        negative = text.startswith("-")
        if negative:
            text = text[1:]
        if text[:2] in ("0x", "0X"):
            digits = text[2:]
            if text[:2] != "0x" or not digits or not _HEX_DIGITS.fullmatch(digits):
                raise invalid("invalid_hex", field, f"{field} is not a valid 0x hex quantity")
            digits = digits.lstrip("0")
            if len(digits) > _MAX_HEX_DIGITS:
                raise invalid("value_out_of_range", field, f"{field} is out of range")
            number = int(digits, 16) if digits else 0
        else:
            if not _DEC_DIGITS.fullmatch(text):
                raise invalid(
                    "invalid_field", field, f"{field} must be an integer, a 0x hex string or a decimal string"
                )
            digits = text.lstrip("0")
            if len(digits) > _MAX_DEC_DIGITS:
                raise invalid("value_out_of_range", field, f"{field} is out of range")
            number = int(digits) if digits else 0
        if negative:
            # Even "-0" is refused: a sign on an unsigned field means the caller computed something wrong.
            raise invalid("value_out_of_range", field, f"{field} must not be negative")
    if number < 0 or number > maximum:
        raise invalid("value_out_of_range", field, f"{field} is out of range")
    return number


def parse_hex_bytes(value: Any, field: str, *, length: int | None = None) -> bytes:
    """Bytes from a ``0x``-prefixed hex string with an even number of digits (``"0x"`` is empty)."""
    if not isinstance(value, str):
        raise invalid("invalid_field", field, f"{field} must be a 0x hex string")
    digits = value[2:]
    if value[:2] != "0x" or len(digits) % 2 or not _HEX_DIGITS.fullmatch(digits):
        raise invalid("invalid_hex", field, f"{field} must be 0x followed by an even number of hex digits")
    data = bytes.fromhex(digits)
    if length is not None and len(data) != length:
        raise invalid("invalid_hex", field, f"{field} must be exactly {length} bytes")
    return data


def to_checksum_address(address: bytes) -> str:
    """EIP-55: upper-case each hex letter whose nibble in keccak(lower-case hex) is 8 or more."""
    if len(address) != 20:
        raise ValueError("an address is 20 bytes")
    lower = address.hex()
    hashed = keccak256(lower.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if h >= "8" else c for c, h in zip(lower, hashed[:40], strict=True))


def parse_address(value: Any, field: str) -> str:
    """A 20-byte address as ``0x`` + 40 hex digits, returned EIP-55 checksummed.

    All-lower and all-upper input carry no checksum and are accepted; mixed case is a checksum and
    must be right, because a mistyped mixed-case address is exactly what EIP-55 exists to catch.
    """
    if not isinstance(value, str):
        raise invalid("invalid_field", field, f"{field} must be an address string")
    if not _ADDRESS.fullmatch(value):
        raise invalid("invalid_address", field, f"{field} must be 0x followed by 40 hex digits")
    checksummed = to_checksum_address(bytes.fromhex(value[2:]))
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != checksummed:
        raise invalid("invalid_address", field, f"{field} has an invalid EIP-55 checksum")
    return checksummed


def address_bytes(address: str) -> bytes:
    """The 20 bytes of an address already returned by ``parse_address``."""
    return bytes.fromhex(address[2:])


def validate_public_key(public_key: bytes) -> None:
    """A 65-byte uncompressed SEC1 secp256k1 point that lies on the curve, or ``IntegrityError``.

    Public keys come from our own key registry, so a bad one is an integrity failure, not a user error.
    """
    if not isinstance(public_key, bytes) or len(public_key) != 65 or public_key[0] != 0x04:
        raise IntegrityError("Public key must be a 65-byte uncompressed point", code="invalid_public_key")
    try:
        coincurve.PublicKey(public_key)
    except ValueError:
        raise IntegrityError("Public key is not on the secp256k1 curve", code="invalid_public_key") from None


def address_from_public_key(public_key: bytes) -> str:
    """The EIP-55 address of a 65-byte uncompressed secp256k1 public key."""
    validate_public_key(public_key)
    return to_checksum_address(keccak256(public_key[1:])[12:])
