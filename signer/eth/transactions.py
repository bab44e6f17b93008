"""EVM transactions: strict parsing, canonical encoding, the signing digest and the signed raw bytes.

Four types are supported: legacy with EIP-155 replay protection (type 0; the chain id is required, so
a pre-EIP-155 transaction cannot be built), EIP-2930 (1), EIP-1559 (2) and EIP-7702 (4). Blob
transactions (3) are refused. A transaction enters either as a JSON object (``parse_transaction``) or
as an unsigned serialised transaction (``decode_unsigned_transaction``); both end in the same
``UnsignedTransaction``, whose ``signing_payload`` is the one canonical byte string the digest covers,
and whose ``fields`` are the decoded values policy and approvers judge. Nothing here holds a key: the
service signs ``digest`` in the HSM, makes it recoverable with ``signatures.recoverable_signature``
and calls ``assemble``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from signer.errors import IntegrityError
from signer.eth import _rlp
from signer.eth.batch import BatchCall, decode_batch
from signer.eth.calldata import TokenCall, decode_token_call, selector
from signer.eth.primitives import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    UINT64_MAX,
    UINT256_MAX,
    address_bytes,
    invalid,
    keccak256,
    parse_address,
    parse_hex_bytes,
    parse_quantity,
    to_checksum_address,
)
from signer.eth.signatures import RecoverableSignature, recover_address

TX_LEGACY: Final = 0
TX_ACCESS_LIST: Final = 1
TX_DYNAMIC_FEE: Final = 2
TX_SET_CODE: Final = 4
SUPPORTED_TYPES: Final = (TX_LEGACY, TX_ACCESS_LIST, TX_DYNAMIC_FEE, TX_SET_CODE)

# EIP-2294's bound: the largest chain id for which a legacy v = 35 + 2*chainId + 1 still fits in 64
# bits, which is what clients assume. Larger chain ids exist on no network.
MAX_CHAIN_ID: Final = (2**64 - 1) // 2 - 36

# EIP-7702 reserves 0x05 for authorisation preimages; it is neither a transaction type in use nor the
# 0x19 that starts every signed message, so an authorisation digest never equals another kind.
AUTHORIZATION_MAGIC: Final = b"\x05"

_COMMON: Final = ("type", "chainId", "nonce", "gas", "to", "value", "data")
_ALLOWED: Final[dict[int, frozenset[str]]] = {
    TX_LEGACY: frozenset((*_COMMON, "gasPrice")),
    TX_ACCESS_LIST: frozenset((*_COMMON, "gasPrice", "accessList")),
    TX_DYNAMIC_FEE: frozenset((*_COMMON, "maxFeePerGas", "maxPriorityFeePerGas", "accessList")),
    TX_SET_CODE: frozenset(
        (*_COMMON, "maxFeePerGas", "maxPriorityFeePerGas", "accessList", "authorizationList")
    ),
}
_KNOWN: Final = frozenset().union(*_ALLOWED.values())
# No defaults for what decides cost or ordering: a signer that filled in a nonce or a fee would sign
# something the caller did not write.
_REQUIRED: Final[dict[int, tuple[str, ...]]] = {
    TX_LEGACY: ("nonce", "gas", "gasPrice"),
    TX_ACCESS_LIST: ("nonce", "gas", "gasPrice"),
    TX_DYNAMIC_FEE: ("nonce", "gas", "maxFeePerGas", "maxPriorityFeePerGas"),
    TX_SET_CODE: ("nonce", "gas", "maxFeePerGas", "maxPriorityFeePerGas", "to", "authorizationList"),
}
_ACCESS_ENTRY_KEYS: Final = frozenset(("address", "storageKeys"))
_AUTHORIZATION_KEYS: Final = frozenset(("chainId", "address", "nonce", "yParity", "r", "s"))


def authorization_digest(chain_id: int, address: str | bytes, nonce: int) -> bytes:
    """EIP-7702: ``keccak256(0x05 || rlp([chain_id, address, nonce]))``; chain id 0 means "any chain"."""
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 <= chain_id <= UINT256_MAX:
        raise invalid("value_out_of_range", "chainId", "chainId is out of range")
    if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce <= UINT64_MAX:
        raise invalid("value_out_of_range", "nonce", "nonce is out of range")
    if isinstance(address, bytes):
        if len(address) != 20:
            raise invalid("invalid_address", "address", "address must be 20 bytes")
        raw_address = address
    else:
        raw_address = address_bytes(parse_address(address, "address"))
    preimage = _rlp.encode([_rlp.encode_int(chain_id), raw_address, _rlp.encode_int(nonce)])
    return keccak256(AUTHORIZATION_MAGIC + preimage)


@dataclass(frozen=True, slots=True)
class AccessListEntry:
    address: str
    storage_keys: tuple[bytes, ...]

    def as_json(self) -> dict[str, Any]:
        return {"address": self.address, "storageKeys": ["0x" + key.hex() for key in self.storage_keys]}


@dataclass(frozen=True, slots=True)
class Authorization:
    """One signed EIP-7702 authorisation carried by a type-4 transaction.

    ``address`` is the delegate whose code the authority's account will run. ``authority`` is the
    account the signature recovers to, which is the account the chain will modify, or None when the
    entry can never be valid (high s, r or s out of range, no curve point for r): the chain skips such
    an entry, and an approver should see that it is void. Arbitrary r and s still recover to *some*
    account, so an authority is only meaningful when an approver recognises it.
    """

    chain_id: int
    address: str
    nonce: int
    y_parity: int
    r: int
    s: int
    authority: str | None

    @property
    def digest(self) -> bytes:
        return authorization_digest(self.chain_id, address_bytes(self.address), self.nonce)

    def as_json(self) -> dict[str, Any]:
        return {
            "chainId": str(self.chain_id),
            "address": self.address,
            "nonce": str(self.nonce),
            "yParity": self.y_parity,
            "r": str(self.r),
            "s": str(self.s),
        }


def _make_authorization(
    chain_id: int, address: str, nonce: int, y_parity: int, r: int, s: int
) -> Authorization:
    authority: str | None = None
    # EIP-7702 voids an authorisation with a high s, exactly like a transaction (EIP-2).
    if 0 < r < SECP256K1_N and 0 < s <= SECP256K1_HALF_N and y_parity in (0, 1):
        digest = authorization_digest(chain_id, address_bytes(address), nonce)
        try:
            authority = recover_address(digest, RecoverableSignature(r=r, s=s, recovery_id=y_parity))
        except IntegrityError:
            authority = None
    return Authorization(chain_id, address, nonce, y_parity, r, s, authority)


@dataclass(frozen=True, slots=True)
class TransactionFields:
    """The canonical decoded view of a transaction, for policy and for approvers.

    Integers are ``int`` (wei, gas units), addresses EIP-55 strings, ``to`` is None for contract
    creation. ``gas_price`` is set for types 0 and 1, the two EIP-1559 caps for types 2 and 4.
    ``selector`` is the calldata's first 4 bytes as hex; ``token_call`` the decoded token call when the
    transaction calls a contract with a selector ``signer.eth.calldata`` knows (whose calldata must then
    be canonical, or the transaction is refused with ``calldata_not_canonical``); ``batch`` the calls
    of an ERC-7821 plain batch ``execute`` (``signer.eth.batch``, just as strict), which policy counts
    when the account calls itself (its EIP-7702 delegate's code).
    """

    tx_type: int
    chain_id: int
    nonce: int
    gas: int
    to: str | None
    value: int
    data: bytes
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    access_list: tuple[AccessListEntry, ...] = ()
    authorizations: tuple[Authorization, ...] = ()
    selector: str | None = None
    token_call: TokenCall | None = None
    batch: tuple[BatchCall, ...] | None = None

    @property
    def fee_cap(self) -> int:
        """The most the sender can pay per unit of gas."""
        return _present(self.gas_price if self.gas_price is not None else self.max_fee_per_gas)

    @property
    def max_gas_cost(self) -> int:
        return self.gas * self.fee_cap

    @property
    def max_total_cost(self) -> int:
        """Native value plus the worst-case fee: what the sender's balance must cover."""
        return self.value + self.max_gas_cost

    @property
    def delegates(self) -> tuple[str, ...]:
        return tuple(authorization.address for authorization in self.authorizations)

    def as_json(self) -> dict[str, Any]:
        """The decoded view as JSON-friendly values: integers as decimal strings, bytes as 0x hex."""
        view: dict[str, Any] = {
            "type": self.tx_type,
            "chainId": str(self.chain_id),
            "nonce": str(self.nonce),
            "gas": str(self.gas),
            "to": self.to,
            "contractCreation": self.to is None,
            "value": str(self.value),
            "data": "0x" + self.data.hex(),
            "selector": self.selector,
            "token_call": self.token_call.as_json() if self.token_call else None,
            "maxGasCost": str(self.max_gas_cost),
            "maxTotalCost": str(self.max_total_cost),
        }
        if self.gas_price is not None:
            view["gasPrice"] = str(self.gas_price)
        else:
            view["maxFeePerGas"] = str(self.max_fee_per_gas)
            view["maxPriorityFeePerGas"] = str(self.max_priority_fee_per_gas)
        if self.tx_type != TX_LEGACY:
            view["accessList"] = [entry.as_json() for entry in self.access_list]
        if self.tx_type == TX_SET_CODE:
            view["authorizations"] = [
                {
                    "chainId": str(a.chain_id),
                    "delegate": a.address,
                    "nonce": str(a.nonce),
                    "authority": a.authority,
                }
                for a in self.authorizations
            ]
        return view


@dataclass(frozen=True, slots=True)
class SignedTransaction:
    """A transaction ready to broadcast. ``v`` is ``35 + 2*chainId + y_parity`` for legacy (EIP-155)
    and equals ``y_parity`` for typed transactions; never 27 or 28. ``sender`` is the address the
    signature recovers to over the digest: the key's address when the signature came from
    ``recoverable_signature``, recovered afresh for a bare ``RecoverableSignature``."""

    raw: bytes
    hash: bytes
    v: int
    y_parity: int
    r: int
    s: int
    sender: str

    def as_json(self) -> dict[str, Any]:
        return {
            "raw": "0x" + self.raw.hex(),
            "hash": "0x" + self.hash.hex(),
            "v": str(self.v),
            "yParity": self.y_parity,
            "r": "0x" + self.r.to_bytes(32, "big").hex(),
            "s": "0x" + self.s.to_bytes(32, "big").hex(),
            "sender": self.sender,
        }


def _present(value: int | None) -> int:
    # Parsing guarantees the fee fields of each type are set; a hand-built TransactionFields that
    # breaks that must fail loudly rather than encode a wrong transaction.
    if value is None:
        raise IntegrityError("transaction fields are inconsistent with its type", code="integrity_error")
    return value


def _access_list_items(entries: Sequence[AccessListEntry]) -> list[_rlp.Item]:
    return [[address_bytes(entry.address), list(entry.storage_keys)] for entry in entries]


def _unsigned_items(f: TransactionFields) -> list[_rlp.Item]:
    """The RLP list the signing digest covers (without the type byte)."""
    i = _rlp.encode_int
    to = address_bytes(f.to) if f.to is not None else b""
    if f.tx_type == TX_LEGACY:
        # EIP-155: the chain id and two zeros stand where v, r, s will go.
        return [
            i(f.nonce),
            i(_present(f.gas_price)),
            i(f.gas),
            to,
            i(f.value),
            f.data,
            i(f.chain_id),
            b"",
            b"",
        ]
    if f.tx_type == TX_ACCESS_LIST:
        return [
            i(f.chain_id),
            i(f.nonce),
            i(_present(f.gas_price)),
            i(f.gas),
            to,
            i(f.value),
            f.data,
            _access_list_items(f.access_list),
        ]
    items: list[_rlp.Item] = [
        i(f.chain_id),
        i(f.nonce),
        i(_present(f.max_priority_fee_per_gas)),
        i(_present(f.max_fee_per_gas)),
        i(f.gas),
        to,
        i(f.value),
        f.data,
        _access_list_items(f.access_list),
    ]
    if f.tx_type == TX_SET_CODE:
        items.append(
            [
                [i(a.chain_id), address_bytes(a.address), i(a.nonce), i(a.y_parity), i(a.r), i(a.s)]
                for a in f.authorizations
            ]
        )
    return items


def _encode_unsigned(f: TransactionFields) -> tuple[bytes, bytes]:
    """The signing payload, and the leading items' encodings that the signed encoding reuses.

    The signed list is the unsigned one with v, r, s appended (typed) or put in place of the EIP-155
    ``chainId, 0, 0`` (legacy), so those item encodings are kept rather than computed twice.
    """
    encoded = [_rlp.encode(item) for item in _unsigned_items(f)]
    body = b"".join(encoded)
    payload = _rlp.list_prefix(len(body)) + body
    if f.tx_type == TX_LEGACY:
        return payload, b"".join(encoded[:6])
    return bytes((f.tx_type,)) + payload, body


@dataclass(frozen=True, slots=True)
class UnsignedTransaction:
    """A validated transaction awaiting its signature.

    ``signing_payload`` is the exact byte string hashed into ``digest`` (the EIP-155 RLP list for
    legacy, ``type || rlp(...)`` for typed transactions); approvals bind to it or to ``digest``.
    """

    tx_type: int
    chain_id: int
    digest: bytes
    signing_payload: bytes
    fields: TransactionFields
    # Set only by ``_finish``, which derived ``signing_payload`` and ``digest`` from ``fields`` itself:
    # the item encodings ``assemble`` reuses. Not an init argument, so ``dataclasses.replace`` and
    # hand-built instances leave it None and ``assemble`` re-derives and checks everything.
    _signed_body: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        """The transaction as a canonical JSON object that ``parse_transaction`` accepts back unchanged.

        Quantities are decimal strings (exact beyond 2**53 in any JSON reader); ``type`` and
        ``yParity`` are JSON integers; addresses are EIP-55; bytes are lower-case 0x hex.
        """
        f = self.fields
        out: dict[str, Any] = {"type": f.tx_type, "chainId": str(f.chain_id), "nonce": str(f.nonce)}
        if f.gas_price is not None:
            out["gasPrice"] = str(f.gas_price)
        else:
            out["maxPriorityFeePerGas"] = str(f.max_priority_fee_per_gas)
            out["maxFeePerGas"] = str(f.max_fee_per_gas)
        out["gas"] = str(f.gas)
        out["to"] = f.to
        out["value"] = str(f.value)
        out["data"] = "0x" + f.data.hex()
        if f.tx_type != TX_LEGACY:
            out["accessList"] = [entry.as_json() for entry in f.access_list]
        if f.tx_type == TX_SET_CODE:
            out["authorizationList"] = [a.as_json() for a in f.authorizations]
        return out

    def assemble(self, signature: RecoverableSignature) -> SignedTransaction:
        """The signed raw transaction for ``signature`` (already low-s and matched to the key)."""
        if not isinstance(signature, RecoverableSignature):
            raise IntegrityError("assemble needs a RecoverableSignature", code="signature_format")
        body = self._signed_body
        if body is None:
            payload, body = _encode_unsigned(self.fields)
            # The fields are what gets broadcast and the digest is what was signed: they must agree,
            # and so must the type and chain id that frame the raw bytes and choose a legacy v.
            if (
                payload != self.signing_payload
                or keccak256(payload) != self.digest
                or self.tx_type != self.fields.tx_type
                or self.chain_id != self.fields.chain_id
            ):
                raise IntegrityError(
                    "transaction fields do not match the signed digest", code="integrity_error"
                )
        if signature.digest is not None and signature.address is not None:
            if signature.digest != self.digest:
                raise IntegrityError("signature was made over another digest", code="signature_mismatch")
            sender = signature.address
        else:
            sender = recover_address(self.digest, signature)
        y_parity = signature.recovery_id
        v = 35 + 2 * self.chain_id + y_parity if self.tx_type == TX_LEGACY else y_parity
        i = _rlp.encode_int
        # The same list as the unsigned one with v, r, s in place (legacy) or appended (typed).
        signed = body + _rlp.encode(i(v)) + _rlp.encode(i(signature.r)) + _rlp.encode(i(signature.s))
        raw = _rlp.list_prefix(len(signed)) + signed
        if self.tx_type != TX_LEGACY:
            raw = bytes((self.tx_type,)) + raw
        return SignedTransaction(
            raw=raw,
            hash=keccak256(raw),
            v=v,
            y_parity=y_parity,
            r=signature.r,
            s=signature.s,
            sender=sender,
        )


def _finish(fields: TransactionFields) -> UnsignedTransaction:
    """Semantic checks shared by both entry points, then the canonical encoding and digest."""
    if fields.chain_id == 0:
        raise invalid("invalid_chain_id", "chainId", "chainId must be positive (EIP-155)")
    if fields.chain_id > MAX_CHAIN_ID:
        raise invalid("value_out_of_range", "chainId", "chainId is out of range")
    if fields.max_fee_per_gas is not None and fields.max_priority_fee_per_gas is not None:
        if fields.max_priority_fee_per_gas > fields.max_fee_per_gas:
            raise invalid(
                "invalid_field", "maxPriorityFeePerGas", "maxPriorityFeePerGas must not exceed maxFeePerGas"
            )
    if fields.tx_type == TX_SET_CODE:
        if fields.to is None:
            raise invalid("missing_field", "to", "a type-4 transaction cannot create a contract")
        if not fields.authorizations:
            raise invalid("invalid_field", "authorizationList", "authorizationList must not be empty")
    payload, signed_body = _encode_unsigned(fields)
    transaction = UnsignedTransaction(
        tx_type=fields.tx_type,
        chain_id=fields.chain_id,
        digest=keccak256(payload),
        signing_payload=payload,
        fields=fields,
    )
    # (Frozen, hence object.__setattr__.) Everything the encoding was derived from is immutable (frozen
    # dataclasses, tuples, bytes), so it still matches the fields and the digest at ``assemble``.
    object.__setattr__(transaction, "_signed_body", signed_body)
    return transaction


def _with_calldata_view(**kwargs: Any) -> TransactionFields:
    data: bytes = kwargs["data"]
    # A contract creation's data is init code, not a call: only calls are decoded (and must decode).
    call = decode_token_call(data) if kwargs["to"] is not None else None
    batch = decode_batch(data) if kwargs["to"] is not None else None
    return TransactionFields(**kwargs, selector=selector(data), token_call=call, batch=batch)


# ---------------------------------------------------------------------------------------------------
# JSON entry point


def _parse_type(value: Any) -> int:
    tx_type = parse_quantity(value, "type", maximum=UINT256_MAX)
    if tx_type not in SUPPORTED_TYPES:
        raise invalid(
            "unsupported_transaction_type",
            "type",
            "type must be 0 (legacy), 1, 2 or 4; blob transactions are not supported",
        )
    return tx_type


def _parse_list(value: Any, field: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise invalid("invalid_field", field, f"{field} must be a list")
    return value


def _parse_object(value: Any, field: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid("invalid_field", field, f"{field} must be an object")
    if any(key not in keys for key in value):
        # Reported by where it is and what is allowed there, never by the caller's field name.
        allowed = ", ".join(sorted(keys))
        raise invalid("unknown_field", field, f"unknown field in {field} (allowed: {allowed})")
    for key in sorted(keys):
        if key not in value:
            raise invalid("missing_field", f"{field}.{key}", f"{field}.{key} is required")
    return value


def _parse_access_list(value: Any) -> tuple[AccessListEntry, ...]:
    entries = []
    for index, raw_entry in enumerate(_parse_list(value, "accessList")):
        where = f"accessList[{index}]"
        entry = _parse_object(raw_entry, where, _ACCESS_ENTRY_KEYS)
        keys = tuple(
            parse_hex_bytes(key, f"{where}.storageKeys[{k}]", length=32)
            for k, key in enumerate(_parse_list(entry["storageKeys"], f"{where}.storageKeys"))
        )
        entries.append(AccessListEntry(parse_address(entry["address"], f"{where}.address"), keys))
    return tuple(entries)


def _parse_authorizations(value: Any) -> tuple[Authorization, ...]:
    authorizations = []
    for index, raw_entry in enumerate(_parse_list(value, "authorizationList")):
        where = f"authorizationList[{index}]"
        entry = _parse_object(raw_entry, where, _AUTHORIZATION_KEYS)
        authorizations.append(
            _make_authorization(
                chain_id=parse_quantity(entry["chainId"], f"{where}.chainId"),
                address=parse_address(entry["address"], f"{where}.address"),
                nonce=parse_quantity(entry["nonce"], f"{where}.nonce", maximum=UINT64_MAX),
                y_parity=parse_quantity(entry["yParity"], f"{where}.yParity", maximum=1),
                r=parse_quantity(entry["r"], f"{where}.r"),
                s=parse_quantity(entry["s"], f"{where}.s"),
            )
        )
    return tuple(authorizations)


def parse_transaction(obj: Mapping[str, Any]) -> UnsignedTransaction:
    """Validate a JSON transaction object (eth JSON-RPC camelCase names) into an ``UnsignedTransaction``.

    Raises ``InvalidRequest`` whose ``extra["field"]`` names the offending field, with codes
    ``unknown_field``, ``missing_field``, ``invalid_field``, ``invalid_hex``, ``invalid_address``,
    ``value_out_of_range``, ``missing_chain_id``, ``invalid_chain_id`` and
    ``unsupported_transaction_type``.
    """
    if not isinstance(obj, Mapping):
        raise invalid("invalid_field", "transaction", "transaction must be an object")
    if any(key not in _KNOWN for key in obj):
        known = ", ".join(sorted(_KNOWN))
        raise invalid("unknown_field", "transaction", f"unknown transaction field (allowed: {known})")
    if "type" not in obj:
        raise invalid("missing_field", "type", "type is required")
    tx_type = _parse_type(obj["type"])
    allowed = _ALLOWED[tx_type]
    for key in obj:
        if key not in allowed:
            raise invalid("unknown_field", key, f"{key} is not a field of a type-{tx_type} transaction")
    if "chainId" not in obj:
        raise invalid("missing_chain_id", "chainId", "chainId is required")
    for key in _REQUIRED[tx_type]:
        if key not in obj:
            raise invalid("missing_field", key, f"{key} is required")

    chain_id = parse_quantity(obj["chainId"], "chainId")
    if chain_id == 0:
        raise invalid("invalid_chain_id", "chainId", "chainId must be positive (EIP-155)")
    raw_to = obj.get("to")
    kwargs: dict[str, Any] = {
        "tx_type": tx_type,
        "chain_id": chain_id,
        "nonce": parse_quantity(obj["nonce"], "nonce", maximum=UINT64_MAX),
        "gas": parse_quantity(obj["gas"], "gas", maximum=UINT64_MAX),
        "to": None if raw_to is None else parse_address(raw_to, "to"),
        "value": parse_quantity(obj.get("value", 0), "value"),
        "data": parse_hex_bytes(obj.get("data", "0x"), "data"),
    }
    if tx_type in (TX_LEGACY, TX_ACCESS_LIST):
        kwargs["gas_price"] = parse_quantity(obj["gasPrice"], "gasPrice")
    else:
        kwargs["max_fee_per_gas"] = parse_quantity(obj["maxFeePerGas"], "maxFeePerGas")
        kwargs["max_priority_fee_per_gas"] = parse_quantity(
            obj["maxPriorityFeePerGas"], "maxPriorityFeePerGas"
        )
    if tx_type != TX_LEGACY:
        kwargs["access_list"] = _parse_access_list(obj.get("accessList", []))
    if tx_type == TX_SET_CODE:
        kwargs["authorizations"] = _parse_authorizations(obj["authorizationList"])
    return _finish(_with_calldata_view(**kwargs))


# ---------------------------------------------------------------------------------------------------
# Serialised entry point


def _decode_to(item: _rlp.Item) -> str | None:
    raw = _rlp.decode_bytes(item)
    if raw == b"":
        return None
    if len(raw) != 20:
        raise _rlp.RlpError("to must be empty or 20 bytes")
    return to_checksum_address(raw)


def _decode_address(item: _rlp.Item) -> str:
    raw = _rlp.decode_bytes(item)
    if len(raw) != 20:
        raise _rlp.RlpError("address must be 20 bytes")
    return to_checksum_address(raw)


def _expect(items: list[_rlp.Item], count: int) -> list[_rlp.Item]:
    if len(items) != count:
        raise _rlp.RlpError(
            f"expected {count} fields, found {len(items)} (a signed transaction is not accepted)"
        )
    return items


def _decode_access_list(item: _rlp.Item) -> tuple[AccessListEntry, ...]:
    entries = []
    for raw_entry in _rlp.decode_list(item):
        address, keys = _expect(_rlp.decode_list(raw_entry), 2)
        storage_keys = []
        for key in _rlp.decode_list(keys):
            raw_key = _rlp.decode_bytes(key)
            if len(raw_key) != 32:
                raise _rlp.RlpError("storage key must be 32 bytes")
            storage_keys.append(raw_key)
        entries.append(AccessListEntry(_decode_address(address), tuple(storage_keys)))
    return tuple(entries)


def _decode_authorizations(item: _rlp.Item) -> tuple[Authorization, ...]:
    authorizations = []
    for raw_entry in _rlp.decode_list(item):
        chain_id, address, nonce, y_parity, r, s = _expect(_rlp.decode_list(raw_entry), 6)
        parity = _rlp.decode_int(y_parity, 1)
        if parity > 1:
            raise _rlp.RlpError("authorization yParity must be 0 or 1")
        authorizations.append(
            _make_authorization(
                chain_id=_rlp.decode_int(chain_id, 32),
                address=_decode_address(address),
                nonce=_rlp.decode_int(nonce, 8),
                y_parity=parity,
                r=_rlp.decode_int(r, 32),
                s=_rlp.decode_int(s, 32),
            )
        )
    return tuple(authorizations)


def _decode_fields(raw: bytes) -> dict[str, Any]:
    first = raw[0]
    if first >= 0xC0:
        nonce, gas_price, gas, to, value, data, chain_id, zero_r, zero_s = _expect(
            _rlp.decode_list(_rlp.decode(raw)), 9
        )
        if zero_r != b"" or zero_s != b"":
            raise _rlp.RlpError("an unsigned EIP-155 transaction ends with chainId, 0, 0")
        return {
            "tx_type": TX_LEGACY,
            "chain_id": _rlp.decode_int(chain_id, 32),
            "nonce": _rlp.decode_int(nonce, 8),
            "gas_price": _rlp.decode_int(gas_price, 32),
            "gas": _rlp.decode_int(gas, 8),
            "to": _decode_to(to),
            "value": _rlp.decode_int(value, 32),
            "data": _rlp.decode_bytes(data),
        }
    if first not in (TX_ACCESS_LIST, TX_DYNAMIC_FEE, TX_SET_CODE):
        raise _rlp.RlpError("unsupported transaction type byte")
    items = _rlp.decode_list(_rlp.decode(raw[1:]))
    if first == TX_ACCESS_LIST:
        chain_id, nonce, gas_price, gas, to, value, data, access_list = _expect(items, 8)
        fees: dict[str, Any] = {"gas_price": _rlp.decode_int(gas_price, 32)}
        extra: dict[str, Any] = {}
    else:
        expected = 9 if first == TX_DYNAMIC_FEE else 10
        chain_id, nonce, priority_fee, max_fee, gas, to, value, data, access_list, *rest = _expect(
            items, expected
        )
        fees = {
            "max_priority_fee_per_gas": _rlp.decode_int(priority_fee, 32),
            "max_fee_per_gas": _rlp.decode_int(max_fee, 32),
        }
        extra = {"authorizations": _decode_authorizations(rest[0])} if rest else {}
    return {
        "tx_type": first,
        "chain_id": _rlp.decode_int(chain_id, 32),
        "nonce": _rlp.decode_int(nonce, 8),
        "gas": _rlp.decode_int(gas, 8),
        "to": _decode_to(to),
        "value": _rlp.decode_int(value, 32),
        "data": _rlp.decode_bytes(data),
        "access_list": _decode_access_list(access_list),
        **fees,
        **extra,
    }


def decode_unsigned_transaction(raw: bytes, *, field: str = "raw") -> UnsignedTransaction:
    """Decode an unsigned serialised transaction: an EIP-155 legacy RLP list ending ``chainId, 0, 0``,
    or ``0x01``/``0x02``/``0x04`` followed by the unsigned RLP payload.

    Only the canonical encoding is accepted, and the result re-encodes to exactly ``raw``. Malformed
    or non-canonical input raises ``InvalidRequest`` code ``invalid_transaction``; well-formed input
    with invalid values raises the same codes as ``parse_transaction`` (e.g. ``invalid_chain_id``).
    """
    if not isinstance(raw, bytes) or not raw:
        raise invalid("invalid_transaction", field, "transaction must be non-empty bytes")
    try:
        kwargs = _decode_fields(raw)
    except _rlp.RlpError as error:
        raise invalid("invalid_transaction", field, f"malformed transaction: {error}") from None
    transaction = _finish(_with_calldata_view(**kwargs))
    # The strict decoder already admits only canonical input; this is the guarantee stated directly.
    if transaction.signing_payload != raw:
        raise invalid("invalid_transaction", field, "transaction is not canonically encoded")
    return transaction
