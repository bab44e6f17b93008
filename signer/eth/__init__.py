"""Ethereum encoding for the signer: transactions, messages, typed data and signature recovery.

This package is the only home of ``eth_account``, ``eth_keys``, ``eth_utils``, ``eth_abi``, ``rlp``,
``eth_hash``, pycryptodome's Keccak (``Crypto.Hash.keccak``, which ``primitives.keccak256`` calls
directly) and ``coincurve`` in the service. It owns turning caller JSON (or unsigned serialised
transactions) into one canonical form and a 32-byte digest, and turning the HSM's raw ``r||s`` over
that digest into a low-s, recoverable signature proven to belong to the key. Everything here is pure
and deterministic on bytes and JSON-like values: it must never hold or generate a private key, call
the HSM, touch the database or the network, or return a signature it has not recovered to the
expected public key.

Typical use by the signing service::

    tx = parse_transaction(body["transaction"])
    rs = await hsm.sign(key.hsm_id, Curve.SECP256K1, tx.digest)
    sig = recoverable_signature(tx.digest, rs, key.public_key)   # IntegrityError if it is not ours
    signed = tx.assemble(sig)                                    # signed.sender == key.address
"""

from signer.eth.authorizations import UnsignedAuthorization, parse_authorization
from signer.eth.calldata import CALLDATA_NOT_CANONICAL, TokenCall, decode_token_call
from signer.eth.messages import TypedDataDigest, personal_message_digest, typed_data_digest
from signer.eth.permits import PERMIT_NOT_CANONICAL, Permit, decode_permits
from signer.eth.primitives import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    address_from_public_key,
    keccak256,
    parse_address,
    parse_hex_bytes,
    parse_quantity,
    to_checksum_address,
)
from signer.eth.signatures import (
    RecoverableSignature,
    message_signature_bytes,
    recover_address,
    recover_public_key,
    recoverable_signature,
    verify_ecdsa_secp256k1,
)
from signer.eth.transactions import (
    MAX_CHAIN_ID,
    SUPPORTED_TYPES,
    AccessListEntry,
    Authorization,
    SignedTransaction,
    TransactionFields,
    UnsignedTransaction,
    authorization_digest,
    decode_unsigned_transaction,
    parse_transaction,
)

__all__ = [
    "CALLDATA_NOT_CANONICAL",
    "MAX_CHAIN_ID",
    "PERMIT_NOT_CANONICAL",
    "SECP256K1_HALF_N",
    "SECP256K1_N",
    "SUPPORTED_TYPES",
    "AccessListEntry",
    "Authorization",
    "Permit",
    "RecoverableSignature",
    "SignedTransaction",
    "TokenCall",
    "TransactionFields",
    "TypedDataDigest",
    "UnsignedAuthorization",
    "UnsignedTransaction",
    "address_from_public_key",
    "authorization_digest",
    "decode_permits",
    "decode_token_call",
    "decode_unsigned_transaction",
    "keccak256",
    "message_signature_bytes",
    "parse_address",
    "parse_authorization",
    "parse_hex_bytes",
    "parse_quantity",
    "parse_transaction",
    "personal_message_digest",
    "recover_address",
    "recover_public_key",
    "recoverable_signature",
    "to_checksum_address",
    "typed_data_digest",
    "verify_ecdsa_secp256k1",
]
