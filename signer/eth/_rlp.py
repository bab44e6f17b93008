"""Strict, canonical RLP for the transactions we sign: an encoder and a decoder that accepts one form only.

Every RLP value has exactly one canonical encoding; the decoder here refuses every other one (long
forms for short payloads, length fields with leading zeros, a single low byte wrapped as a string,
trailing or missing bytes, nesting deeper than a transaction needs). That is what makes a decoded
transaction's re-encoding byte-identical to its input, so an approver who saw the decoded fields has
seen exactly the bytes that get signed. Raises ``RlpError`` (internal); callers turn it into the
service's ``InvalidRequest``.
"""

from __future__ import annotations

from typing import Final, TypeAlias

# An RLP item is a byte string or a list of items.
Item: TypeAlias = "bytes | list[Item]"

# A signed-transaction payload nests three levels (tx -> accessList -> entry -> storageKeys); anything
# deeper is not a transaction, and a bound keeps the recursive decoder far from Python's stack limit.
MAX_DEPTH = 8


class RlpError(ValueError):
    """Malformed or non-canonical RLP. The message names the defect, never the data."""


def encode_int(value: int) -> bytes:
    """The minimal big-endian byte string of a non-negative integer (0 is the empty string)."""
    if value < 0:
        raise RlpError("negative integer")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    encoded_length = encode_int(length)
    return bytes((offset + 55 + len(encoded_length),)) + encoded_length


# The one-byte prefixes of short strings and short lists, looked up rather than built per item: a
# transaction is a dozen short items, and building each prefix was a third of encoding's cost.
_SHORT_STRING: Final = tuple(bytes((0x80 + length,)) for length in range(56))
_SHORT_LIST: Final = tuple(bytes((0xC0 + length,)) for length in range(56))


def _encode_bytes(item: bytes) -> bytes:
    length = len(item)
    if length < 56:
        if length == 1 and item[0] < 0x80:
            return item
        return _SHORT_STRING[length] + item
    return _length_prefix(length, 0x80) + item


def list_prefix(length: int) -> bytes:
    """The prefix of a list whose children's encodings total ``length`` bytes."""
    return _SHORT_LIST[length] if length < 56 else _length_prefix(length, 0xC0)


def encode(item: Item) -> bytes:
    if type(item) is bytes:
        return _encode_bytes(item)
    if type(item) is list:
        payload = b"".join(
            [_encode_bytes(child) if type(child) is bytes else encode(child) for child in item]
        )
        return list_prefix(len(payload)) + payload
    # Subclasses, bytearray and tuples: the general rules, with copies to plain bytes.
    if isinstance(item, bytes | bytearray):
        return _encode_bytes(bytes(item))
    if isinstance(item, list | tuple):
        payload = b"".join([encode(child) for child in item])
        return list_prefix(len(payload)) + payload
    raise RlpError("unencodable item")


def _read_length(data: bytes, pos: int, size: int, end: int) -> int:
    if pos + size > end:
        raise RlpError("truncated length")
    length_bytes = data[pos : pos + size]
    if length_bytes[0] == 0:
        raise RlpError("length with leading zero")
    length = int.from_bytes(length_bytes, "big")
    if length < 56:
        raise RlpError("long form for short payload")
    return length


def _decode_at(data: bytes, pos: int, end: int, depth: int) -> tuple[Item, int]:
    """Decode one item starting at ``pos`` that must finish by ``end``; return it and the next position."""
    if pos >= end:
        raise RlpError("truncated item")
    prefix = data[pos]
    if prefix < 0x80:
        return data[pos : pos + 1], pos + 1
    if prefix < 0xB8:
        length = prefix - 0x80
        start = pos + 1
        if start + length > end:
            raise RlpError("truncated string")
        if length == 1 and data[start] < 0x80:
            raise RlpError("single byte below 0x80 wrapped as a string")
        return data[start : start + length], start + length
    if prefix < 0xC0:
        size = prefix - 0xB7
        length = _read_length(data, pos + 1, size, end)
        start = pos + 1 + size
        if start + length > end:
            raise RlpError("truncated string")
        return data[start : start + length], start + length
    if depth >= MAX_DEPTH:
        raise RlpError("nesting too deep")
    if prefix < 0xF8:
        length = prefix - 0xC0
        start = pos + 1
    else:
        size = prefix - 0xF7
        length = _read_length(data, pos + 1, size, end)
        start = pos + 1 + size
    stop = start + length
    if stop > end:
        raise RlpError("truncated list")
    children: list[Item] = []
    cursor = start
    while cursor < stop:
        child, cursor = _decode_at(data, cursor, stop, depth + 1)
        children.append(child)
    return children, stop


def decode(data: bytes) -> Item:
    """Decode exactly one canonical item spanning all of ``data``."""
    item, stop = _decode_at(data, 0, len(data), 0)
    if stop != len(data):
        raise RlpError("trailing bytes")
    return item


def decode_int(item: Item, max_bytes: int) -> int:
    """A canonical integer field: a byte string of at most ``max_bytes`` with no leading zero byte."""
    if not isinstance(item, bytes):
        raise RlpError("list where an integer was expected")
    if len(item) > max_bytes:
        raise RlpError("integer too large")
    if item[:1] == b"\x00":
        raise RlpError("integer with leading zero")
    return int.from_bytes(item, "big")


def decode_bytes(item: Item) -> bytes:
    if not isinstance(item, bytes):
        raise RlpError("list where a byte string was expected")
    return item


def decode_list(item: Item) -> list[Item]:
    if not isinstance(item, list):
        raise RlpError("byte string where a list was expected")
    return item
