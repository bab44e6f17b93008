"""The fast paths in signer.eth equal the reference implementations they replaced, cached or not.

keccak is checked against eth_hash (and pycryptodome's public API, the fallback), EIP-55 against
eth_utils, public-key addresses against eth_keys, RLP against pyrlp, and the signed transactions that
reuse the unsigned encoding against the fully re-checked path and eth-account. Every cached function
is called twice so the second answer (a cache hit) is compared too. The caches must be bounded and
must never remember a failure.
"""

from __future__ import annotations

import dataclasses

import coincurve
import pytest
from eth_account import Account
from eth_hash.auto import keccak as eth_hash_keccak
from eth_test_support import (
    address_of,
    eth_account_dict,
    hsm_sign,
    private_keys,
    public_key_of,
    transaction_case,
    transaction_json,
)
from eth_utils import to_checksum_address as eth_utils_checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import IntegrityError
from signer.eth import (
    SUPPORTED_TYPES,
    UnsignedTransaction,
    _rlp,
    address_from_public_key,
    keccak256,
    parse_transaction,
    primitives,
    recoverable_signature,
    to_checksum_address,
)


class _Bytes(bytes):
    """A bytes subclass that could redefine equality: it must never be used as a cache key."""


@given(data=st.binary(max_size=600))
def test_keccak_equals_eth_hash(data: bytes) -> None:
    expected = bytes(eth_hash_keccak(data))
    assert keccak256(data) == expected
    assert keccak256(bytearray(data)) == expected  # type: ignore[arg-type]
    assert primitives._pycryptodome_keccak256(data) == expected
    assert primitives._pycryptodome_keccak256(bytearray(data)) == expected  # type: ignore[arg-type]


def test_keccak_rate_boundaries_and_known_answers() -> None:
    # 135/136/137 bytes straddle Keccak-256's rate: the padding byte lands in the same or a new block.
    for size in (0, 1, 31, 32, 33, 135, 136, 137, 271, 272, 273, 4096):
        data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        assert keccak256(data) == bytes(eth_hash_keccak(data))
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    # keccak256("transfer(address,uint256)") starts with the ERC-20 selector.
    assert keccak256(b"transfer(address,uint256)")[:4].hex() == "a9059cbb"


@pytest.mark.parametrize("value", ["00", memoryview(b"00"), 0, None])
def test_keccak_refuses_what_eth_hash_refused(value: object) -> None:
    with pytest.raises(TypeError):
        keccak256(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        primitives._pycryptodome_keccak256(value)  # type: ignore[arg-type]


def test_the_direct_keccak_path_is_in_use_here() -> None:
    # The venv has pycryptodome on cffi: if this fails, the fallback is silently costing time.
    assert keccak256 is not primitives._pycryptodome_keccak256


@settings(max_examples=500)
@given(address=st.binary(min_size=20, max_size=20))
def test_checksum_equals_eth_utils(address: bytes) -> None:
    expected = eth_utils_checksum(address)
    assert primitives._checksum(address) == expected
    assert to_checksum_address(address) == expected
    assert to_checksum_address(address) == expected  # a cache hit
    assert to_checksum_address(bytearray(address)) == expected  # type: ignore[arg-type]
    assert to_checksum_address(memoryview(address)) == expected  # type: ignore[arg-type]
    assert to_checksum_address(_Bytes(address)) == expected


@pytest.mark.parametrize(
    "address", [bytes(20), b"\xff" * 20, bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")]
)
def test_checksum_edge_addresses(address: bytes) -> None:
    assert to_checksum_address(address) == eth_utils_checksum(address)


@pytest.mark.parametrize("address", [b"", b"\x00" * 19, b"\x00" * 21])
def test_checksum_refuses_other_lengths_every_time(address: bytes) -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            to_checksum_address(address)


@settings(max_examples=100)
@given(secret=private_keys)
def test_public_key_address_equals_eth_keys(secret: bytes) -> None:
    public_key = coincurve.PrivateKey(secret).public_key.format(compressed=False)
    expected = address_of(secret)
    assert address_from_public_key(public_key) == expected
    assert address_from_public_key(public_key) == expected  # a cache hit
    assert primitives.public_key_address(_Bytes(public_key)) == expected  # a subclass: not cached
    primitives.validate_public_key(public_key)
    with pytest.raises(IntegrityError):
        primitives.public_key_address(bytearray(public_key))  # type: ignore[arg-type]


def test_a_bad_public_key_is_refused_every_time_and_never_cached() -> None:
    off_curve = b"\x04" + b"\x00" * 64
    before = primitives._cached_address.cache_info().currsize
    for _ in range(3):
        with pytest.raises(IntegrityError) as error:
            primitives.public_key_address(off_curve)
        assert error.value.code == "invalid_public_key"
    assert primitives._cached_address.cache_info().currsize == before


def test_caches_are_bounded() -> None:
    for cached in (primitives._cached_checksum, primitives._cached_address):
        maxsize = cached.cache_info().maxsize
        assert maxsize is not None and maxsize <= 4096


# ---------------------------------------------------------------------------------------------------
# RLP and assemble


def _rlp_items() -> st.SearchStrategy[object]:
    leaves = st.one_of(
        st.binary(max_size=3),
        st.binary(min_size=50, max_size=60),  # around the 55/56 short/long boundary
        st.binary(min_size=250, max_size=300),
    )
    return st.recursive(leaves, lambda children: st.lists(children, max_size=6), max_leaves=30)


@given(item=_rlp_items())
def test_rlp_encode_equals_pyrlp_and_decodes_back(item: object) -> None:
    import rlp as pyrlp

    encoded = _rlp.encode(item)  # type: ignore[arg-type]
    assert encoded == pyrlp.encode(item)
    if _depth(item) <= _rlp.MAX_DEPTH:
        assert _rlp.decode(encoded) == item
    # bytearray and tuples take the general path: same bytes.
    assert _rlp.encode(_as_general(item)) == encoded  # type: ignore[arg-type]


def _depth(item: object) -> int:
    return 1 + max(map(_depth, item), default=0) if isinstance(item, list) else 0


def _as_general(item: object) -> object:
    if isinstance(item, bytes):
        return bytearray(item)
    assert isinstance(item, list)
    return tuple(_as_general(child) for child in item)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), tx_type=st.sampled_from(SUPPORTED_TYPES), secret=private_keys, high_s=st.booleans())
