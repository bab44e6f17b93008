"""Registered functions (signer/eth/functions.py): canonical signatures only, an ABI's functions with
tuples spelled canonically, selectors from Keccak-256, and calldata decoded only when it is exactly
the canonical encoding."""

from __future__ import annotations

import pytest
from eth_abi import encode

from signer.errors import InvalidRequest
from signer.eth.functions import abi_functions, decode_call, parse_signature, selector_of


def test_selectors_match_the_known_ones() -> None:
    assert selector_of("transfer(address,uint256)") == "0xa9059cbb"
    assert selector_of("approve(address,uint256)") == "0x095ea7b3"


@pytest.mark.parametrize(
    "text",
    ["transfer(address, uint256)", "transfer(uint)", "x", "t(address", "t(address))", "1x()", 5, "t(foo)"],
)
def test_only_canonical_signatures(text: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_signature(text)
    assert refused.value.code == "invalid_signature"


def test_an_abis_functions_are_canonical() -> None:
    abi = [
        {"type": "constructor", "inputs": []},
        {"type": "event", "name": "Paid", "inputs": [{"type": "address"}]},
        {
            "type": "function",
            "name": "sweep",
            "inputs": [
                {"name": "to", "type": "address"},
                {"name": "legs", "type": "tuple[]", "components": [{"type": "uint8"}, {"type": "bytes32"}]},
            ],
        },
        {"type": "function", "name": "pause", "inputs": []},
    ]
    assert abi_functions(abi) == ["sweep(address,(uint8,bytes32)[])", "pause()"]
    assert abi_functions({"abi": abi}) == abi_functions(abi)
    for bad in ({"x": 1}, [], [{"type": "function", "name": "f", "inputs": [{"type": "uint7"}]}]):
        with pytest.raises(InvalidRequest):
            abi_functions(bad)


def test_calldata_decoded_only_when_canonical() -> None:
    signature = "payout(address,uint256,(uint8,string))"
    args = ["0x" + "ab" * 20, 1500, (3, "march")]
    data = bytes.fromhex(selector_of(signature)[2:]) + encode(["address", "uint256", "(uint8,string)"], args)
    assert decode_call(signature, data) == [
        {"type": "address", "value": "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"},
        {"type": "uint256", "value": "1500"},
        {"type": "(uint8,string)", "value": ["3", "march"]},
    ]
    assert decode_call(signature, data + b"\x00") is None  # trailing bytes
    assert decode_call(signature, data[:-1]) is None  # short
    assert decode_call("other(address)", data) is None  # another selector
    dirty = bytearray(data)
    dirty[4] = 1  # a dirty high byte in the address word
    assert decode_call(signature, bytes(dirty)) is None
