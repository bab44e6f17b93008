"""Permits decoded from EIP-712 typed data (issue 10 section 1): EIP-2612, DAI, EIP-4494 and Permit2.

Each known permit decodes to its token, spender, counted amount, owner and deadline; the digests of
the requests used here are checked against eth-account. The class of bypass: typed data whose
primaryType names a permit but whose declared type differs in any way (a member dropped, added,
renamed, retyped or moved; a nested Permit2 struct changed; an EIP-2612 domain without the token) is
refused with ``permit_not_canonical`` (hypothesis over those edits), never signed uncounted.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.eth import decode_permits, typed_data_digest
from signer.eth.primitives import UINT256_MAX

TOKEN = "0x" + "70" * 20
SPENDER = "0x" + "5e" * 20
OWNER = "0x" + "0a" * 20
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
DOMAIN_TYPES = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def _member(name: str, kind: str) -> dict[str, str]:
    return {"name": name, "type": kind}


def eip2612(value: int = UINT256_MAX, token: str = TOKEN) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": DOMAIN_TYPES,
            "Permit": [
                _member("owner", "address"),
                _member("spender", "address"),
                _member("value", "uint256"),
                _member("nonce", "uint256"),
                _member("deadline", "uint256"),
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": token},
        "message": {"owner": OWNER, "spender": SPENDER, "value": str(value), "nonce": 0, "deadline": 2**40},
    }


def dai(allowed: bool) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": DOMAIN_TYPES,
            "Permit": [
                _member("holder", "address"),
                _member("spender", "address"),
                _member("nonce", "uint256"),
                _member("expiry", "uint256"),
                _member("allowed", "bool"),
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": "Dai Stablecoin", "version": "1", "chainId": 1, "verifyingContract": TOKEN},
        "message": {"holder": OWNER, "spender": SPENDER, "nonce": 0, "expiry": 0, "allowed": allowed},
    }


def eip4494() -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": DOMAIN_TYPES,
            "Permit": [
                _member("spender", "address"),
                _member("tokenId", "uint256"),
                _member("nonce", "uint256"),
                _member("deadline", "uint256"),
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": "NFT", "version": "1", "chainId": 1, "verifyingContract": TOKEN},
        "message": {"spender": SPENDER, "tokenId": 42, "nonce": 0, "deadline": 10},
    }


PERMIT2_DOMAIN_TYPES = [
    {"name": "name", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
PERMIT_DETAILS = [
    _member("token", "address"),
    _member("amount", "uint160"),
    _member("expiration", "uint48"),
    _member("nonce", "uint48"),
]
TOKEN_PERMISSIONS = [_member("token", "address"), _member("amount", "uint256")]


def _permit2(primary: str, types: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": PERMIT2_DOMAIN_TYPES, **types},
        "primaryType": primary,
        "domain": {"name": "Permit2", "chainId": 1, "verifyingContract": PERMIT2},
        "message": message,
    }


def permit_single(amount: int = 2**160 - 1) -> dict[str, Any]:
    details = {"token": TOKEN, "amount": str(amount), "expiration": 2**40, "nonce": 0}
    return _permit2(
        "PermitSingle",
        {
            "PermitSingle": [
                _member("details", "PermitDetails"),
                _member("spender", "address"),
                _member("sigDeadline", "uint256"),
            ],
            "PermitDetails": PERMIT_DETAILS,
        },
        {"details": details, "spender": SPENDER, "sigDeadline": 2**40},
    )


def permit_batch() -> dict[str, Any]:
    details = [
        {"token": TOKEN, "amount": "5", "expiration": 1, "nonce": 0},
        {"token": OWNER, "amount": "7", "expiration": 1, "nonce": 0},
    ]
    return _permit2(
        "PermitBatch",
        {
            "PermitBatch": [
                _member("details", "PermitDetails[]"),
                _member("spender", "address"),
                _member("sigDeadline", "uint256"),
            ],
            "PermitDetails": PERMIT_DETAILS,
        },
        {"details": details, "spender": SPENDER, "sigDeadline": 9},
    )


def permit_transfer_from(batch: bool = False, witness: bool = False) -> dict[str, Any]:
    name = "Permit" + ("Batch" if batch else "") + ("Witness" if witness else "") + "TransferFrom"
    permitted: Any = {"token": TOKEN, "amount": "1000"}
    if batch:
        permitted = [permitted, {"token": OWNER, "amount": "3"}]
    members = [
        _member("permitted", "TokenPermissions[]" if batch else "TokenPermissions"),
        _member("spender", "address"),
        _member("nonce", "uint256"),
        _member("deadline", "uint256"),
    ]
    message: dict[str, Any] = {"permitted": permitted, "spender": SPENDER, "nonce": 1, "deadline": 77}
    types: dict[str, Any] = {"TokenPermissions": TOKEN_PERMISSIONS}
    if witness:
        members.append(_member("witness", "Order"))
        types["Order"] = [_member("recipient", "address")]
        message["witness"] = {"recipient": OWNER}
    return _permit2(name, {name: members, **types}, message)


def _decoded(typed: dict[str, Any]) -> list[tuple[Any, ...]]:
    parsed = typed_data_digest(typed)
    assert parsed.digest == _eth_account_digest(typed)
    return [(p.method, p.token.lower(), p.spender.lower(), p.amount, p.owner) for p in decode_permits(parsed)]


def _eth_account_digest(typed: dict[str, Any]) -> bytes:
    from eth_utils import keccak

    signable = encode_typed_data(full_message={**typed, "message": _numbers(typed["message"])})
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def _numbers(value: Any) -> Any:
    # eth-account wants JSON numbers where we accept decimal strings (the messages here have no text).
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def test_eip2612_counts_its_value_against_the_domain_token() -> None:
    assert _decoded(eip2612()) == [("permit", TOKEN, SPENDER, UINT256_MAX, _checksum(OWNER))]
    view = decode_permits(typed_data_digest(eip2612(5)))[0].as_json()
    assert view["standard"] == "eip2612" and view["amount"] == "5" and view["deadline"] == str(2**40)
    assert view["unbounded"] is False


def test_dai_allowed_is_unbounded_and_a_revocation_counts_nothing() -> None:
    assert _decoded(dai(True))[0][3] == UINT256_MAX
    assert _decoded(dai(False))[0][3] == 0


def test_eip4494_counts_one_token() -> None:
    permit = decode_permits(typed_data_digest(eip4494()))[0]
    assert (permit.amount, permit.token_id, permit.standard) == (1, 42, "eip4494")


def test_permit2_allowances_and_transfers() -> None:
    assert _decoded(permit_single()) == [("permit2", TOKEN, SPENDER, UINT256_MAX, None)]
    assert _decoded(permit_single(10)) == [("permit2", TOKEN, SPENDER, 10, None)]
    assert [d[1:4] for d in _decoded(permit_batch())] == [(TOKEN, SPENDER, 5), (OWNER, SPENDER, 7)]
    assert [d[3] for d in _decoded(permit_transfer_from())] == [1000]
    assert [d[3] for d in _decoded(permit_transfer_from(batch=True))] == [1000, 3]
    assert [d[3] for d in _decoded(permit_transfer_from(witness=True))] == [1000]
    assert [d[3] for d in _decoded(permit_transfer_from(batch=True, witness=True))] == [1000, 3]


def eip3009(primary: str = "TransferWithAuthorization", value: int = 5 * 10**6) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": DOMAIN_TYPES,
            primary: [
                _member("from", "address"),
                _member("to", "address"),
                _member("value", "uint256"),
                _member("validAfter", "uint256"),
                _member("validBefore", "uint256"),
                _member("nonce", "bytes32"),
            ],
        },
        "primaryType": primary,
        "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": TOKEN},
        "message": {
            "from": OWNER,
            "to": SPENDER,
            "value": str(value),
            "validAfter": 0,
            "validBefore": 2**40,
            "nonce": "0x" + "11" * 32,
        },
    }


def test_eip3009_transfers_count_their_value_to_their_payee() -> None:
    for primary in ("TransferWithAuthorization", "ReceiveWithAuthorization"):
        assert _decoded(eip3009(primary)) == [("permit", TOKEN, SPENDER, 5 * 10**6, _checksum(OWNER))]
        view = decode_permits(typed_data_digest(eip3009(primary)))[0].as_json()
        assert view["standard"] == "eip3009" and view["deadline"] == str(2**40)
    typed = eip3009()
    del typed["domain"]["verifyingContract"]
    typed["types"]["EIP712Domain"] = DOMAIN_TYPES[:3]
    _refused(typed)


def test_other_typed_data_is_not_a_permit() -> None:
    typed = eip2612()
    typed["types"]["Mail"] = typed["types"].pop("Permit")
    typed["primaryType"] = "Mail"
    assert decode_permits(typed_data_digest(typed)) == ()


def test_an_eip2612_permit_without_a_token_is_refused() -> None:
    typed = eip2612()
    del typed["domain"]["verifyingContract"]
    typed["types"]["EIP712Domain"] = DOMAIN_TYPES[:3]
    _refused(typed)


def _refused(typed: dict[str, Any]) -> None:
    parsed = typed_data_digest(typed)  # valid EIP-712: only its permit reading fails
    with pytest.raises(InvalidRequest) as error:
        decode_permits(parsed)
    assert error.value.code == "permit_not_canonical"
    assert error.value.extra["field"] == "typed_data"


def _checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)


# -- every edit of a permit's declared shape is refused ---------------------------------------------

KNOWN = [
    eip2612,
    lambda: dai(True),
    eip4494,
    permit_single,
    permit_batch,
    permit_transfer_from,
    lambda: permit_transfer_from(batch=True),
    lambda: permit_transfer_from(witness=True),
    eip3009,
    lambda: eip3009("ReceiveWithAuthorization"),
]
VALUES = {
    "uint256": 1,
    "uint128": 1,
    "uint160": 1,
    "uint48": 1,
    "address": OWNER,
    "bool": True,
    "bytes32": "0x" + "22" * 32,
}


def _struct_and_message(typed: dict[str, Any], struct: str) -> dict[str, Any] | list[Any] | None:
    if struct == typed["primaryType"]:
        return typed["message"]
    for member in typed["types"][typed["primaryType"]]:
        if member["type"].removesuffix("[]") == struct:
            return typed["message"][member["name"]]
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KNOWN), st.data())
def test_any_edit_of_a_permit_shape_is_refused(make, data) -> None:
    typed = copy.deepcopy(make())
    structs = [name for name in typed["types"] if name not in ("EIP712Domain", "Order")]
    struct = data.draw(st.sampled_from(structs))
    members = typed["types"][struct]
    target = _struct_and_message(typed, struct)
    values = target if isinstance(target, list) else [target]
    edit = data.draw(st.sampled_from(["drop", "add", "rename", "retype", "swap"]))
    index = data.draw(st.integers(0, len(members) - 1))
    name = members[index]["name"]
    if edit == "drop":
        del members[index]
        for value in values:
            del value[name]
    elif edit == "add":
        members.insert(index, _member("extra", "uint256"))
        for value in values:
            value["extra"] = 1
    elif edit == "rename":
        members[index] = _member(name + "X", members[index]["type"])
        for value in values:
            value[name + "X"] = value.pop(name)
    elif edit == "retype":
        kind = members[index]["type"]
        if kind in VALUES:
            new = data.draw(st.sampled_from([k for k in VALUES if k != kind]))
            members[index] = _member(name, new)
            for value in values:
                value[name] = VALUES[new]
        else:  # a nested struct member: make it an array of it, or the other way round
            new = kind[:-2] if kind.endswith("[]") else kind + "[]"
            members[index] = _member(name, new)
            for value in values:
                value[name] = value[name][0] if kind.endswith("[]") else [value[name]]
    else:
        if len(members) < 2:
            return
        other = (index + 1) % len(members)
        members[index], members[other] = members[other], members[index]
    _refused(typed)
