"""Transactions end to end: random keys and fields for every type, an HSM-like signer with high s half
of the time, and eth-account as the independent reference for the digest, the raw bytes and recovery."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_account._utils.legacy_transactions import Transaction as LegacyTransaction
from eth_account.typed_transactions import TypedTransaction
from eth_test_support import (
    address_of,
    eth_account_dict,
    hsm_sign,
    private_keys,
    public_key_of,
    transaction_case,
    transaction_json,
)
from eth_utils import to_checksum_address as reference_checksum
from hexbytes import HexBytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.errors import IntegrityError, InvalidRequest
from signer.eth import (
    SECP256K1_HALF_N,
    UnsignedTransaction,
    authorization_digest,
    decode_unsigned_transaction,
    parse_transaction,
    recoverable_signature,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_fields(tx: UnsignedTransaction, case: dict[str, Any]) -> None:
    f = tx.fields
    assert (tx.tx_type, tx.chain_id) == (case["type"], case["chainId"])
    assert (f.nonce, f.gas, f.value, f.data, f.to) == (
        case["nonce"],
        case["gas"],
        case["value"],
        case["data"],
        case["to"],
    )
    assert f.gas_price == case.get("gasPrice")
    assert f.max_fee_per_gas == case.get("maxFeePerGas")
    assert f.max_priority_fee_per_gas == case.get("maxPriorityFeePerGas")
    assert [(e.address, list(e.storage_keys)) for e in f.access_list] == [
        (a, list(k)) for a, k in case.get("accessList", [])
    ]
    for parsed, expected in zip(f.authorizations, case.get("authorizationList", []), strict=True):
        assert (parsed.chain_id, parsed.address, parsed.nonce) == (
            expected["chainId"],
            expected["address"],
            expected["nonce"],
        )
        if expected["authority"] != "unknown":
            assert parsed.authority == expected["authority"]


def _check_against_eth_account(
    tx: UnsignedTransaction, case: dict[str, Any], secret: bytes, high_s: bool
) -> None:
    address = address_of(secret)
    raw_rs = hsm_sign(secret, tx.digest, high_s=high_s)
    signature = recoverable_signature(tx.digest, raw_rs, public_key_of(secret))
    assert signature.s <= SECP256K1_HALF_N
    signed = tx.assemble(signature)

    # Recovery by the reference, from the broadcastable bytes alone.
    assert Account.recover_transaction(signed.raw) == address
    assert signed.sender == address
    # Deterministic RFC 6979 in eth-account: same key, same fields -> the very same bytes and hash.
    reference = Account.sign_transaction(eth_account_dict(case), secret)
    assert signed.raw == bytes(reference.raw_transaction)
    assert signed.hash == bytes(reference.hash)
    assert (signed.r, signed.s, signed.v) == (reference.r, reference.s, reference.v)

    if tx.tx_type == 0:
        # EIP-155 only: v carries the chain id and is never 27/28.
        assert signed.v == 35 + 2 * tx.chain_id + signature.recovery_id
        assert signed.v not in (27, 28)
        decoded = LegacyTransaction.from_bytes(signed.raw)
        assert (decoded.nonce, decoded.gasPrice, decoded.gas, decoded.value, decoded.data) == (
            case["nonce"],
            case["gasPrice"],
            case["gas"],
            case["value"],
            case["data"],
        )
        assert (decoded.to or None) == (bytes.fromhex(case["to"][2:]) if case["to"] else None)
        assert (decoded.v, decoded.r, decoded.s) == (signed.v, signed.r, signed.s)
    else:
        assert signed.raw[0] == tx.tx_type
        assert signed.v == signed.y_parity == signature.recovery_id
        decoded = TypedTransaction.from_bytes(HexBytes(signed.raw)).as_dict()
        assert decoded["chainId"] == case["chainId"]
        assert decoded["nonce"] == case["nonce"]
        assert decoded["gas"] == case["gas"]
        assert decoded["value"] == case["value"]
        assert bytes(decoded["data"]) == case["data"]
        assert (decoded.get("to") or None) == case["to"] or reference_checksum(decoded["to"]) == case["to"]
        assert (decoded["v"], decoded["r"], decoded["s"]) == (signed.y_parity, signed.r, signed.s)


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
@PROPERTY
@given(data=st.data(), secret=private_keys, high_s=st.booleans())
def test_sign_every_type_matches_eth_account(
    tx_type: int, data: st.DataObject, secret: bytes, high_s: bool
) -> None:
    case = data.draw(transaction_case(tx_type))
    tx = parse_transaction(data.draw(transaction_json(case)))
    _check_fields(tx, case)
    # Both entry points and the canonical JSON agree on the same transaction.
    assert decode_unsigned_transaction(tx.signing_payload) == tx
    assert parse_transaction(tx.as_json()) == tx
    _check_against_eth_account(tx, case, secret, high_s)


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_digest_matches_eth_account_unsigned_hash(tx_type: int, data: st.DataObject) -> None:
    case = data.draw(transaction_case(tx_type))
    tx = parse_transaction(data.draw(transaction_json(case)))
    if tx_type == 0:
        from eth_account._utils.legacy_transactions import serializable_unsigned_transaction_from_dict

        reference = serializable_unsigned_transaction_from_dict(eth_account_dict(case)).hash()
    else:
        reference = TypedTransaction.from_dict(eth_account_dict(case)).hash()
    assert tx.digest == bytes(reference)
    # The signing payload is what rlp (the library) would produce for the same list.
    body = tx.signing_payload if tx_type == 0 else tx.signing_payload[1:]
    assert rlp.encode(rlp.decode(body)) == body


def test_authorization_digest_matches_eth_account() -> None:
    secret = bytes.fromhex("aa" * 32)
    delegate = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"
    for chain_id, nonce in [(0, 0), (1, 1), (1337, 2**64 - 1), (2**256 - 1, 7)]:
        signed = Account.sign_authorization(
            {"chainId": chain_id, "address": delegate, "nonce": nonce}, secret
        )
        assert authorization_digest(chain_id, delegate, nonce) == bytes(signed.authorization_hash)
        assert authorization_digest(chain_id, bytes.fromhex(delegate[2:]), nonce) == bytes(
            signed.authorization_hash
        )
    with pytest.raises(InvalidRequest) as error:
        authorization_digest(1, delegate, 2**64)
    assert error.value.code == "value_out_of_range"


def _base(tx_type: int = 2, **overrides: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "type": tx_type,
        "chainId": 1,
        "nonce": 0,
        "gas": 21000,
        "to": "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E",
        "value": "1000000000000000000",
    }
    if tx_type in (0, 1):
        tx["gasPrice"] = "0x3b9aca00"
    else:
        tx["maxFeePerGas"] = "0x77359400"
        tx["maxPriorityFeePerGas"] = "0x3b9aca00"
    if tx_type == 4:
        tx["authorizationList"] = [
            {
                "chainId": 1,
                "address": "0x0000000000000000000000000000000000000001",
                "nonce": 0,
                "yParity": 0,
                "r": 1,
                "s": 1,
            }
        ]
    tx.update(overrides)
    return {k: v for k, v in tx.items() if v is not _DROP}


_DROP = object()


def _rejects(tx: dict[str, Any], code: str, field: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as error:
        parse_transaction(tx)
    assert (error.value.code, error.value.extra.get("field")) == (code, field)
    return error.value


# I-05: the chain id is mandatory and positive; legacy transactions are EIP-155 only.
@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_missing_chain_id(tx_type: int) -> None:
    _rejects(_base(tx_type, chainId=_DROP), "missing_chain_id", "chainId")


@pytest.mark.parametrize("value", [0, "0x0", "0", "0x000", "00"])
@pytest.mark.parametrize("tx_type", [0, 2])
def test_zero_chain_id(tx_type: int, value: Any) -> None:
    _rejects(_base(tx_type, chainId=value), "invalid_chain_id", "chainId")


def test_chain_id_bounds() -> None:
    from signer.eth import MAX_CHAIN_ID

    assert parse_transaction(_base(0, chainId=MAX_CHAIN_ID)).chain_id == MAX_CHAIN_ID
    _rejects(_base(0, chainId=MAX_CHAIN_ID + 1), "value_out_of_range", "chainId")
    _rejects(_base(0, chainId=2**256), "value_out_of_range", "chainId")


def test_legacy_v_is_eip155_for_every_chain() -> None:
    secret = bytes.fromhex("11" * 32)
    for chain_id in (1, 2, 3, 137, 2**31, 9223372036854775771):
        tx = parse_transaction(_base(0, chainId=chain_id))
        for high_s in (False, True):
            sig = recoverable_signature(
                tx.digest, hsm_sign(secret, tx.digest, high_s=high_s), public_key_of(secret)
            )
            signed = tx.assemble(sig)
            assert signed.v == 35 + 2 * chain_id + sig.recovery_id
            assert signed.v not in (27, 28)
            assert Account.recover_transaction(signed.raw) == address_of(secret)


# I-11: one canonical integer for every way of writing it, and refusal of the rest.
@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (10**18, 10**18),
        ("0xde0b6b3a7640000", 10**18),
        ("0x00000de0b6b3a7640000", 10**18),
        ("0xDE0B6B3A7640000", 10**18),
        ("1000000000000000000", 10**18),
        ("0001000000000000000000", 10**18),
        ("0x0", 0),
        ("0", 0),
        (2**256 - 1, 2**256 - 1),
        ("0x" + "f" * 64, 2**256 - 1),
        ("0x" + "0" * 5000 + "1", 1),
    ],
)
def test_value_forms_accepted(written: Any, expected: int) -> None:
    tx = parse_transaction(_base(value=written))
    assert tx.fields.value == expected
    assert tx.as_json()["value"] == str(expected)


@pytest.mark.parametrize(
    ("written", "code"),
    [
        (-1, "value_out_of_range"),
        ("-1", "value_out_of_range"),
        ("-0", "value_out_of_range"),
        ("-0x1", "value_out_of_range"),
        (2**256, "value_out_of_range"),
        ("0x1" + "0" * 64, "value_out_of_range"),
        (str(2**256), "value_out_of_range"),
        ("9" * 5000, "value_out_of_range"),
        (1.0, "invalid_field"),
        (1.5, "invalid_field"),
        (float("nan"), "invalid_field"),
        (True, "invalid_field"),
        (False, "invalid_field"),
        (None, "invalid_field"),
        ([], "invalid_field"),
        ({}, "invalid_field"),
        ("1e18", "invalid_field"),
        (" 1", "invalid_field"),
        ("1 ", "invalid_field"),
        ("1_000", "invalid_field"),
        ("+1", "invalid_field"),
        ("", "invalid_field"),
        ("\u0661\u0662", "invalid_field"),  # Arabic-Indic digits: int() would accept them
        ("0x", "invalid_hex"),
        ("0xg1", "invalid_hex"),
        ("0x 1", "invalid_hex"),
        ("0X10", "invalid_hex"),
    ],
)
def test_value_forms_refused(written: Any, code: str) -> None:
    error = _rejects(_base(value=written), code, "value")
    assert "1e18" not in error.message and "\u0661" not in error.message  # the value is never echoed


@pytest.mark.parametrize("field", ["nonce", "gas"])
def test_nonce_and_gas_are_64_bit(field: str) -> None:
    assert getattr(parse_transaction(_base(**{field: 2**64 - 1})).fields, field) == 2**64 - 1
    _rejects(_base(**{field: 2**64}), "value_out_of_range", field)
    _rejects(_base(**{field: "0x10000000000000000"}), "value_out_of_range", field)


_CHECKSUMMED = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"


@pytest.mark.parametrize(
    "written",
    [_CHECKSUMMED, _CHECKSUMMED.lower(), "0x" + _CHECKSUMMED[2:].upper()],
)
def test_address_forms_accepted(written: str) -> None:
    assert parse_transaction(_base(to=written)).fields.to == _CHECKSUMMED


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("0x5ce9454909639d2d17a3f753ce7d93fa0b9aB12E", "invalid_address"),  # one letter's case wrong
        ("0x5Ce9454909639d2d17a3F753ce7d93fa0b9aB12E", "invalid_address"),
        ("0x5ce9454909639d2d17a3F753ce7d93fa0b9aB12", "invalid_address"),
        ("0x5ce9454909639d2d17a3F753ce7d93fa0b9aB12E00", "invalid_address"),
        ("5ce9454909639d2d17a3F753ce7d93fa0b9aB12E", "invalid_address"),
        ("0X5ce9454909639d2d17a3F753ce7d93fa0b9aB12E", "invalid_address"),
        ("0x5ce9454909639d2d17a3F753ce7d93fa0b9aB12G", "invalid_address"),
        ("", "invalid_address"),
        ("0x", "invalid_address"),
        (12345, "invalid_field"),
        (b"\x00" * 20, "invalid_field"),
    ],
)
def test_address_forms_refused(written: Any, code: str) -> None:
    _rejects(_base(to=written), code, "to")


def test_all_checksum_errors_are_caught() -> None:
    # Flip the case of every letter in turn: each single flip must be refused.
    body = _CHECKSUMMED[2:]
    flipped_any = False
    for index, char in enumerate(body):
        if char.isalpha():
            flipped_any = True
            wrong = "0x" + body[:index] + char.swapcase() + body[index + 1 :]
            if wrong[2:] in (body.lower(), body.upper()):
                continue
            _rejects(_base(to=wrong), "invalid_address", "to")
    assert flipped_any


@pytest.mark.parametrize(
    ("written", "code"),
    [("0x123", "invalid_hex"), ("1234", "invalid_hex"), ("0xzz", "invalid_hex"), (b"\x12", "invalid_field")],
)
def test_data_refused(written: Any, code: str) -> None:
    _rejects(_base(data=written), code, "data")


def test_contract_creation() -> None:
    for tx in (_base(0, to=None), _base(2, to=_DROP)):
        parsed = parse_transaction(tx)
        assert parsed.fields.to is None
        assert parsed.as_json()["to"] is None
    _rejects(_base(4, to=_DROP), "missing_field", "to")
    _rejects(_base(4, to=None), "missing_field", "to")


@pytest.mark.parametrize(
    ("tx", "code", "field"),
    [
        (_base(2, **{"from": _CHECKSUMMED}), "unknown_field", "transaction"),
        (_base(2, input="0x"), "unknown_field", "transaction"),
        (_base(2, v=27), "unknown_field", "transaction"),
        (_base(2, gasPrice=1), "unknown_field", "gasPrice"),
        (_base(0, maxFeePerGas=1), "unknown_field", "maxFeePerGas"),
        (_base(0, accessList=[]), "unknown_field", "accessList"),
        (_base(2, authorizationList=[]), "unknown_field", "authorizationList"),
        (_base(2, type=_DROP), "missing_field", "type"),
        (_base(2, nonce=_DROP), "missing_field", "nonce"),
        (_base(2, gas=_DROP), "missing_field", "gas"),
        (_base(0, gasPrice=_DROP), "missing_field", "gasPrice"),
        (_base(2, maxFeePerGas=_DROP), "missing_field", "maxFeePerGas"),
        (_base(4, authorizationList=_DROP), "missing_field", "authorizationList"),
        (_base(2, type=3), "unsupported_transaction_type", "type"),
        (_base(2, type="0x5"), "unsupported_transaction_type", "type"),
        (_base(2, type=True), "invalid_field", "type"),
        (_base(2, type=2.0), "invalid_field", "type"),
        (_base(2, maxPriorityFeePerGas=10, maxFeePerGas=9), "invalid_field", "maxPriorityFeePerGas"),
        (_base(4, authorizationList=[]), "invalid_field", "authorizationList"),
        (_base(2, accessList={}), "invalid_field", "accessList"),
        (_base(2, accessList=[{"address": _CHECKSUMMED}]), "missing_field", "accessList[0].storageKeys"),
        (
            _base(2, accessList=[{"address": _CHECKSUMMED, "storageKeys": [], "x": 1}]),
            "unknown_field",
            "accessList[0]",
        ),
        (
            _base(2, accessList=[{"address": _CHECKSUMMED, "storageKeys": ["0x01"]}]),
            "invalid_hex",
            "accessList[0].storageKeys[0]",
        ),
        (
            _base(2, accessList=[{"address": _CHECKSUMMED.lower()[:-1] + "F", "storageKeys": []}]),
            "invalid_address",
            "accessList[0].address",
        ),
    ],
)
def test_structure_refused(tx: dict[str, Any], code: str, field: str) -> None:
    _rejects(tx, code, field)


def test_authorization_list_validation() -> None:
    good = _base(4)["authorizationList"][0]
    for key in sorted(good):
        entry = {k: v for k, v in good.items() if k != key}
        _rejects(_base(4, authorizationList=[entry]), "missing_field", f"authorizationList[0].{key}")
    _rejects(_base(4, authorizationList=[{**good, "v": 27}]), "unknown_field", "authorizationList[0]")
    _rejects(
        _base(4, authorizationList=[{**good, "yParity": 2}]),
        "value_out_of_range",
        "authorizationList[0].yParity",
    )
    _rejects(
        _base(4, authorizationList=[{**good, "nonce": 2**64}]),
        "value_out_of_range",
        "authorizationList[0].nonce",
    )
    _rejects(_base(4, authorizationList=["0x00"]), "invalid_field", "authorizationList[0]")
    # chain id 0 ("any chain") is a valid authorisation; policy, not parsing, decides on it (I-06).
    tx = parse_transaction(_base(4, authorizationList=[{**good, "chainId": 0}]))
    assert tx.fields.authorizations[0].chain_id == 0
    # r = s = 1 was signed by nobody, yet recovers to some account, exactly as the chain would see it.
    assert tx.fields.authorizations[0].authority is not None
    r_off_curve = _base(4, authorizationList=[{**good, "r": 5}])  # x = 5 is not on secp256k1
    assert parse_transaction(r_off_curve).fields.authorizations[0].authority is None
    assert tx.fields.delegates == ("0x0000000000000000000000000000000000000001",)


def test_high_s_authorization_has_no_authority() -> None:
    from signer.eth import SECP256K1_N

    secret = bytes.fromhex("22" * 32)
    signed = Account.sign_authorization({"chainId": 1, "address": _CHECKSUMMED, "nonce": 3}, secret)
    entry = {"chainId": 1, "address": _CHECKSUMMED, "nonce": 3, "yParity": signed.y_parity, "r": signed.r}
    low = parse_transaction(_base(4, authorizationList=[{**entry, "s": signed.s}]))
    assert low.fields.authorizations[0].authority == address_of(secret)
    high = parse_transaction(
        _base(4, authorizationList=[{**entry, "s": SECP256K1_N - signed.s, "yParity": 1 - signed.y_parity}])
    )
    assert high.fields.authorizations[0].authority is None


def test_not_an_object() -> None:
    for value in ([], "0x02", None, 5):
        with pytest.raises(InvalidRequest) as error:
            parse_transaction(value)  # type: ignore[arg-type]
        assert error.value.code == "invalid_field"
        assert error.value.extra["field"] == "transaction"


@pytest.mark.parametrize("where", ["transaction", "accessList", "authorizationList"])
def test_an_unknown_field_is_reported_by_where_it_is_never_by_its_name(where: str) -> None:
    canary = "zz-canary-" + "x" * 10_000
    if where == "transaction":
        tx = _base(4, **{canary: 1})
    elif where == "accessList":
        tx = _base(4, accessList=[{"address": _CHECKSUMMED, "storageKeys": [], canary: 1}])
    else:
        tx = _base(4, authorizationList=[{**_base(4)["authorizationList"][0], canary: 1}])
    error = _rejects(tx, "unknown_field", "transaction" if where == "transaction" else f"{where}[0]")
    assert "zz-canary" not in str(error) and "zz-canary" not in json.dumps(error.extra)


def test_decoded_view_for_policy() -> None:
    recipient = "0x1111111111111111111111111111111111111111"
    data = "0xa9059cbb" + "00" * 12 + recipient[2:] + (5 * 10**6).to_bytes(32, "big").hex()
    tx = parse_transaction(_base(2, data=data, value=0, gas=60000))
    f = tx.fields
    assert f.selector == "0xa9059cbb"
    assert f.token_call is not None
    assert (f.token_call.method, f.token_call.recipient, f.token_call.amount, f.token_call.owner) == (
        "transfer",
        recipient,
        5 * 10**6,
        None,
    )
    assert f.fee_cap == 2 * 10**9
    assert f.max_gas_cost == 60000 * 2 * 10**9
    assert f.max_total_cost == f.max_gas_cost
    view = f.as_json()
    assert view["token_call"] == {
        "method": "transfer",
        "signature": "transfer(address,uint256)",
        "standard": "erc20",
        "recipient": recipient,
        "amount": "5000000",
        "unbounded": False,
        "owner": None,
    }
    assert view["selector"] == "0xa9059cbb"
    assert view["maxGasCost"] == str(60000 * 2 * 10**9)
    assert parse_transaction(_base(2, data="0xa905")).fields.selector is None


def test_assemble_refuses_a_signature_for_other_fields() -> None:
    secret = bytes.fromhex("33" * 32)
    tx = parse_transaction(_base(2))
    sig = recoverable_signature(tx.digest, hsm_sign(secret, tx.digest, high_s=False), public_key_of(secret))
    tampered = dataclasses.replace(tx, fields=dataclasses.replace(tx.fields, value=tx.fields.value + 1))
    with pytest.raises(IntegrityError):
        tampered.assemble(sig)
    with pytest.raises(IntegrityError):
        tx.assemble((sig.r, sig.s, sig.recovery_id))  # type: ignore[arg-type]
    # A signature proven over one transaction's digest cannot be attached to another transaction.
    other = parse_transaction(_base(2, nonce=1))
    with pytest.raises(IntegrityError) as error:
        other.assemble(sig)
    assert error.value.code == "signature_mismatch"


def test_assemble_without_proof_recovers_the_sender() -> None:
    from signer.eth import RecoverableSignature

    secret = bytes.fromhex("34" * 32)
    tx = parse_transaction(_base(2))
    proven = recoverable_signature(tx.digest, hsm_sign(secret, tx.digest, high_s=True), public_key_of(secret))
    assert proven.address == address_of(secret) and proven.digest == tx.digest
    bare = RecoverableSignature(proven.r, proven.s, proven.recovery_id)
    assert bare == proven  # the proof is not part of the value
    assert tx.assemble(bare) == tx.assemble(proven)
    assert tx.assemble(bare).sender == address_of(secret)
