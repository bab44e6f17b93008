"""What an approver signs, and the Ed25519 half of signing and checking it.

An approver's vote may carry a signature that anyone can check offline with nothing but the registered
public key: over ``approval_message(approval_id, decision, digest)``. The server verifies it (Ed25519
here; secp256k1 votes are EIP-191 ``personal_sign`` messages, recovered in ``signer.eth``); the CLI signs
it with the approver's local Ed25519 key (``sign_approval``), so both sides write the message from this
one function. Nothing here echoes a key, a signature or a message in an error.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from signer.crypto.signatures import check_ed25519
from signer.errors import IntegrityError

__all__ = [
    "APPROVAL_MESSAGE_PREFIX",
    "approval_message",
    "decode_signature_hex",
    "load_ed25519_private_key",
    "sign_approval",
    "verify_ed25519_approval",
]

APPROVAL_MESSAGE_PREFIX = "signer-approval:v1:"
_HEX_DIGITS = frozenset("0123456789abcdef")


def approval_message(approval_id: str, decision: str, digest: str) -> bytes:
    """The bytes an approver signs: which request, which decision, which payload digest (``digest`` in
    its canonical spelling: 64 lower-case hex digits, no ``0x``)."""
    return f"{APPROVAL_MESSAGE_PREFIX}{approval_id}:{decision}:{digest}".encode("ascii")


def decode_signature_hex(text: str) -> bytes | None:
    """A signature's bytes from hex (``0x`` optional, any case); None unless every character is a hex
    digit and there is an even number of them (``bytes.fromhex`` would also take spaces)."""
    bare = (text[2:] if text[:2] in ("0x", "0X") else text).lower()
    if not bare or not _HEX_DIGITS.issuperset(bare) or len(bare) % 2:
        return None
    return bytes.fromhex(bare)


def verify_ed25519_approval(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Does ``signature`` verify over ``message`` with the registered Ed25519 ``public_key``?"""
    try:
        check_ed25519(public_key, message, signature)
    except IntegrityError:  # a malformed key or signature, or a mismatch: all "does not verify"
        return False
    return True


def load_ed25519_private_key(pem: bytes) -> Ed25519PrivateKey | None:
    """The approver's local Ed25519 key from an unencrypted PEM file's bytes; None for anything else."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, Ed25519PrivateKey) else None


def sign_approval(key: Ed25519PrivateKey, approval_id: str, decision: str, digest: str) -> str:
    """The vote's signature as lower-case hex, over ``approval_message``."""
    return key.sign(approval_message(approval_id, decision, digest)).hex()
