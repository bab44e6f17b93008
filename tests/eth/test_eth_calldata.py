"""Token calls decode strictly or are refused (issue 10 section 1), checked against eth-abi.

Every call the service understands (``signer.eth.calldata.SHAPES``) is encoded here by eth-abi, an
independent implementation, from values hypothesis draws; the decoder must read those values back.
Then the class of bypass: a structural mutation of the canonical encoding (trailing bytes, short data,
dirty address or boolean padding, dirty ``bytes`` padding, wrong offsets) is refused with
``calldata_not_canonical``, through ``parse_transaction`` and ``decode_unsigned_transaction`` alike and
whatever the transaction type; and any byte-level mutation at all is either refused or is exactly the
canonical encoding of what was decoded. Through the policy engine: no mutation ever gets a weaker
decision than the canonical call.
"""

from __future__ import annotations

from typing import Any

import pytest
import rlp
from eth_abi import encode
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import Effect, PolicyError, evaluate
from signer.errors import InvalidRequest
from signer.eth import decode_token_call, decode_unsigned_transaction, parse_transaction
from signer.eth.calldata import SHAPES, CallShape
from signer.eth.primitives import UINT256_MAX
from tests.policy.support import full_facts, policy_set, request, rule

TOKEN = "0x" + "70" * 20
SHAPE_LIST = sorted(SHAPES.items(), key=lambda item: item[1].signature)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
uints = st.one_of(st.integers(0, 2**64), st.integers(0, UINT256_MAX), st.just(UINT256_MAX))


def _values(kind: str) -> st.SearchStrategy[Any]:
    if kind == "address":
        return addresses
    if kind == "uint256":
        return uints
    if kind == "bool":
        return st.booleans()
    if kind == "bytes":
        return st.binary(max_size=80)
    return st.lists(st.integers(0, 2**128), max_size=4)  # uint256[]


@st.composite
def calls(draw: st.DrawFn) -> tuple[bytes, CallShape, list[Any]]:
    selector, shape = draw(st.sampled_from(SHAPE_LIST))
    values = [draw(_values(kind)) for kind in shape.arguments]
    if shape.method == "safeBatchTransferFrom":
        values[3] = draw(st.lists(st.integers(0, 2**128), min_size=len(values[2]), max_size=len(values[2])))
    return selector + encode(list(shape.arguments), values), shape, values


