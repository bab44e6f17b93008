"""Ethereum value primitives: keccak, strict parsing of JSON quantities, hex and addresses, EIP-55.

Every JSON value that reaches a signature passes through one of these parsers, so there is exactly one
canonical form for an integer (a Python ``int``), a byte string (``bytes``) and an address (EIP-55
checksummed ``str``) before policy sees it. Parsers raise ``InvalidRequest`` with a stable code and the
offending ``field``; messages never echo the caller's value (it may be huge or carry control bytes).

Two bounded LRU caches sit on the signing path, because one key signs for the same few addresses
again and again: EIP-55 checksums (20 address bytes to their checksummed text) and the checked public
key (65 bytes to the address it derives). Both hold only public data that the request already shows,
each entry is a pure function of its key computed here (nothing a caller supplies is stored as a
result), failures are never cached (a bad key raises every time), and only exact ``bytes`` are used
as keys, so a subclass with its own equality cannot answer for another value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Final

import coincurve
from Crypto.Hash import keccak as _keccak

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


def _preimage(data: bytes) -> bytes:
    # What eth_hash accepted (bytes and bytearray, nothing else) stays the contract.
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"keccak256 hashes bytes or bytearray, not {type(data).__name__}")
    return bytes(data)


def _pycryptodome_keccak256(data: bytes) -> bytes:
    if type(data) is not bytes:
        data = _preimage(data)
    return _keccak.new(digest_bits=256, data=data).digest()


def _raw_keccak256() -> Callable[[bytes], bytes] | None:
    """pycryptodome's C Keccak called directly through cffi, or None where that is not available.

    Every keccak on the signing path is over a few hundred bytes at most, where the hash object's
    Python set-up (a smart pointer, a buffer, three wrapper calls) costs more than the permutation;
    calling the same C functions with the same arguments as ``Keccak_Hash`` halves the time. The
    names are pycryptodome internals, so anything unexpected falls back to its public API.
    """
    try:
        from Crypto.Util import _raw_api

        lib = _keccak._raw_keccak_lib  # type: ignore[attr-defined]
        ffi = _raw_api.ffi
        if _raw_api.backend != "cffi":
            return None
    except (AttributeError, ImportError):
        return None
    new, buffer = ffi.new, ffi.buffer
    init, absorb, digest, destroy = lib.keccak_init, lib.keccak_absorb, lib.keccak_digest, lib.keccak_destroy
    # Resolved once: ffi.new parses a type given as text on every call.
    state_holder, digest_buffer = ffi.typeof("void **"), ffi.typeof("uint8_t[32]")

    def keccak256(data: bytes) -> bytes:
        if type(data) is not bytes:
            data = _preimage(data)
        holder = new(state_holder)
        # capacity 64 bytes and 24 rounds: Keccak-256; padding 0x01 is original Keccak, not SHA-3's 0x06.
        if init(holder, 64, 24):
            raise MemoryError("keccak_init failed")
        state = holder[0]
        try:
            out = new(digest_buffer)
            if absorb(state, data, len(data)) or digest(state, out, 32, 0x01):
                raise ValueError("keccak failed")
        finally:
            destroy(state)
        result: bytes = buffer(out)[:]
        return result

    return keccak256


def _choose_keccak256() -> Callable[[bytes], bytes]:
    fast = _raw_keccak256()
    # Known answers (empty input, and one longer than the 136-byte rate) decide whether the direct
    # path is trusted; a mismatch means a pycryptodome we do not know, so use its public API.
    known = {
        b"": "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470",
        b"\xab" * 200: _pycryptodome_keccak256(b"\xab" * 200).hex(),
    }
    try:
        trusted = fast is not None and all(fast(data).hex() == answer for data, answer in known.items())
    except Exception:  # noqa: BLE001 - any failure of the internal path means: do not use it
        trusted = False
    return fast if trusted and fast is not None else _pycryptodome_keccak256


keccak256: Final[Callable[[bytes], bytes]] = _choose_keccak256()


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


# 0x20 in each of 40 bytes: the ASCII case bit, one per hex digit of an address.
_CASE_BITS: Final = int.from_bytes(b"\x20" * 40, "big")


def _checksum(address: bytes) -> str:
    """EIP-55: upper-case each hex letter whose nibble in keccak(lower-case hex) is 8 or more."""
    lower = address.hex().encode("ascii")
    hashed = keccak256(lower)[:20].hex().encode("ascii")
    # All 40 characters at once, as one integer, instead of a Python loop over them (it was half the
    # cost). In ASCII hex, a digit's hash character is 8 or more exactly when it is '8', '9' (bit 3)
    # or a letter (bit 6); the address character is a letter exactly when bit 6 is set, and a letter
    # is upper-cased by clearing bit 5. Each shift moves a bit within its own byte before the mask.
    text = int.from_bytes(lower, "big")
    digest = int.from_bytes(hashed, "big")
    upper = ((digest >> 1) | (digest << 2)) & (text >> 1) & _CASE_BITS
    return "0x" + (text - upper).to_bytes(40, "big").decode("ascii")


_cached_checksum = functools.lru_cache(maxsize=4096)(_checksum)


def to_checksum_address(address: bytes) -> str:
    """EIP-55: upper-case each hex letter whose nibble in keccak(lower-case hex) is 8 or more."""
    if len(address) != 20:
        raise ValueError("an address is 20 bytes")
    if type(address) is bytes:
        return _cached_checksum(address)
    return _checksum(address)


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
    public_key_address(public_key)


def _derive_address(public_key: bytes) -> str:
    try:
        coincurve.PublicKey(public_key)
    except ValueError:
        raise IntegrityError("Public key is not on the secp256k1 curve", code="invalid_public_key") from None
    return _checksum(keccak256(public_key[1:])[12:])


# A service signs with a handful of keys; each request re-checked its key's curve point and re-derived
# its address (two keccaks). Only keys that passed are cached, so a bad one raises every time.
_cached_address = functools.lru_cache(maxsize=1024)(_derive_address)


def public_key_address(public_key: bytes) -> str:
    """``validate_public_key`` and the EIP-55 address of the key, in one (memoised) step."""
    if not isinstance(public_key, bytes) or len(public_key) != 65 or public_key[0] != 0x04:
        raise IntegrityError("Public key must be a 65-byte uncompressed point", code="invalid_public_key")
    if type(public_key) is bytes:
        return _cached_address(public_key)
    return _derive_address(bytes(public_key))


def address_from_public_key(public_key: bytes) -> str:
    """The EIP-55 address of a 65-byte uncompressed secp256k1 public key."""
    return public_key_address(public_key)
