"""I-04: unsigned serialised transactions. A corpus of malformed RLP, then fuzzing: the decoder answers
only ``InvalidRequest`` or a valid transaction whose canonical encoding is byte-identical to its input."""

from __future__ import annotations

from typing import Any

import pytest
import rlp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.eth import decode_unsigned_transaction, keccak256, parse_transaction

TO = "0x1111111111111111111111111111111111111111"
AUTH = {
    "chainId": 1,
    "address": "0x0000000000000000000000000000000000000002",
    "nonce": 0,
    "yParity": 1,
    "r": 2**255,
    "s": 2**250,
}


def _tx(tx_type: int, **extra: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {"type": tx_type, "chainId": 1, "nonce": 7, "gas": 21000, "to": TO, "value": 5}
    if tx_type in (0, 1):
        tx["gasPrice"] = 1000
    else:
        tx["maxFeePerGas"] = 2000
        tx["maxPriorityFeePerGas"] = 1000
    if tx_type == 1 or tx_type == 2:
        tx["accessList"] = [{"address": TO, "storageKeys": ["0x" + "00" * 31 + "01"]}]
    if tx_type == 4:
        tx["authorizationList"] = [AUTH]
    tx.update(extra)
    return tx


VALID = {tx_type: parse_transaction(_tx(tx_type)).signing_payload for tx_type in (0, 1, 2, 4)}
BIG = {tx_type: parse_transaction(_tx(tx_type, data="0x" + "ab" * 100)).signing_payload for tx_type in (0, 2)}


def _outcome(raw: bytes) -> None:
    """The I-04 property: a typed refusal, or a transaction that re-encodes to exactly ``raw``."""
    try:
        tx = decode_unsigned_transaction(raw)
    except InvalidRequest as error:
        assert error.extra.get("field")
        return
    assert tx.signing_payload == raw
    assert tx.digest == keccak256(raw)
    assert parse_transaction(tx.as_json()) == tx


def _rejected(raw: bytes, code: str = "invalid_transaction") -> None:
    with pytest.raises(InvalidRequest) as error:
        decode_unsigned_transaction(raw)
    assert error.value.code == code
    assert error.value.extra["field"] == "raw"


def _header(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    size = (length.bit_length() + 7) // 8
    return bytes((offset + 55 + size,)) + length.to_bytes(size, "big")


def _list(*encoded_items: bytes) -> bytes:
    payload = b"".join(encoded_items)
    return _header(len(payload), 0xC0) + payload


def _items(tx_type: int) -> list[bytes]:
    """The individually encoded top-level items of VALID[tx_type]."""
    body = VALID[tx_type] if tx_type == 0 else VALID[tx_type][1:]
    return [rlp.encode(item) for item in rlp.decode(body)]


def _rebuild(tx_type: int, items: list[bytes]) -> bytes:
    prefix = b"" if tx_type == 0 else bytes((tx_type,))
    return prefix + _list(*items)


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_valid_round_trip(tx_type: int) -> None:
    tx = decode_unsigned_transaction(VALID[tx_type])
    assert tx == parse_transaction(_tx(tx_type))
    assert tx.signing_payload == VALID[tx_type]
    # The reference library agrees on the structure.
    body = VALID[tx_type] if tx_type == 0 else VALID[tx_type][1:]
    assert rlp.encode(rlp.decode(body)) == body


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_every_truncation_is_refused(tx_type: int) -> None:
    raw = VALID[tx_type]
    for length in range(len(raw)):
        _rejected(raw[:length])


@pytest.mark.parametrize("suffix", [b"\x00", b"\x80", b"\xc0", b"\x01\x02"])
@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_trailing_bytes_are_refused(tx_type: int, suffix: bytes) -> None:
    _rejected(VALID[tx_type] + suffix)


@pytest.mark.parametrize("tx_type", [0, 2])
def test_non_minimal_list_length_prefix(tx_type: int) -> None:
    short = parse_transaction(_tx(tx_type, accessList=[]) if tx_type else _tx(0)).signing_payload
    prefix = b"" if tx_type == 0 else bytes((tx_type,))
    assert decode_unsigned_transaction(short).signing_payload == short
    payload = short[len(prefix) + 1 :]
    assert len(payload) < 56 and short[len(prefix)] == 0xC0 + len(payload)
    _rejected(prefix + b"\xf8" + bytes((len(payload),)) + payload)  # long form for a short list
    _rejected(prefix + b"\xf9" + len(payload).to_bytes(2, "big") + payload)  # length with a leading zero


@pytest.mark.parametrize("tx_type", [0, 2])
def test_non_minimal_long_list_prefix(tx_type: int) -> None:
    raw = BIG[tx_type]
    prefix = b"" if tx_type == 0 else bytes((tx_type,))
    body = raw[len(prefix) :]
    assert body[0] == 0xF8  # one length byte
    payload = body[2:]
    _rejected(prefix + b"\xf9\x00" + bytes((len(payload),)) + payload)


# Non-canonical encodings of a single field, by position in the legacy list
# [nonce, gasPrice, gas, to, value, data, chainId, 0, 0].
@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        pytest.param(0, b"\x81\x07", id="single-byte-as-string"),
        pytest.param(0, b"\xb8\x01\x07", id="long-form-short-string"),
        pytest.param(0, b"\x82\x00\x07", id="leading-zero-integer"),
        pytest.param(0, b"\x00", id="zero-as-0x00"),
        pytest.param(0, b"\x89" + b"\x01" * 9, id="nonce-over-64-bits"),
        pytest.param(2, b"\x89" + b"\x01" * 9, id="gas-over-64-bits"),
        pytest.param(4, b"\xa1" + b"\x01" * 33, id="value-over-256-bits"),
        pytest.param(0, b"\xc0", id="list-for-integer"),
        pytest.param(3, b"\xc0", id="list-for-address"),
        pytest.param(3, b"\x94" + b"\x11" * 19 + b"", id="truncated-address"),
        pytest.param(3, b"\x93" + b"\x11" * 19, id="19-byte-address"),
        pytest.param(3, b"\x95" + b"\x11" * 21, id="21-byte-address"),
        pytest.param(5, b"\xc1\x80", id="list-for-data"),
        pytest.param(7, b"\x01", id="v-not-zero"),
        pytest.param(8, b"\x01", id="r-not-zero"),
        pytest.param(7, b"\x80\x80", id="extra-field"),
    ],
)
def test_non_canonical_legacy_field(index: int, encoded: bytes) -> None:
    items = _items(0)
    items[index] = encoded
    _rejected(_rebuild(0, items))


