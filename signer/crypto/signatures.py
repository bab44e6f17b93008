"""Independent checks of signatures on the generic curves (P-256, Ed25519).

The HSM produced the signature; ``cryptography`` checks it before it is released, so a faulty token or a
mixed-up key handle is caught here rather than by the caller (Ed25519 approver signatures use the same
check, through ``signer.crypto.approver_signatures``). secp256k1 is checked by recovery in ``signer.eth``.
Errors say only that a signature does not verify: never the key, the message or the signature.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from signer.errors import IntegrityError

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def p256_der(raw_rs: bytes) -> bytes:
    if len(raw_rs) != 64:
        raise IntegrityError("the token returned a signature of the wrong size", code="signature_format")
    return encode_dss_signature(int.from_bytes(raw_rs[:32], "big"), int.from_bytes(raw_rs[32:], "big"))


def check_p256(public_key: bytes, digest: bytes, raw_rs: bytes) -> bytes:
    """Verify an r||s signature over a SHA-256 digest; returns its DER form or raises IntegrityError."""
    der = p256_der(raw_rs)
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
        point.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        raise IntegrityError("signature does not verify against the key", code="signature_mismatch") from None
    return der


def check_ed25519(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature over ``message``; raises IntegrityError(signature_mismatch) if not."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise IntegrityError("signature does not verify against the key", code="signature_mismatch") from None
