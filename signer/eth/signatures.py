"""Turning the HSM's raw ECDSA ``r||s`` into an Ethereum signature that provably belongs to our key.

A PKCS#11 token signs a 32-byte digest with ``CKM_ECDSA`` and returns 64 bytes, ``r||s``, with no
recovery id and, about half of the time, a high ``s`` that Ethereum rejects (EIP-2). This module
normalises ``s`` to the low half, finds the recovery id by recovering against the key's stored public
key (coincurve / libsecp256k1), and refuses (``IntegrityError``) rather than guess: a signature that
recovers to any other key never leaves here. It never sees or handles a private key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import coincurve

from signer.errors import IntegrityError
from signer.eth.primitives import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    address_from_public_key,
    keccak256,
    public_key_address,
    to_checksum_address,
)


def _check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise IntegrityError("A signing digest must be 32 bytes", code="signature_format")


@dataclass(frozen=True, slots=True)
class RecoverableSignature:
    """A canonical secp256k1 signature: ``0 < r < n``, ``0 < s <= n/2`` (EIP-2) and recovery id 0 or 1.

    Construction validates, so no instance can hold a high ``s`` or an impossible recovery id.
    ``recoverable_signature`` also records what it proved: the ``digest`` signed and the ``address``
    the signature recovers to over it. ``UnsignedTransaction.assemble`` refuses a signature proven
    over another digest and reuses the address instead of recovering again.
    """

    r: int
    s: int
    recovery_id: int
    digest: bytes | None = field(default=None, repr=False, compare=False)
    address: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.r < SECP256K1_N:
            raise IntegrityError("Signature r is out of range", code="signature_format")
        if not 0 < self.s <= SECP256K1_HALF_N:
            raise IntegrityError("Signature s is not in the low half", code="signature_format")
        if self.recovery_id not in (0, 1):
            raise IntegrityError("Recovery id must be 0 or 1", code="signature_format")

    def to_bytes(self) -> bytes:
        """65 bytes ``r||s||recovery_id`` (the libsecp256k1 compact-recoverable form)."""
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes((self.recovery_id,))


def _recover(digest: bytes, r: int, s: int, recovery_id: int) -> bytes | None:
    """The 65-byte public key that (r, s, recovery_id) recovers to over ``digest``, or None."""
    compact = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((recovery_id,))
    try:
        key = coincurve.PublicKey.from_signature_and_message(compact, digest, hasher=None)
    except ValueError:
        # r is not the x coordinate of any point, or the result is the point at infinity.
        return None
    return key.format(compressed=False)


def recoverable_signature(digest: bytes, raw_rs: bytes, public_key: bytes) -> RecoverableSignature:
    """Low-s normalise the HSM's ``r||s`` and find the recovery id that yields ``public_key``.

    Raises ``IntegrityError`` with code ``signature_format`` when ``raw_rs`` is not 64 bytes or r, s
    are out of range, and ``signature_mismatch`` when neither recovery id recovers ``public_key``
    (the token signed something else, or with another key): never a guessed ``v``.
    """
    _check_digest(digest)
    # Validates the key (IntegrityError if it is not a curve point) and gives its address, memoised:
    # it is the address this signature will be proven to recover to, or nothing is returned.
    address = public_key_address(public_key)
    if not isinstance(raw_rs, bytes) or len(raw_rs) != 64:
        raise IntegrityError("HSM signature must be exactly 64 bytes r||s", code="signature_format")
    r = int.from_bytes(raw_rs[:32], "big")
    s = int.from_bytes(raw_rs[32:], "big")
    if not 0 < r < SECP256K1_N or not 0 < s < SECP256K1_N:
        raise IntegrityError("HSM signature r or s is out of range", code="signature_format")
    if s > SECP256K1_HALF_N:
        # (r, n - s) is the same signature's other half; only the recovery id's parity would flip,
        # and we search for it below instead of deriving it, so nothing else changes.
        s = SECP256K1_N - s
    # Recovery ids 2 and 3 need x(R) >= n, probability about 2**-128: never produced in practice,
    # and if it ever happened refusing is the safe answer.
    for recovery_id in (0, 1):
        if _recover(digest, r, s, recovery_id) == public_key:
            return RecoverableSignature(r=r, s=s, recovery_id=recovery_id, digest=digest, address=address)
    raise IntegrityError("Signature does not recover to the signing key", code="signature_mismatch")


def recover_public_key(digest: bytes, signature: RecoverableSignature) -> bytes:
    """The 65-byte uncompressed public key ``signature`` recovers to over ``digest``."""
    _check_digest(digest)
    recovered = _recover(digest, signature.r, signature.s, signature.recovery_id)
    if recovered is None:
        raise IntegrityError("Signature does not recover to any key", code="signature_mismatch")
    return recovered


def recover_address(digest: bytes, signature: RecoverableSignature) -> str:
    """The EIP-55 address ``signature`` recovers to over ``digest``."""
    return to_checksum_address(keccak256(recover_public_key(digest, signature)[1:])[12:])


def message_signature_bytes(signature: RecoverableSignature) -> bytes:
    """65 bytes ``r||s||v`` with ``v = 27 + recovery_id``: the convention for EIP-191 and EIP-712
    signatures (``personal_sign``, ``eth_signTypedData_v4``); transactions never use 27/28."""
    return (
        signature.r.to_bytes(32, "big")
        + signature.s.to_bytes(32, "big")
        + bytes((27 + signature.recovery_id,))
    )


def _der_integer(value: int) -> bytes:
    # Minimal positive DER INTEGER: one extra leading zero byte when the top bit is set.
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + bytes((len(body),)) + body


def _der_signature(r: int, s: int) -> bytes:
    body = _der_integer(r) + _der_integer(s)
    return b"\x30" + bytes((len(body),)) + body


def verify_ecdsa_secp256k1(digest: bytes, signature: bytes, public_key: bytes) -> bool:
    """Independent check of a signature over a 32-byte digest, for self-tests; never raises.

    ``signature`` is either 64 bytes ``r||s`` (verified with libsecp256k1's ECDSA verify after
    low-s normalisation, which does not change validity) or 65 bytes ``r||s||v`` with v in
    {0, 1, 27, 28} (verified by recovery, so the recovery id must be right too). ``public_key`` is a
    33-byte compressed or 65-byte uncompressed point.
    """
    if not isinstance(digest, bytes) or len(digest) != 32 or not isinstance(signature, bytes):
        return False
    if not isinstance(public_key, bytes) or len(public_key) not in (33, 65):
        return False
    try:
        key = coincurve.PublicKey(public_key)
    except ValueError:
        return False
    if len(signature) not in (64, 65):
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < r < SECP256K1_N or not 0 < s < SECP256K1_N:
        return False
    if len(signature) == 65:
        v = signature[64]
        recovery_id = v - 27 if v >= 27 else v
        if recovery_id not in (0, 1):
            return False
        return _recover(digest, r, s, recovery_id) == key.format(compressed=False)
    low_s = min(s, SECP256K1_N - s)
    try:
        return bool(key.verify(_der_signature(r, low_s), digest, hasher=None))
    except ValueError:
        return False


__all__ = [
    "RecoverableSignature",
    "address_from_public_key",
    "message_signature_bytes",
    "recover_address",
    "recover_public_key",
    "recoverable_signature",
    "verify_ecdsa_secp256k1",
]
