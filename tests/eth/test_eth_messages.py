"""EIP-191 and EIP-712 digests: known answers from the EIP and from MetaMask's v4 vectors, random typed
data checked against eth-account's encoder and recover_message, and the strict refusals (I-09)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct, encode_typed_data
from eth_test_support import address_of, hsm_sign, private_keys, public_key_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.eth import (
    keccak256,
    message_signature_bytes,
    personal_message_digest,
    recoverable_signature,
    to_checksum_address,
    typed_data_digest,
)

# ---------------------------------------------------------------------------------------------------
# EIP-191 personal_sign


@settings(max_examples=150, deadline=None)
@given(secret=private_keys, message=st.binary(max_size=300), high_s=st.booleans())
def test_personal_message_against_eth_account(secret: bytes, message: bytes, high_s: bool) -> None:
    signable = encode_defunct(primitive=message)
    digest = personal_message_digest(message)
    assert digest == bytes(_hash_eip191_message(signable))
    signature = recoverable_signature(digest, hsm_sign(secret, digest, high_s=high_s), public_key_of(secret))
    packed = message_signature_bytes(signature)
    assert packed[64] in (27, 28)
    assert Account.recover_message(signable, signature=packed) == address_of(secret)
    # eth-account signs deterministically: the same key and message give the very same 65 bytes.
    assert packed == bytes(Account.sign_message(signable, secret).signature)


def test_personal_message_known_answer() -> None:
    # keccak256("\x19Ethereum Signed Message:\n11hello world"), as computed by every wallet.
    assert (
        personal_message_digest(b"hello world").hex()
        == "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
    )
    assert personal_message_digest(b"") == keccak256(b"\x19Ethereum Signed Message:\n0")


def test_personal_message_needs_bytes() -> None:
    with pytest.raises(InvalidRequest):
        personal_message_digest("hello")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# EIP-712 known answers

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
DOMAIN = {
    "name": "Ether Mail",
    "version": "1",
    "chainId": 1,
    "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
}
MAIL = {
    "types": {
        "EIP712Domain": DOMAIN_TYPE,
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": DOMAIN,
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}
# MetaMask eth-sig-util's v4 "dynamic array" vector (also used by ethers, Trust Wallet, Nethereum).
MAIL_ARRAYS = {
    "types": {
        "EIP712Domain": DOMAIN_TYPE,
        "Person": [{"name": "name", "type": "string"}, {"name": "wallets", "type": "address[]"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person[]"},
            {"name": "contents", "type": "string"},
        ],
        "Group": [{"name": "name", "type": "string"}, {"name": "members", "type": "Person[]"}],
    },
    "primaryType": "Mail",
    "domain": DOMAIN,
    "message": {
        "from": {
            "name": "Cow",
            "wallets": [
                "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826",
                "0xDeaDbeefdEAdbeefdEadbEEFdeadbeEFdEaDbeeF",
            ],
        },
        "to": [
            {
                "name": "Bob",
                "wallets": [
                    "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB",
                    "0xB0BdaBea57B0BDABeA57b0bdABEA57b0BDabEa57",
                    "0xB0B0b0b0b0b0B000000000000000000000000000",
                ],
            }
        ],
        "contents": "Hello, Bob!",
    },
}


def test_eip712_reference_example() -> None:
    result = typed_data_digest(MAIL)
    assert result.domain_separator.hex() == "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    assert result.message_hash.hex() == "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    assert result.digest.hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    assert result.primary_type == "Mail"
    assert result.domain == DOMAIN
    # The EIP's own signature with the key keccak256("cow").
    secret = keccak256(b"cow")
    signature = recoverable_signature(
        result.digest, hsm_sign(secret, result.digest, high_s=True), public_key_of(secret)
    )
    assert (signature.recovery_id + 27, signature.r, signature.s) == (
        28,
        0x4355C47D63924E8A72E509B65029052EB6C299D53A04E167C5775FD466751C9D,
        0x07299936D304C153F6443DFA05F40FF007D72911B6F72307F996231605B91562,
    )


def test_metamask_v4_arrays_vector() -> None:
    result = typed_data_digest(MAIL_ARRAYS)
    assert result.message_hash.hex() == "eb4221181ff3f1a83ea7313993ca9218496e424604ba9492bb4052c03d5c3df8"
    assert result.digest.hex() == "a85c2e2b118698e88db68a8105b794a8cc7cec074e89ef991cb4f5f533819cc2"
    secret = keccak256(b"cow")
    signature = recoverable_signature(
        result.digest, hsm_sign(secret, result.digest, high_s=False), public_key_of(secret)
    )
    assert message_signature_bytes(signature).hex() == (
        "65cbd956f2fae28a601bebc9b906cea0191744bd4c4247bcd27cd08f8eb6b71c"
        "78efdf7a31dc9abee78f492292721f362d296cf86b4538e07b51303b67f749061b"
    )


def test_domain_type_may_be_omitted_and_is_derived() -> None:
    without = copy.deepcopy(MAIL)
    del without["types"]["EIP712Domain"]
    assert typed_data_digest(without).digest == typed_data_digest(MAIL).digest


def test_canonical_json_round_trip() -> None:
    result = typed_data_digest(MAIL_ARRAYS)
    assert typed_data_digest(result.as_json()).digest == result.digest
    assert result.as_json()["domain"]["chainId"] == "1"
    assert result.message["to"][0]["wallets"][2] == "0xB0B0b0b0b0b0B000000000000000000000000000"


def test_recursive_type_through_dynamic_array_matches_eth_account() -> None:
    tree = {
        "types": {"Node": [{"name": "value", "type": "uint8"}, {"name": "children", "type": "Node[]"}]},
        "primaryType": "Node",
        "domain": {"name": "trees"},
        "message": {"value": 1, "children": [{"value": 2, "children": []}, {"value": 3, "children": []}]},
    }
    assert typed_data_digest(tree).digest == bytes(_hash_eip191_message(encode_typed_data(full_message=tree)))


# ---------------------------------------------------------------------------------------------------
# Random typed data against eth-account

_ATOMIC = [
    "uint8",
    "uint64",
    "uint256",
    "int8",
    "int256",
    "bool",
    "address",
    "string",
    "bytes",
    "bytes1",
    "bytes32",
]


def _atomic_value(kind: str) -> st.SearchStrategy[Any]:
    if kind.startswith("uint"):
        return st.integers(0, 2 ** int(kind[4:]) - 1)
    if kind.startswith("int"):
        bits = int(kind[3:])
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if kind == "bool":
        return st.booleans()
    if kind == "address":
        return st.binary(min_size=20, max_size=20).map(to_checksum_address)
    if kind == "string":
        return st.text(max_size=20)
    if kind == "bytes":
        return st.binary(min_size=1, max_size=40).map(lambda b: "0x" + b.hex())
    size = int(kind[5:])
    return st.binary(min_size=size, max_size=size).map(lambda b: "0x" + b.hex())


@st.composite
def typed_data(draw: st.DrawFn) -> dict[str, Any]:
    """A random request whose structs form a DAG with the primary type as the only root (eth-account
    derives the primary type that way), arrays dynamic and fixed, and values for every field."""
    count = draw(st.integers(1, 4))
    names = [f"T{i}" for i in range(count)]
    types: dict[str, list[dict[str, str]]] = {}
    for index, name in enumerate(names):
        members = []
        for field_index in range(draw(st.integers(1, 4))):
            base = draw(st.sampled_from(_ATOMIC + names[index + 1 :]))
            suffix = draw(st.sampled_from(["", "", "[]", "[2]", "[][1]"]))
            members.append({"name": f"f{field_index}", "type": base + suffix})
        if index + 1 < count:
            members.append({"name": "child", "type": names[index + 1]})
        types[name] = members

    def value_for(type_text: str, depth: int) -> Any:
        if type_text.endswith("]"):
            inner, size = type_text[: type_text.rindex("[")], type_text[type_text.rindex("[") + 1 : -1]
            length = int(size) if size else draw(st.integers(0, 2))
            return [value_for(inner, depth + 1) for _ in range(length)]
        if type_text in types:
            return {m["name"]: value_for(m["type"], depth + 1) for m in types[type_text]}
        return draw(_atomic_value(type_text))

    domain_fields = draw(
        st.lists(st.sampled_from(["name", "version", "chainId", "verifyingContract", "salt"]), unique=True)
    )
    domain: dict[str, Any] = {}
    for field in domain_fields:
        domain[field] = {
            "name": lambda: draw(st.text(max_size=10)),
            "version": lambda: draw(st.sampled_from(["1", "2"])),
            "chainId": lambda: draw(st.integers(1, 2**64)),
            "verifyingContract": lambda: draw(_atomic_value("address")),
            "salt": lambda: draw(_atomic_value("bytes32")),
        }[field]()
    return {"types": types, "primaryType": "T0", "domain": domain, "message": value_for("T0", 0)}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(request=typed_data(), secret=private_keys, high_s=st.booleans())
def test_random_typed_data_against_eth_account(request: dict[str, Any], secret: bytes, high_s: bool) -> None:
    result = typed_data_digest(request)
    signable = encode_typed_data(full_message=copy.deepcopy(request))
    assert result.digest == bytes(_hash_eip191_message(signable))
    signature = recoverable_signature(
        result.digest, hsm_sign(secret, result.digest, high_s=high_s), public_key_of(secret)
    )
    assert Account.recover_message(signable, signature=message_signature_bytes(signature)) == address_of(
        secret
    )
    assert typed_data_digest(result.as_json()).digest == result.digest


# ---------------------------------------------------------------------------------------------------
# I-09: strictness. Each case is MAIL with one thing wrong.


def _mutated(change: Any) -> dict[str, Any]:
    request = copy.deepcopy(MAIL)
    change(request)
    return request


def _refused(request: Any, field: str | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as error:
        typed_data_digest(request)
    assert error.value.code == "invalid_typed_data"
    assert error.value.extra.get("field")
    if field is not None:
        assert error.value.extra["field"] == field
    return error.value


def _set(path: list[Any], value: Any) -> Any:
    def change(request: dict[str, Any]) -> None:
        target = request
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: list[Any]) -> Any:
    def change(request: dict[str, Any]) -> None:
        target = request
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(_set(["extra"], 1), "typedData", id="unknown-top-level"),
        pytest.param(_delete(["types"]), "types", id="missing-types"),
        pytest.param(_delete(["primaryType"]), "primaryType", id="missing-primaryType"),
        pytest.param(_delete(["domain"]), "domain", id="missing-domain"),
        pytest.param(_delete(["message"]), "message", id="missing-message"),
        pytest.param(_set(["primaryType"], "Letter"), "primaryType", id="unknown-primaryType"),
        pytest.param(_set(["primaryType"], "EIP712Domain"), "primaryType", id="domain-as-primaryType"),
        pytest.param(_set(["primaryType"], 5), "primaryType", id="primaryType-not-string"),
        pytest.param(_delete(["types", "Person"]), "types[1][0].type", id="missing-type"),
        pytest.param(_set(["types", "Person", 1, "type"], "uint"), "types[1][1].type", id="bare-uint"),
        pytest.param(_set(["types", "Person", 1, "type"], "uint7"), "types[1][1].type", id="uint7"),
        pytest.param(_set(["types", "Person", 1, "type"], "bytes33"), "types[1][1].type", id="bytes33"),
        pytest.param(
            _set(["types", "Person", 1, "type"], "address[0]"), "types[1][1].type", id="zero-array"
        ),
        pytest.param(
            _set(["types", "Person", 1, "type"], "address[01]"), "types[1][1].type", id="padded-size"
        ),
        pytest.param(_set(["types", "Person", 1, "type"], "address []"), "types[1][1].type", id="space"),
        pytest.param(_set(["types", "Person", 1, "name"], "name"), "types[1][1]", id="duplicate-member"),
        pytest.param(
            _set(["types", "Person", 1, "name"], "wal let"), "types[1][1]", id="bad-member-name"
        ),
        pytest.param(_set(["types", "Person", 1, "extra"], "x"), "types[1][1]", id="extra-member-key"),
        pytest.param(_set(["types", "Person"], {"name": "string"}), "types[1]", id="type-not-list"),
        pytest.param(_set(["types", "uint256"], []), "types[3]", id="struct-named-like-atomic"),
        pytest.param(_set(["types", "Bad Name"], []), "types[3]", id="struct-name-not-identifier"),
        pytest.param(
            _set(["types", "Person", 1, "type"], "EIP712Domain"),
            "types[1][1].type",
            id="domain-as-member",
        ),
        # EIP712Domain must agree with the domain object, in the EIP's order, with the EIP's types.
        pytest.param(
            _set(["types", "EIP712Domain"], [DOMAIN_TYPE[1], DOMAIN_TYPE[0], *DOMAIN_TYPE[2:]]),
            "types.EIP712Domain",
            id="domain-reordered",
        ),
        pytest.param(
            _set(["types", "EIP712Domain", 2], {"name": "chainId", "type": "uint64"}),
            "types.EIP712Domain",
            id="domain-chainId-uint64",
        ),
        pytest.param(
            _set(["types", "EIP712Domain"], DOMAIN_TYPE[:3]), "types.EIP712Domain", id="domain-type-short"
        ),
        pytest.param(
            _delete(["domain", "verifyingContract"]), "types.EIP712Domain", id="domain-value-missing"
        ),
        pytest.param(
            _set(["domain", "salt"], "0x" + "00" * 32), "types.EIP712Domain", id="domain-value-extra"
        ),
        pytest.param(_set(["domain", "owner"], "x"), "domain", id="domain-unknown-key"),
        pytest.param(_set(["domain", "chainId"], -1), "domain.chainId", id="domain-negative-chainId"),
        pytest.param(_set(["domain", "chainId"], 1.0), "domain.chainId", id="domain-float-chainId"),
        pytest.param(
            _set(["domain", "verifyingContract"], "0xcCCCcccc" + "c" * 32),
            "domain.verifyingContract",
            id="domain-bad-checksum",
        ),
        pytest.param(_set(["domain"], []), "domain", id="domain-not-object"),
        # Message fields must be exactly the declared ones.
        pytest.param(_set(["message", "cc"], "Alice"), "message", id="extra-message-field"),
        pytest.param(_set(["message", "from", "age"], 3), "message[0]", id="extra-nested-field"),
        pytest.param(_delete(["message", "contents"]), "message[2]", id="missing-message-field"),
        pytest.param(_delete(["message", "to"]), "message[1]", id="missing-struct"),
        pytest.param(_set(["message", "to"], None), "message[1]", id="null-struct"),
        pytest.param(_set(["message", "contents"], None), "message[2]", id="null-string"),
        pytest.param(_set(["message", "contents"], 5), "message[2]", id="int-as-string"),
        pytest.param(
            _set(["message", "from", "wallet"], "0xcd2a3d9f938e13cd947ec05abc7fe734df8dd82"),
            "message[0][1]",
            id="short-address",
        ),
        pytest.param(
            _set(["message", "from", "wallet"], "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD827"),
            "message[0][1]",
            id="bad-checksum",
        ),
        pytest.param(_set(["message"], "Hello"), "message", id="message-not-object"),
    ],
)
def test_strict_refusals(change: Any, field: str) -> None:
    _refused(_mutated(change), field)


@pytest.mark.parametrize(
    "path",
    [["zz-canary"], ["domain", "zz-canary"], ["message", "zz-canary"], ["message", "from", "zz-canary"]],
)
def test_an_undeclared_key_is_never_named_in_the_refusal(path: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        typed_data_digest(_mutated(_set(path, 1)))
    assert "zz-canary" not in str(caught.value) and "zz-canary" not in repr(caught.value.extra)


def test_non_object_request() -> None:
    for value in (None, [], "{}"):
        _refused(value, "typedData")


def _single(kind: str, value: Any) -> dict[str, Any]:
    return {
        "types": {"M": [{"name": "v", "type": kind}]},
        "primaryType": "M",
        "domain": {"name": "t"},
        "message": {"v": value},
    }


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("bool", "false"),
        ("bool", "true"),
        ("bool", 0),
        ("bool", 1),
        ("bool", None),
        ("uint8", 256),
        ("uint8", -1),
        ("uint8", True),
        ("uint8", 1.0),
        ("uint256", 2**256),
        ("uint256", "1e3"),
        ("int8", 128),
        ("int8", -129),
        ("int8", "-0x81"),
        ("int256", 2**255),
        ("bytes", "hello"),  # eth-account would hash the text
        ("bytes", "0x123"),
        ("bytes", 10),
        ("bytes4", "0x010203"),
        ("bytes4", "0x0102030405"),
        ("bytes32", "0x" + "00" * 31),
        ("string", b"bytes"),
        ("string", "\ud800"),  # a lone surrogate is not Unicode text
        ("address", 5),
        ("address", "0x" + "11" * 19),
        ("address[2]", ["0x" + "11" * 20]),
        ("address[2]", ["0x" + "11" * 20] * 3),
        ("address[]", "0x" + "11" * 20),
        ("address[]", {"0": "0x" + "11" * 20}),
        ("uint8[][]", [[1], 2]),
    ],
)
def test_values_must_fit_their_type(kind: str, value: Any) -> None:
    _refused(_single(kind, value), None)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("bool", True),
        ("uint8", 255),
        ("uint8", "0xff"),
        ("uint8", "255"),
        ("uint256", 2**256 - 1),
        ("int8", -128),
        ("int8", "-128"),
        ("int8", 127),
        ("int256", -(2**255)),
        ("bytes", "0x"),
        ("bytes4", "0x01020304"),
        ("string", ""),
        ("string", "héllo ✓"),
        ("address", "0x" + "ab" * 20),
        ("address[2]", ["0x" + "11" * 20, "0x" + "22" * 20]),
        ("uint8[][]", [[1, 2], [], [3]]),
    ],
)
def test_values_accepted(kind: str, value: Any) -> None:
    result = typed_data_digest(_single(kind, value))
    # Our canonical value written back gives the same digest through eth-account's encoder.
    reference = encode_typed_data(full_message=_single(kind, result.message["v"]))
    assert result.digest == bytes(_hash_eip191_message(reference))


@pytest.mark.parametrize(
    "types",
    [
        pytest.param({"Person": [{"name": "mother", "type": "Person"}]}, id="self"),
        pytest.param({"Person": [{"name": "pair", "type": "Person[2]"}]}, id="self-fixed-array"),
        pytest.param(
            {
                "Person": [{"name": "a", "type": "A"}],
                "A": [{"name": "b", "type": "B"}],
                "B": [{"name": "p", "type": "Person"}],
            },
            id="three-cycle",
        ),
    ],
)
def test_unterminated_recursive_types(types: dict[str, Any]) -> None:
    error = _refused({"types": types, "primaryType": "Person", "domain": {}, "message": {}})
    assert "recursive" in error.message


def test_deeply_nested_value_is_refused_cleanly() -> None:
    request = {
        "types": {"Node": [{"name": "next", "type": "Node[]"}]},
        "primaryType": "Node",
        "domain": {},
        "message": {"next": []},
    }
    node: dict[str, Any] = {"next": []}
    for _ in range(5000):
        node = {"next": [node]}
    request["message"] = node
    error = _refused(request)
    assert "deep" in error.message
    deep_array = _single("uint8" + "[]" * 40, 1)
    value: Any = 1
    for _ in range(40):
        value = [value]
    deep_array["message"]["v"] = value
    _refused(deep_array)


def test_what_eth_account_accepts_silently_we_refuse() -> None:
    """Documents the gap: each of these hashes without complaint in eth-account."""
    lenient = [
        _mutated(_set(["message", "cc"], "Alice")),  # extra field: same digest as without it
        _mutated(_delete(["message", "contents"])),  # missing string: zeros instead of keccak("")
        _mutated(_set(["types", "EIP712Domain", 2], {"name": "chainId", "type": "uint64"})),
        _single("bool", "false"),
        _single("bytes", "hello"),
        _single("address[2]", ["0x" + "11" * 20]),
    ]
    for request in lenient:
        encode_typed_data(full_message=copy.deepcopy(request))  # accepted there
        _refused(request)
    extra = _mutated(_set(["message", "cc"], "Alice"))
    assert (
        bytes(_hash_eip191_message(encode_typed_data(full_message=extra))) == typed_data_digest(MAIL).digest
    )


def test_unused_types_are_allowed_and_do_not_change_the_digest() -> None:
    with_unused = _mutated(_set(["types", "Unused"], [{"name": "x", "type": "uint8"}]))
    assert typed_data_digest(with_unused).digest == typed_data_digest(MAIL).digest


def test_primary_type_need_not_be_the_only_root() -> None:
    # MAIL_ARRAYS has two roots (Mail and Group); primaryType picks one, as MetaMask does.
    group = copy.deepcopy(MAIL_ARRAYS)
    group["primaryType"] = "Group"
    group["message"] = {"name": "g", "members": MAIL_ARRAYS["message"]["to"]}
    result = typed_data_digest(group)
    assert result.primary_type == "Group"
    assert result.digest != typed_data_digest(MAIL_ARRAYS).digest


def test_error_field_names_are_bounded() -> None:
    request = copy.deepcopy(MAIL)
    request["message"]["x" * 10_000] = 1
    error = _refused(request)
    assert len(error.extra["field"]) < 100


def test_names_and_dimensions_are_bounded() -> None:
    _refused(_single("uint8" + "[]" * 9, []), "types[0][0].type")
    long_name = "N" * 65
    request = {"types": {long_name: []}, "primaryType": long_name, "domain": {}, "message": {}}
    _refused(request)
    ok_name = "N" * 64
    assert typed_data_digest({"types": {ok_name: []}, "primaryType": ok_name, "domain": {}, "message": {}})


def test_i10_message_digests_never_equal_transaction_digests() -> None:
    """personal_sign and EIP-712 preimages start with 0x19; transactions with 0x01-0x04 or an RLP list
    (>= 0xc0), so signing a "message" that is really a transaction yields a different digest."""
    from signer.eth import parse_transaction

    tx = parse_transaction(
        {
            "type": 2,
            "chainId": 1,
            "nonce": 0,
            "gas": 21000,
            "maxFeePerGas": 1,
            "maxPriorityFeePerGas": 1,
            "to": None,
        }
    )
    assert personal_message_digest(tx.signing_payload) != tx.digest
    assert personal_message_digest(tx.digest) != tx.digest