def _refused(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as error:
        decode_token_call(data)
    assert error.value.code == "calldata_not_canonical"
    assert error.value.extra["field"] == "data"
    if len(data) > 8:  # nothing the caller sent is echoed
        assert data[4:].hex() not in str(error.value) and data[-4:].hex() not in str(error.value)


def _tx(data: bytes, tx_type: int = 2, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": tx_type, "chainId": 1, "nonce": 0, "gas": 90000, "to": TOKEN}
    fields.update({"value": 0, "data": "0x" + data.hex()})
    if tx_type in (0, 1):
        fields["gasPrice"] = 10**9
    else:
        fields.update(maxFeePerGas=10**9, maxPriorityFeePerGas=1)
    if tx_type == 4:
        fields["authorizationList"] = [
            {"chainId": 1, "address": "0x" + "de" * 20, "nonce": 0, "yParity": 0, "r": 1, "s": 1}
        ]
    fields.update(overrides)
    return fields


# -- the canonical encodings decode to what was encoded ---------------------------------------------


@SETTINGS
@given(calls())
def test_every_understood_call_decodes_to_what_eth_abi_encoded(case) -> None:
    data, shape, values = case
    call = decode_token_call(data)
    assert call is not None and call.signature == shape.signature
    method = shape.method
    if method in ("transfer", "approve", "increaseAllowance", "decreaseAllowance", "setApprovalForAll"):
        assert call.recipient == values[0] and call.owner is None
    else:
        assert (call.owner, call.recipient) == (values[0], values[1])
    expected = {
        "transfer": lambda: values[1],
        "approve": lambda: values[1],
        "increaseAllowance": lambda: values[1],
        "transferFrom": lambda: values[2],
        "decreaseAllowance": lambda: 0,
        "setApprovalForAll": lambda: UINT256_MAX if values[1] else 0,
    }.get(method)
    if expected is not None:
        assert call.amount == expected()
    elif shape.standard == "erc721":
        assert (call.amount, call.token_ids) == (1, (values[2],))
    elif method == "safeTransferFrom":
        assert (call.amount, call.token_ids) == (values[3], (values[2],))
    else:
        assert (call.amount, call.token_ids) == (min(sum(values[3]), UINT256_MAX), tuple(values[2]))


def test_an_unknown_selector_is_not_a_token_call_and_a_creation_is_not_a_call() -> None:
    assert decode_token_call(bytes.fromhex("deadbeef") + b"\x01" * 33) is None
    assert decode_token_call(b"\xa9\x05\x9c") is None
    # Init code that happens to start with a token selector is not a call: it is not decoded.
    creation = parse_transaction(_tx(bytes.fromhex("a9059cbb") + b"\x01", to=None))
    assert creation.fields.token_call is None


def test_a_batch_with_more_ids_than_amounts_is_refused() -> None:
    selector = bytes.fromhex("2eb2c2d6")
    shape = SHAPES[selector]
    data = selector + encode(list(shape.arguments), [TOKEN, TOKEN, [1, 2], [5], b""])
    _refused(data)


# -- structural mutations: every member of the class is refused -------------------------------------


def _head_kinds(shape: CallShape) -> list[tuple[int, str]]:
    return [(4 + 32 * index, kind) for index, kind in enumerate(shape.arguments)]


@st.composite
def structural_mutations(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    """(canonical, mutated, what was done): each mutation keeps the selector and breaks the encoding."""
    data, shape, values = draw(calls())
    options = ["trailing", "short"]
    heads = _head_kinds(shape)
    if any(kind == "address" for _, kind in heads):
        options.append("dirty_address")
    if any(kind == "bool" for _, kind in heads):
        options.append("dirty_bool")
    if any(kind not in ("address", "uint256", "bool") for _, kind in heads):
        options.append("wrong_offset")
    blobs = [v for v, kind in zip(values, shape.arguments, strict=True) if kind == "bytes"]
    if blobs and len(blobs[0]) % 32:
        options.append("dirty_bytes_padding")
    what = draw(st.sampled_from(options))
    mutated = bytearray(data)
    if what == "trailing":
        mutated += draw(
            st.sampled_from([b"\x00", b"\x00" * 32, b"\x01"]) | st.binary(min_size=1, max_size=70)
        )
    elif what == "short":
        mutated = mutated[: draw(st.integers(4, len(data) - 1))]
    elif what == "dirty_address":
        at = draw(st.sampled_from([at for at, kind in heads if kind == "address"]))
        mutated[at + draw(st.integers(0, 11))] = draw(st.integers(1, 255))
    elif what == "dirty_bool":
        at = draw(st.sampled_from([at for at, kind in heads if kind == "bool"]))
        position = draw(st.integers(0, 31))
        mutated[at + position] = draw(st.integers(2 if position == 31 else 1, 255))
    elif what == "wrong_offset":
        at = draw(st.sampled_from([at for at, kind in heads if kind not in ("address", "uint256", "bool")]))
        canonical = int.from_bytes(data[at : at + 32], "big")
        other = draw(
            st.sampled_from([canonical + 32, canonical - 32, canonical + 1, 0, len(data) - 4])
            | st.integers(0, UINT256_MAX)
        )
        if other == canonical:
            other += 32
        mutated[at : at + 32] = (other % 2**256).to_bytes(32, "big")
    else:  # dirty_bytes_padding: the last byte of the calldata is always padding here
        mutated[-1] = draw(st.integers(1, 255))
    return data, bytes(mutated), what


@SETTINGS
@given(structural_mutations())
def test_structural_mutations_of_a_canonical_call_are_refused(case) -> None:
    canonical, mutated, _ = case
    assert decode_token_call(canonical) is not None
    _refused(mutated)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structural_mutations(), st.sampled_from([0, 1, 2, 4]))
def test_refused_on_every_transaction_type_and_entry_point(case, tx_type: int) -> None:
    canonical, mutated, _ = case
    parse_transaction(_tx(canonical, tx_type))
    with pytest.raises(InvalidRequest) as error:
        parse_transaction(_tx(mutated, tx_type))
    assert error.value.code == "calldata_not_canonical"
    # The serialised entry point: the unsigned encoding (by the rlp package) with the mutated calldata.
    assert decode_unsigned_transaction(_unsigned(canonical, tx_type)).fields.token_call is not None
    with pytest.raises(InvalidRequest) as error:
        decode_unsigned_transaction(_unsigned(mutated, tx_type))
    assert error.value.code == "calldata_not_canonical"


def _unsigned(data: bytes, tx_type: int) -> bytes:
    to = bytes.fromhex(TOKEN[2:])
    if tx_type == 0:
        return rlp.encode([0, 10**9, 90000, to, 0, data, 1, 0, 0])
    if tx_type == 1:
        return b"\x01" + rlp.encode([1, 0, 10**9, 90000, to, 0, data, []])
    fields = [1, 0, 1, 10**9, 90000, to, 0, data, []]
    if tx_type == 4:
        fields.append([[1, bytes.fromhex("de" * 20), 0, 0, 1, 1]])
    return bytes([tx_type]) + rlp.encode(fields)


@SETTINGS
@given(calls(), st.data())
def test_anything_accepted_is_the_canonical_encoding_of_what_was_decoded(case, data) -> None:
    """Any byte-level edit (flip, insert, delete) is either refused or re-encodes (by eth-abi) to itself."""
    canonical, shape, _ = case
    mutated = bytearray(canonical)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(4, len(mutated)))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if edit == "flip" and at < len(mutated):
            mutated[at] ^= data.draw(st.integers(1, 255))
        elif edit == "insert":
            mutated[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif at < len(mutated):
            del mutated[at]
    try:
        call = decode_token_call(bytes(mutated))
    except InvalidRequest as error:
        assert error.code == "calldata_not_canonical"
        return
    assert call is not None and call.signature == shape.signature
    again = list(_reencode_values(shape, bytes(mutated)))
    assert shape_selector(shape) + encode(list(shape.arguments), again) == bytes(mutated)


def shape_selector(shape: CallShape) -> bytes:
    return next(selector for selector, s in SHAPES.items() if s is shape)


def _reencode_values(shape: CallShape, data: bytes) -> tuple[Any, ...]:
    from eth_abi import decode

    return tuple(
        list(v) if isinstance(v, tuple) else v for v in decode(list(shape.arguments), data[4:], strict=True)
    )


# -- through the policy engine: never a weaker decision ---------------------------------------------

RANK = {Effect.ALLOW: 0, Effect.REQUIRE_APPROVAL: 1, Effect.DENY: 2, "refused": 3}


def _judge(data: bytes, rules: list[dict[str, Any]]) -> Effect | str:
    from policy import TransactionView

    try:
        fields = parse_transaction(_tx(data)).fields
    except InvalidRequest as error:
        assert error.code == "calldata_not_canonical"
        return "refused"
    try:
        req = request(transaction=TransactionView.from_decoded(fields))
    except PolicyError:
        return "refused"
    policies = policy_set(*rules)
    return evaluate(req, policies, full_facts(req, policies), now=_now()).effect


def _now():
    from tests.policy.support import NOW

    return NOW


@SETTINGS
@given(structural_mutations(), st.sampled_from(["value_cap", "denylist", "approval", "spend_limit"]))
def test_no_mutation_gets_a_weaker_decision_than_the_canonical_call(case, which: str) -> None:
    canonical, mutated, _ = case
    call = decode_token_call(canonical)
    assert call is not None
    token = TOKEN
    rules = {
        "value_cap": [rule("cap", "value_cap", max_value="0", asset=token)],
        "denylist": [rule("deny", "recipient_denylist", addresses=[call.recipient.lower()])],
        "approval": [rule("big", "value_cap", "require_approval", max_value="0", asset=token)],
        "spend_limit": [
            rule("daily", "spend_limit", max_value="0", asset=token, window_seconds=86400, per="key")
        ],
    }[which]
    assert RANK[_judge(mutated, rules)] >= RANK[_judge(canonical, rules)]
    assert _judge(mutated, rules) == "refused"
