"""ERC-7821 plain batches (``execute(bytes32,bytes)``) decode strictly: the canonical encoding (the one
eth-abi writes) decodes to its calls, with each inner token call decoded by the same strict decoder;
every other encoding of the same batch is refused with ``calldata_not_canonical``; other modes and other
selectors are not batches."""

from __future__ import annotations

import pytest
from eth_abi import encode

from signer.errors import InvalidRequest
from signer.eth.batch import BATCH_MODE, EXECUTE_SELECTOR, decode_batch, encode_batch

TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def transfer(recipient: str, amount: int) -> bytes:
    return bytes.fromhex("a9059cbb" + recipient[2:].lower().rjust(64, "0") + format(amount, "064x"))


def by_eth_abi(calls: list[tuple[str, int, bytes]], mode: bytes = BATCH_MODE) -> bytes:
    inner = encode(["(address,uint256,bytes)[]"], [calls])
    return EXECUTE_SELECTOR + encode(["bytes32", "bytes"], [mode, inner])


CALLS = [(TOKEN, 0, transfer(BOB, 5)), (BOB, 7, b""), (BOB, 0, b"\xde\xad\xbe\xef\x01")]


def test_the_canonical_batch_decodes_and_matches_eth_abi() -> None:
    data = by_eth_abi(CALLS)
    assert encode_batch([(int(to, 16), value, inner) for to, value, inner in CALLS]) == data
    calls = decode_batch(data)
    assert calls is not None and [(c.to, c.value, c.data) for c in calls] == CALLS
    assert calls[0].token_call is not None and calls[0].token_call.recipient == BOB
    assert calls[0].token_call.amount == 5
    assert calls[1].token_call is None and calls[2].token_call is None
    assert decode_batch(by_eth_abi([])) == ()


def _mutations() -> dict[str, bytes]:
    data = by_eth_abi(CALLS)
    outer_offset = 4 + 32
    inner_start = 4 + 96
    first_tuple = inner_start + 64 + 32 * len(CALLS)
    return {
        "trailing_byte": data + b"\x00",
        "trailing_word": data + bytes(32),
        "short": data[:-1],
        "outer_offset": data[:outer_offset] + (0x60).to_bytes(32, "big") + data[outer_offset + 32 :],
        "array_offset": data[:inner_start] + (0x40).to_bytes(32, "big") + data[inner_start + 32 :],
        "dirty_address": data[:first_tuple] + b"\xff" + data[first_tuple + 1 :],
        "dirty_padding": data[:-1] + b"\x01",
        "inner_transfer_not_canonical": by_eth_abi([(TOKEN, 0, transfer(BOB, 5) + b"\x00")]),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_every_other_encoding_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_batch(_mutations()[name])
    assert refused.value.code == "calldata_not_canonical" and refused.value.extra["field"] == "data"


def test_other_modes_and_selectors_are_not_batches() -> None:
    assert (
        decode_batch(by_eth_abi(CALLS, mode=bytes([1]) + bytes(5) + bytes.fromhex("78210001") + bytes(22)))
        is None
    )
    assert decode_batch(by_eth_abi(CALLS, mode=bytes(32))) is None
    assert decode_batch(transfer(BOB, 1)) is None
    assert decode_batch(b"") is None
