"""ERC-7821 batch calls, decoded strictly: ``execute(bytes32 mode, bytes executionData)`` in batch mode.

An EIP-7702 account that has delegated runs its delegate's code when it is called; the common delegates
(ERC-7821 minimal batch executors: Solady's, Ithaca's, the delegate allowlist's usual entries) take a
batch as ``execute(mode, abi.encode(Call[]))`` with ``Call = (address to, uint256 value, bytes data)``.
Only the plain batch mode is decoded (``0x01`` then 31 zero bytes: a batch, revert on failure, no
``opData``); other modes are not decoded (``None``) and policy treats the call as one it cannot count.
A decoded batch must be exactly the canonical ABI encoding (the bytes re-encoded from what was read,
compared whole), or it is refused with ``calldata_not_canonical`` like a token call; each inner call's
calldata goes through the same token-call decoder (``calldata.decode_token_call``), so a
non-canonical inner transfer is refused as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from signer.errors import InvalidRequest
from signer.eth.calldata import CALLDATA_NOT_CANONICAL, TokenCall, decode_token_call, selector
from signer.eth.primitives import to_checksum_address

EXECUTE_SELECTOR: Final = bytes.fromhex("e9ae5c53")
EXECUTE_SIGNATURE: Final = "execute(bytes32,bytes)"
BATCH_MODE: Final = bytes([1]) + bytes(31)
MAX_CALLS: Final = 256
_WORD: Final = 32


@dataclass(frozen=True, slots=True)
class BatchCall:
    """One call of a batch: ``to``, the native ``value`` it sends, its calldata and, when that calldata
    is a token call the service knows, the decoded call."""

    to: str
    value: int
    data: bytes
    token_call: TokenCall | None

    def as_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "value": str(self.value),
            "data_length": len(self.data),
            "selector": selector(self.data),
            "token_call": None if self.token_call is None else self.token_call.as_json(),
        }


class _NotCanonical(Exception):
    pass


def _word(data: bytes, offset: int) -> int:
    if offset < 0 or offset + _WORD > len(data):
        raise _NotCanonical
    return int.from_bytes(data[offset : offset + _WORD], "big")


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % _WORD)


def _w(number: int) -> bytes:
    return number.to_bytes(_WORD, "big")


def encode_batch(calls: list[tuple[int, int, bytes]]) -> bytes:
    """The canonical ``execute(BATCH_MODE, abi.encode(Call[]))`` calldata for (to, value, data) calls."""
    tuples = [_w(to) + _w(value) + _w(3 * _WORD) + _w(len(data)) + _padded(data) for to, value, data in calls]
    offsets, running = [], _WORD * len(tuples)
    for encoded in tuples:
        offsets.append(_w(running))
        running += len(encoded)
    execution = _w(_WORD) + _w(len(tuples)) + b"".join(offsets) + b"".join(tuples)
    return EXECUTE_SELECTOR + BATCH_MODE + _w(2 * _WORD) + _w(len(execution)) + _padded(execution)


def _read(args: bytes) -> list[tuple[int, int, bytes]]:
    if _word(args, _WORD) != 2 * _WORD:
        raise _NotCanonical
    length = _word(args, 2 * _WORD)
    execution = args[3 * _WORD : 3 * _WORD + length]
    if len(execution) != length or _word(execution, 0) != _WORD:
        raise _NotCanonical
    count = _word(execution, _WORD)
    if count > MAX_CALLS:
        raise _NotCanonical
    calls = []
    for index in range(count):
        start = 2 * _WORD + _word(execution, 2 * _WORD + _WORD * index)
        to, value = _word(execution, start), _word(execution, start + _WORD)
        if to >> 160 or _word(execution, start + 2 * _WORD) != 3 * _WORD:
            raise _NotCanonical
        size = _word(execution, start + 3 * _WORD)
        data = execution[start + 4 * _WORD : start + 4 * _WORD + size]
        if len(data) != size:
            raise _NotCanonical
        calls.append((to, value, data))
    return calls


def decode_batch(data: bytes) -> tuple[BatchCall, ...] | None:
    """The calls of an ERC-7821 plain batch, or None for other calldata (another selector or mode).

    Raises ``InvalidRequest`` code ``calldata_not_canonical`` (field ``data``) when the batch, or a token
    call inside it, is not exactly its canonical ABI encoding."""
    if bytes(data[:4]) != EXECUTE_SELECTOR or bytes(data[4 : 4 + _WORD]) != BATCH_MODE:
        return None
    try:
        calls = _read(bytes(data[4:]))
        if encode_batch(calls) != bytes(data):
            raise _NotCanonical
    except _NotCanonical:
        raise InvalidRequest(
            f"calldata for {EXECUTE_SIGNATURE} is not its exact canonical ABI encoding",
            code=CALLDATA_NOT_CANONICAL,
            field="data",
        ) from None
    return tuple(
        BatchCall(to_checksum_address(to.to_bytes(20, "big")), value, inner, decode_token_call(inner))
        for to, value, inner in calls
    )
