"""Plain values that cross the HSM boundary: curves, generated keys and the attributes read back.

Nothing here touches ``pkcs11``; services import these names (through ``signer.hsm``) without pulling the
PKCS#11 library into their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Curve(StrEnum):
    SECP256K1 = "secp256k1"
    ED25519 = "ed25519"
    P256 = "p256"


@dataclass(frozen=True, slots=True)
class KeyAttributes:
    """Attributes read back from the token for a private key: the evidence that it cannot leave."""

    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool
    local: bool
    token: bool

    @property
    def confined(self) -> bool:
        """True when the token says the key was born inside it and can never be read out."""
        return (
            self.sensitive
            and not self.extractable
            and self.always_sensitive
            and self.never_extractable
            and self.local
            and self.token
        )

    def as_dict(self) -> dict[str, bool]:
        return {
            "CKA_SENSITIVE": self.sensitive,
            "CKA_EXTRACTABLE": self.extractable,
            "CKA_ALWAYS_SENSITIVE": self.always_sensitive,
            "CKA_NEVER_EXTRACTABLE": self.never_extractable,
            "CKA_LOCAL": self.local,
            "CKA_TOKEN": self.token,
        }


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A key pair just generated in the token.

    ``hsm_id`` is the hex of ``CKA_ID`` shared by the private and public objects. ``public_key`` is
    the 65-byte uncompressed SEC1 point (0x04||x||y) for secp256k1 and P-256, the 32 raw bytes for
    Ed25519.
    """

    hsm_id: str
    curve: Curve
    public_key: bytes
    attributes: KeyAttributes


class KeyVault(Protocol):
    """What services need from a key-holding HSM. ``signer.hsm.Hsm`` is the PKCS#11 implementation."""

    async def generate_key(self, curve: Curve, label: str) -> GeneratedKey: ...

    async def sign(self, hsm_id: str, curve: Curve, data: bytes) -> bytes: ...

    async def key_attributes(self, hsm_id: str) -> KeyAttributes: ...

    async def destroy_key(self, hsm_id: str) -> None: ...

    async def list_keys(self) -> list[tuple[str, str, Curve | None]]: ...

    async def unconfined_keys(self) -> list[str]: ...

    async def self_test(self, curve: Curve) -> tuple[bytes, bytes, bytes]: ...

    async def ping(self) -> None: ...


class KeyWrapper(Protocol):
    """What the secrets need from the token: a key-encryption key per scope, and wrapping and unwrapping
    of data keys under it (``signer.hsm.Hsm`` is the PKCS#11 implementation)."""

    async def kek_for_scope(self, scope: str) -> str: ...

    async def wrap_data_key(self, kek_id: str, data_key: bytes) -> bytes: ...

    async def unwrap_data_key(self, kek_id: str, wrapped: bytes) -> bytes: ...


class KekRotator(KeyWrapper, Protocol):
    """What a KEK rotation needs of the token: a new KEK, making it the scope's, rewrapping a data key
    from the old KEK to the new one inside the token, and destroying a retired KEK."""

    async def new_kek(self, scope: str) -> str: ...

    async def activate_kek(self, scope: str, new_id: str) -> list[str]: ...

    async def rewrap_data_key(self, old_id: str, new_id: str, wrapped: bytes) -> bytes: ...

    async def destroy_retired_kek(self, kek_id: str) -> None: ...
