"""The fast paths in signer.eth equal the reference implementations they replaced, cached or not.

keccak is checked against eth_hash (and pycryptodome's public API, the fallback), EIP-55 against
eth_utils, public-key addresses against eth_keys, and every cached function is called twice so the
second answer (a cache hit) is compared too. The caches must be bounded and must never remember a
failure.
"""

from __future__ import annotations

import coincurve
import pytest
from eth_hash.auto import keccak as eth_hash_keccak
from eth_test_support import address_of, private_keys
from eth_utils import to_checksum_address as eth_utils_checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import IntegrityError
from signer.eth import address_from_public_key, keccak256, primitives, to_checksum_address


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