# Typed 0x02 list: [chainId, nonce, maxPriority, maxFee, gas, to, value, data, accessList].
@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        pytest.param(0, b"\x82\x00\x01", id="chain-id-leading-zero"),
        pytest.param(8, b"\x80", id="string-for-access-list"),
        pytest.param(8, _list(b"\x80"), id="string-for-access-entry"),
        pytest.param(8, _list(_list(rlp.encode(b"\x11" * 20))), id="access-entry-missing-keys"),
        pytest.param(8, _list(_list(rlp.encode(b"\x11" * 20), b"\x80")), id="string-for-storage-keys"),
        pytest.param(
            8, _list(_list(rlp.encode(b"\x11" * 20), _list(rlp.encode(b"\x01" * 31)))), id="31-byte-key"
        ),
        pytest.param(8, _list(_list(rlp.encode(b"\x11" * 19), _list())), id="19-byte-access-address"),
        pytest.param(8, _list(_list(rlp.encode(b"\x11" * 20), _list(), b"\x80")), id="access-entry-3-items"),
    ],
)
def test_non_canonical_typed_field(index: int, encoded: bytes) -> None:
    items = _items(2)
    items[index] = encoded
    _rejected(_rebuild(2, items))


def test_authorization_entry_shapes() -> None:
    items = _items(4)
    auth = [rlp.encode(x) for x in rlp.decode(items[9])[0]]
    for broken in (
        auth[:5],  # five fields
        [*auth, b"\x80"],  # seven fields
        [*auth[:3], b"\x02", *auth[4:]],  # yParity 2
        [*auth[:3], b"\x82\x01\x00", *auth[4:]],  # yParity 256
        [auth[0], rlp.encode(b"\x02" * 21), *auth[2:]],  # 21-byte delegate
        [*auth[:2], b"\x89" + b"\x01" * 9, *auth[3:]],  # nonce over 64 bits
    ):
        items[9] = _list(_list(*broken))
        _rejected(_rebuild(4, items))
    items[9] = _list()  # empty authorisation list: invalid for type 4
    with pytest.raises(InvalidRequest) as error:
        decode_unsigned_transaction(_rebuild(4, items))
    assert (error.value.code, error.value.extra["field"]) == ("invalid_field", "authorizationList")


