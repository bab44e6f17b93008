"""signer.eth.rpc: the clients' spellings of a transaction end in the one shape parse_transaction takes, and
the same transaction written differently signs the same bytes; contradictions are refused by field."""

from __future__ import annotations

from typing import Any

import pytest

from signer.config import mask_upstream_url
from signer.errors import InvalidRequest
from signer.eth.rpc import rpc_transaction, sign_data, typed_data_document, wants_fees
from signer.eth.transactions import parse_transaction

SENDER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
TO = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def payload(value: dict[str, Any]) -> bytes:
    sender, tx = rpc_transaction(value)
    assert sender == SENDER
    return parse_transaction(tx).signing_payload


def test_spellings_sign_the_same_bytes() -> None:
    hexed = {"from": SENDER.lower(), "to": TO, "nonce": "0x7", "gas": "0x5208", "chainId": "0x1",
             "value": "0x64", "input": "0xabcd", "maxFeePerGas": "0x64",
             "maxPriorityFeePerGas": "0x1"}  # fmt: skip
    decimal = {"from": SENDER, "to": TO, "nonce": 7, "gasLimit": "21000", "chainId": 1, "value": "100",
               "data": "0xabcd", "maxFeePerGas": 100, "maxPriorityFeePerGas": "1", "type": "0x2"}  # fmt: skip
    assert payload(hexed) == payload(decimal)
    pairs = {**decimal, "accessList": [[TO, ["0x" + "11" * 32]]]}
    objects = {**decimal, "accessList": [{"address": TO, "storageKeys": ["0x" + "11" * 32]}]}
    assert payload(pairs) == payload(objects)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"gasPrice": 1}, 0),
        ({"gasPrice": 1, "accessList": []}, 1),
        ({"maxFeePerGas": 2, "maxPriorityFeePerGas": 1}, 2),
        ({"maxFeePerGas": 2, "maxPriorityFeePerGas": 1, "authorizationList": [
            {"chainId": 1, "address": TO, "nonce": 0, "v": 28, "r": 1, "s": 2}]}, 4),
    ],
)  # fmt: skip
def test_type_inferred(fields: dict[str, Any], expected: int) -> None:
    _, tx = rpc_transaction({"from": SENDER, "to": TO, "nonce": 0, "gas": 21000, "chainId": 1, **fields})
    assert tx["type"] == expected
    parsed = parse_transaction(tx)
    if expected == 4:
        assert parsed.fields.authorizations[0].y_parity == 1  # v 28


def test_send_defaults_to_eip1559_and_names_missing_fees() -> None:
    _, tx = rpc_transaction({"from": SENDER, "to": TO}, default_type=2)
    assert tx["type"] == 2 and wants_fees(tx) == ["maxPriorityFeePerGas", "maxFeePerGas"]
    _, tx = rpc_transaction({"from": SENDER, "to": TO, "gasPrice": 5}, default_type=2)
    assert tx["type"] == 0 and wants_fees(tx) == []


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"to": TO}, "from"),
        ({"from": SENDER, "input": "0x01", "data": "0x02"}, "input"),
        ({"from": SENDER, "gas": 1, "gasLimit": 2}, "gasLimit"),
        ({"from": SENDER, "authorizationList": [{"v": 29}]}, "authorizationList[0].v"),
        ({"from": "0x1234"}, "from"),
    ],
)
def test_contradictions_refused_by_field(value: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        rpc_transaction(value)
    assert refused.value.extra["field"] == field
    assert "0x02" not in refused.value.message


def test_sign_data_and_typed_data() -> None:
    assert sign_data("0x6869", "data", text_allowed=False) == b"hi"
    assert sign_data("hi", "data", text_allowed=True) == b"hi"
    with pytest.raises(InvalidRequest):
        sign_data("hi", "data", text_allowed=False)
    assert typed_data_document('{"a": 1}') == {"a": 1}
    for bad in ("[1]", "{", "[" * 600 + "]" * 600, 5):
        with pytest.raises(InvalidRequest):
            typed_data_document(bad)


def test_upstream_url_shown_without_its_key() -> None:
    assert mask_upstream_url("https://mainnet.infura.io/v3/abcdef") == "https://mainnet.infura.io/***"
    assert mask_upstream_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
