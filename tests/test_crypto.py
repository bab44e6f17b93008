"""signer.crypto: the approver's message has one spelling on both sides, Ed25519 votes sign and verify,
and the webhook MAC is the documented HMAC."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signer.crypto.approver_signatures import (
    approval_message,
    decode_signature_hex,
    load_ed25519_private_key,
    sign_approval,
    verify_ed25519_approval,
)
from signer.crypto.webhook_hmac import webhook_signature
from signer.services import approvals

DIGEST = "ab" * 32


def test_the_cli_and_the_server_sign_the_same_bytes() -> None:
    assert approval_message("apr_1", "approve", DIGEST) == approvals.approval_message(
        "apr_1", "approve", DIGEST
    )
    assert approvals.approval_message("apr_1", "approve", "0x" + DIGEST.upper()) == approval_message(
        "apr_1", "approve", DIGEST
    )


def test_an_ed25519_vote_signed_by_the_cli_verifies_on_the_server() -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = load_ed25519_private_key(pem)
    assert key is not None
    signature = decode_signature_hex("0x" + sign_approval(key, "apr_1", "reject", DIGEST).upper())
    assert signature is not None
    public = private.public_key().public_bytes_raw()
    assert verify_ed25519_approval(public, approval_message("apr_1", "reject", DIGEST), signature)
    assert not verify_ed25519_approval(public, approval_message("apr_1", "approve", DIGEST), signature)
    assert not verify_ed25519_approval(b"\x00" * 3, b"m", signature)


def test_only_plain_hex_decodes_and_only_ed25519_pem_loads() -> None:
    assert decode_signature_hex("ab cd") is None
    assert decode_signature_hex("abc") is None
    assert decode_signature_hex("") is None
    assert load_ed25519_private_key(b"not a pem") is None


def test_webhook_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert webhook_signature(b"k", "1700000000", b"{}") == "sha256=" + expected
