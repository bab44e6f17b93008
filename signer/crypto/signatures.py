"""Independent checks of signatures on the generic curves (P-256, Ed25519).

The HSM produced the signature; it is checked here before it is released, so a faulty token or a
mixed-up key handle is caught here rather than by the caller (Ed25519 approver signatures and audit
checkpoints use the same check, through ``signer.crypto.approver_signatures`` and the audit verifiers).
secp256k1 is checked by recovery in ``signer.eth``. Errors say only that a signature does not verify:
never the key, the message or the signature.

P-256 goes through ``cryptography``. Ed25519 goes through libsodium (PyNaCl), which verifies in about half
the CPU of OpenSSL's generic EVP path (about 50 against 100 µs here, on every Ed25519 signature the
service releases). libsodium is the stricter of the two, so nothing OpenSSL refused is accepted now: it
refuses S >= L (a malleated signature), an R or a public key that is not canonically encoded or of small
order, and compares the recomputed R byte for byte (cofactorless, like OpenSSL).

Parsing a public key (for P-256, checking that the point is on the curve) costs about as much as a
third of the verification itself, and the sign path checks every signature against one of a few keys:
the parsed keys are kept, keyed by their bytes, in a bounded least-recently-used cache. A key that does
not parse is never cached, so it raises every time. Public keys only: nothing secret is kept here.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from signer.errors import IntegrityError

if TYPE_CHECKING:
    from nacl.signing import VerifyKey

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# Bounded by the number of keys a process signs with; a service with more keys than this parses again.
_PARSED_KEYS = 1024
# Immutable, so one serves every check (building it cost about 1.5 µs a signature).
_ECDSA_SHA256_DIGEST = ec.ECDSA(Prehashed(hashes.SHA256()))


@functools.lru_cache(maxsize=_PARSED_KEYS)
def _p256_key(public_key: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)


@functools.cache
def _nacl_errors() -> type[Exception]:
    from nacl.exceptions import CryptoError

    return CryptoError


@functools.lru_cache(maxsize=_PARSED_KEYS)
def _ed25519_key(public_key: bytes) -> VerifyKey:
    # Imported here, not at the top: the standalone client (clients/python) ships this module for the
    # approvers' signing helpers but neither verifies nor depends on PyNaCl.
    from nacl.signing import VerifyKey

    # VerifyKey checks only the length; libsodium refuses a bad point at verification, every time.
    return VerifyKey(public_key)


def p256_der(raw_rs: bytes) -> bytes:
    if len(raw_rs) != 64:
        raise IntegrityError("the token returned a signature of the wrong size", code="signature_format")
    return encode_dss_signature(int.from_bytes(raw_rs[:32], "big"), int.from_bytes(raw_rs[32:], "big"))


def check_p256(public_key: bytes, digest: bytes, raw_rs: bytes) -> bytes:
    """Verify an r||s signature over a SHA-256 digest; returns its DER form or raises IntegrityError."""
    der = p256_der(raw_rs)
    try:
        _p256_key(bytes(public_key)).verify(der, digest, _ECDSA_SHA256_DIGEST)
    except (InvalidSignature, ValueError):
        raise IntegrityError("signature does not verify against the key", code="signature_mismatch") from None
    return der


def check_ed25519(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature over ``message``; raises IntegrityError(signature_mismatch) if not."""
    try:
        _ed25519_key(bytes(public_key)).verify(bytes(message), bytes(signature))
    except (_nacl_errors(), ValueError, TypeError):
        raise IntegrityError("signature does not verify against the key", code="signature_mismatch") from None