def test_type_4_cannot_create_a_contract() -> None:
    items = _items(4)
    items[5] = b"\x80"
    with pytest.raises(InvalidRequest) as error:
        decode_unsigned_transaction(_rebuild(4, items))
    assert (error.value.code, error.value.extra["field"]) == ("missing_field", "to")


@pytest.mark.parametrize("type_byte", [0x00, 0x03, 0x05, 0x7F, 0x80, 0xB7, 0xBF])
def test_wrong_type_byte(type_byte: int) -> None:
    _rejected(bytes((type_byte,)) + VALID[2][1:])


@pytest.mark.parametrize(
    ("from_type", "to_type"),
    [(1, 2), (2, 1), (2, 4), (4, 2), (1, 4)],
)
def test_payload_under_another_type_byte(from_type: int, to_type: int) -> None:
    _rejected(bytes((to_type,)) + VALID[from_type][1:])


def test_typed_payload_without_type_byte_and_legacy_with_one() -> None:
    _rejected(VALID[2][1:])  # a 9-item list read as legacy: the last two must be 0, 0
    _rejected(b"\x02" + VALID[0])


def test_signed_transactions_are_not_unsigned_ones() -> None:
    for tx_type in (0, 2):
        items = _items(tx_type)
        if tx_type == 0:
            items[6:] = [rlp.encode(37), rlp.encode(2**255), rlp.encode(2**254)]
        else:
            items += [b"\x01", rlp.encode(2**255), rlp.encode(2**254)]
        _rejected(_rebuild(tx_type, items))


def test_pre_eip155_legacy_is_refused() -> None:
    _rejected(_rebuild(0, _items(0)[:6]))  # the six-field pre-EIP-155 form
    items = _items(0)
    items[6] = b"\x80"  # chain id 0 in the EIP-155 form
    with pytest.raises(InvalidRequest) as error:
        decode_unsigned_transaction(_rebuild(0, items))
    assert error.value.code == "invalid_chain_id"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x02",
        b"\xc0",
        b"\x02\xc0",
        b"\x80",
        b"\xbf\xff\xff\xff\xff\xff\xff\xff\xff",  # string of 2**64-1 bytes announced
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # list of 2**64-1 bytes announced
        b"\xb9\x00\x40" + b"\x00" * 64,  # length field with a leading zero
        b"\xf8\x00",
    ],
)
def test_corpus_of_small_garbage(raw: bytes) -> None:
    _rejected(raw)


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    encoded = b"\xc0"
    for _ in range(20_000):
        encoded = _header(len(encoded), 0xC0) + encoded
    for raw in (encoded, b"\x02" + encoded):
        _rejected(raw)


def test_non_bytes_input() -> None:
    for value in (bytearray(VALID[2]), VALID[2].hex(), None):
        with pytest.raises(InvalidRequest) as error:
            decode_unsigned_transaction(value)  # type: ignore[arg-type]
        assert error.value.code == "invalid_transaction"


FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(raw=st.binary(max_size=300))
@example(raw=VALID[0])
@example(raw=VALID[4])
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    _outcome(raw)


@FUZZ
@given(
    tx_type=st.sampled_from([0, 1, 2, 4]),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "set"]), st.integers(0, 400), st.integers(0, 255)
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_valid_transactions(tx_type: int, edits: list[tuple[str, int, int]]) -> None:
    raw = bytearray(VALID[tx_type])
    for operation, position, value in edits:
        position %= len(raw) + 1
        if operation == "insert":
            raw.insert(position, value)
        elif raw and position < len(raw):
            if operation == "flip":
                raw[position] ^= 1 << (value % 8)
            elif operation == "delete":
                del raw[position]
            else:
                raw[position] = value
    _outcome(bytes(raw))


_integers = st.one_of(
    st.integers(0, 2**70).map(lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")),
    st.binary(max_size=34),  # includes leading zeros and oversize values
)
_leaf = st.one_of(_integers, st.binary(min_size=19, max_size=21), st.binary(max_size=60))
_items_strategy = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=6), max_leaves=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", b"\x01", b"\x02", b"\x04"]),
    fields=st.lists(_items_strategy, min_size=6, max_size=11),
)
def test_fuzz_structured_rlp(prefix: bytes, fields: list[Any]) -> None:
    """Well-formed RLP lists of about the right arity with arbitrary contents: the semantic layer."""
    _outcome(prefix + rlp.encode(fields))
