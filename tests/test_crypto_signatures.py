"""The independent signature checks (signer.crypto.signatures): what they accept and what they refuse.

Ed25519 is checked by libsodium; these cases pin that it accepts what OpenSSL (``cryptography``) accepts
for honest signatures and refuses the forgeries and malleations OpenSSL refuses, non-canonical S first.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from signer.crypto.signatures import check_ed25519, check_p256
from signer.errors import IntegrityError

# The order of the Ed25519 group (the prime subgroup), L.
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def _ed25519() -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key().public_bytes(*RAW)


def _openssl_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _refused(public: bytes, message: bytes, signature: bytes) -> None:
    with pytest.raises(IntegrityError) as caught:
        check_ed25519(public, message, signature)
    assert caught.value.code == "signature_mismatch"
    assert str(caught.value).endswith("signature does not verify against the key")


@pytest.mark.parametrize("message", [b"", b"x", b"hello" * 1000, bytes(range(256))])
def test_an_honest_ed25519_signature_verifies(message: bytes) -> None:
    private, public = _ed25519()
    signature = private.sign(message)
    check_ed25519(public, message, signature)
    check_ed25519(bytearray(public), memoryview(message), bytearray(signature))  # the types callers pass


def test_ed25519_refuses_a_flipped_bit_anywhere_a_wrong_key_and_a_wrong_message() -> None:
    private, public = _ed25519()
    message = b"the message"
    signature = private.sign(message)
    for index in range(64):
        bad = bytearray(signature)
        bad[index] ^= 1 << (index % 8)
        _refused(public, message, bytes(bad))
    _refused(_ed25519()[1], message, signature)
    _refused(public, message + b".", signature)
    _refused(public, message[:-1], signature)


def test_ed25519_refuses_a_malleated_s_that_openssl_refuses_too() -> None:
    # S + L is the same scalar mod L, so a verifier that does not insist on S < L accepts it.
    private, public = _ed25519()
    message = b"pay 1 to bob"
    signature = private.sign(message)
    s = int.from_bytes(signature[32:], "little")
    for malleated_s in (s + ED25519_ORDER, s + 2 * ED25519_ORDER):
        if malleated_s >= 2**256:
            continue
        forged = signature[:32] + malleated_s.to_bytes(32, "little")
        assert not _openssl_accepts(public, message, forged)
        _refused(public, message, forged)


def test_ed25519_refuses_wrong_sizes_and_small_order_or_non_canonical_keys() -> None:
    private, public = _ed25519()
    message = b"m"
    signature = private.sign(message)
    _refused(public, message, signature[:63])
    _refused(public, message, signature + b"\x00")
    _refused(public, message, b"")
    _refused(public[:31], message, signature)
    _refused(public + b"\x00", message, signature)
    identity = (1).to_bytes(32, "little")  # the neutral point: every signature "verifies" cofactored
    _refused(identity, message, identity + bytes(32))
    non_canonical_identity = (2**255 - 19 + 1).to_bytes(32, "little")  # y = p + 1 encodes y = 1 again
    _refused(non_canonical_identity, message, identity + bytes(32))
    # The public key's y coordinate with the sign bit flipped: a different (negated) key.
    negated = bytearray(public)
    negated[31] ^= 0x80
    _refused(bytes(negated), message, signature)


def test_ed25519_agrees_with_openssl_on_random_junk() -> None:
    public = _ed25519()[1]
    message = b"junk"
    for seed in range(200):
        junk = hashlib.sha512(seed.to_bytes(4, "big")).digest()
        assert not _openssl_accepts(public, message, junk)
        _refused(public, message, junk)


def test_p256_checks_and_returns_der() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    digest = hashlib.sha256(b"m").digest()
    der = private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert decode_dss_signature(check_p256(public, digest, raw)) == (r, s)
    with pytest.raises(IntegrityError):
        check_p256(public, hashlib.sha256(b"n").digest(), raw)
    with pytest.raises(IntegrityError):
        check_p256(public, digest, raw[:63])
