"""EIP-7702 authorisations signed on their own: the request's three fields, the digest and the signed tuple.

An authorisation says "on chain ``chain_id`` (0: any chain), while my account's nonce is ``nonce``, run
the code of ``address`` (the delegate) as my account's". Its digest is
``keccak256(0x05 || rlp([chain_id, address, nonce]))`` (``transactions.authorization_digest``, the same
function that recovers the authorities of a type-4 transaction). ``parse_authorization`` takes the
caller's JSON strictly (``chainId``/``chain_id``, ``address``/``delegate``, ``nonce``; integers, 0x hex
or decimal strings) into one canonical ``UnsignedAuthorization``; ``signed`` turns a signature proven to
be the key's (``signatures.recoverable_signature``) into the tuple a type-4 transaction's
``authorizationList`` carries, in the spelling web3.py, ethers and eth-account accept. Pure: no key, no
I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from signer.errors import IntegrityError
from signer.eth.primitives import UINT64_MAX, UINT256_MAX, invalid, parse_address, parse_quantity
from signer.eth.signatures import RecoverableSignature
from signer.eth.transactions import authorization_digest

# Each field has one canonical spelling and one alias (the JSON-RPC habit and the snake-case one).
_FIELDS: Final = {"chainId": "chain_id", "address": "delegate", "nonce": "nonce"}


@dataclass(frozen=True, slots=True)
class UnsignedAuthorization:
    """One EIP-7702 authorisation to sign: ``address`` is the delegate (EIP-55), ``chain_id`` 0 means any
    chain, ``nonce`` is the authority's account nonce at the time the authorisation is used."""

    chain_id: int
    address: str
    nonce: int

    @property
    def digest(self) -> bytes:
        return authorization_digest(self.chain_id, self.address, self.nonce)

    def as_json(self) -> dict[str, Any]:
        """The canonical fields: integers as decimal strings (a chain id may exceed 2**53)."""
        return {"chainId": str(self.chain_id), "address": self.address, "nonce": str(self.nonce)}

    def signed(self, signature: RecoverableSignature) -> dict[str, Any]:
        """The signed tuple, as a type-4 transaction's ``authorizationList`` entry (0x quantities), for
        a signature ``recoverable_signature`` proved over this digest."""
        if signature.digest != self.digest or signature.address is None:
            raise IntegrityError(
                "the signature was not proven over this authorisation", code="signature_format"
            )
        return {
            "chainId": hex(self.chain_id),
            "address": self.address,
            "nonce": hex(self.nonce),
            "yParity": hex(signature.recovery_id),
            "r": hex(signature.r),
            "s": hex(signature.s),
        }


def parse_authorization(fields: Mapping[str, Any]) -> UnsignedAuthorization:
    """The caller's fields (exactly ``chainId``, ``address`` and ``nonce``, each also accepted under its
    alias ``chain_id``, ``delegate``, ``nonce``) as an ``UnsignedAuthorization``, or ``InvalidRequest``."""
    values: dict[str, Any] = {}
    aliases = {alias: name for name, alias in _FIELDS.items()}
    for given, value in fields.items():
        name = given if given in _FIELDS else aliases.get(given)
        if name is None:
            raise invalid(
                "invalid_field", "authorization", "an authorisation has chainId, address and nonce only"
            )
        if name in values:
            raise invalid("invalid_field", name, f"{name} is given twice")
        values[name] = value
    for name in _FIELDS:
        if values.get(name) is None:
            raise invalid("invalid_field", name, f"{name} is required")
    return UnsignedAuthorization(
        parse_quantity(values["chainId"], "chainId", maximum=UINT256_MAX),
        parse_address(values["address"], "address"),
        parse_quantity(values["nonce"], "nonce", maximum=UINT64_MAX),
    )