def test_assemble_reusing_the_encoding_equals_the_checked_path(
    data: st.DataObject, tx_type: int, secret: bytes, high_s: bool
) -> None:
    case = data.draw(transaction_case(tx_type))
    tx = parse_transaction(data.draw(transaction_json(case)))
    public_key = public_key_of(secret)
    signature = recoverable_signature(tx.digest, hsm_sign(secret, tx.digest, high_s=high_s), public_key)
    # A second call (the key's check and address now cached) gives the same signature.
    assert (
        recoverable_signature(tx.digest, hsm_sign(secret, tx.digest, high_s=high_s), public_key) == signature
    )
    fast = tx.assemble(signature)
    # replace() drops the kept encoding: this one re-encodes the fields and checks them against the digest.
    checked = dataclasses.replace(tx).assemble(signature)
    assert checked == fast
    assert Account.recover_transaction(fast.raw) == address_of(secret) == fast.sender
    reference = Account.sign_transaction(eth_account_dict(case), secret)
    assert fast.raw == bytes(reference.raw_transaction)
    assert fast.hash == bytes(reference.hash) == keccak256(fast.raw)


def test_a_hand_built_transaction_is_checked_in_full() -> None:
    secret = bytes.fromhex("35" * 32)
    tx = parse_transaction(
        {"type": 0, "chainId": 1, "nonce": 0, "gas": 21000, "gasPrice": 1, "to": "0x" + "11" * 20}
    )
    signature = recoverable_signature(
        tx.digest, hsm_sign(secret, tx.digest, high_s=False), public_key_of(secret)
    )
    rebuilt = UnsignedTransaction(tx.tx_type, tx.chain_id, tx.digest, tx.signing_payload, tx.fields)
    assert rebuilt.assemble(signature) == tx.assemble(signature)
    # A type or chain id that disagrees with the fields would frame the bytes or choose v wrongly.
    for wrong in (
        UnsignedTransaction(2, tx.chain_id, tx.digest, tx.signing_payload, tx.fields),
        UnsignedTransaction(tx.tx_type, 5, tx.digest, tx.signing_payload, tx.fields),
        dataclasses.replace(tx, chain_id=5),
        dataclasses.replace(tx, digest=bytes(32)),
        dataclasses.replace(tx, signing_payload=tx.signing_payload + b"\x80"),
    ):
        with pytest.raises(IntegrityError) as error:
            wrong.assemble(signature)
        assert error.value.code == "integrity_error"
