"""The AEAD envelope that seals a secret's fields under the version's data key (AES-256-GCM).

Owns: making a fresh 32-byte data key for each version of a secret, sealing one field's value with a
random 96-bit nonce, and opening it again. The associated data binds each ciphertext to where it
belongs (secret id, version, field name, the id of the KEK that wraps the data key, and the format
version), so a ciphertext copied to another secret, version or field does not open (matrix A-04, A-05);
a wrapped data key moved to another version unwraps to the wrong key and opens nothing either (A-06).
The data key itself is wrapped and unwrapped in the token by ``signer.hsm``, never here.

It must never: keep a data key or a value beyond the call; put a value, key, nonce or tag in an
exception message (a failure is ``IntegrityError(code="secret_integrity")`` with a fixed text); read the
clock or do I/O.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from signer.errors import IntegrityError

__all__ = ["DATA_KEY_BYTES", "FORMAT_VERSION", "FieldBinding", "new_data_key", "open_field", "seal_field"]

FORMAT_VERSION = 1
DATA_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_AAD_DOMAIN = b"signer/secret-field"


@dataclass(frozen=True, slots=True)
class FieldBinding:
    """Where a sealed field belongs: what its associated data binds it to."""

    secret_id: str
    version: int
    field: str
    kek_id: str

    def associated_data(self, format_version: int = FORMAT_VERSION) -> bytes:
        return _associated_data(format_version, self.secret_id, self.version, self.field, self.kek_id)


@functools.lru_cache(maxsize=1024, typed=True)
def _associated_data(format_version: int, secret_id: str, version: int, field: str, kek_id: str) -> bytes:
    # Length-prefixed parts: no choice of names can make two bindings encode alike. Kept per binding
    # (names and ids only, nothing secret): every fetch of a field encodes the same bytes again.
    parts = [
        _AAD_DOMAIN,
        str(format_version).encode(),
        secret_id.encode("utf-8"),
        str(version).encode(),
        field.encode("utf-8"),
        kek_id.encode("utf-8"),
    ]
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def _refused() -> IntegrityError:
    return IntegrityError("a sealed secret field does not open", code="secret_integrity")


def seal_field(data_key: bytes, binding: FieldBinding, value: bytes) -> bytes:
    """format version (1 byte) || nonce (12) || AES-256-GCM ciphertext and tag of ``value``."""
    if len(data_key) != DATA_KEY_BYTES:
        raise _refused()
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(data_key).encrypt(nonce, value, binding.associated_data())
    return bytes([FORMAT_VERSION]) + nonce + sealed


def open_field(data_key: bytes, binding: FieldBinding, sealed: bytes) -> bytes:
    """The value sealed for exactly this binding; ``IntegrityError(secret_integrity)`` otherwise."""
    if len(data_key) != DATA_KEY_BYTES or len(sealed) < 1 + _NONCE_BYTES + _TAG_BYTES:
        raise _refused()
    if sealed[0] != FORMAT_VERSION:
        raise _refused()
    nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
    try:
        return AESGCM(data_key).decrypt(nonce, body, binding.associated_data(sealed[0]))
    except InvalidTag:
        raise _refused() from None
