"""I-07 and I-08: the HSM's raw r||s becomes a canonical, recoverable signature for our key, or an error.

Signatures come from libsecp256k1 (coincurve, RFC 6979), flipped to high s half of the time the way
SoftHSM returns them; recovery results are checked with eth_keys' pure-Python backend, an
implementation that shares no code with libsecp256k1.
"""

from __future__ import annotations

import random

import coincurve
import pytest
from eth_account import Account
from eth_keys import KeyAPI
from eth_keys.backends import NativeECCBackend
from eth_test_support import address_of, hsm_sign, private_keys, public_key_of
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import IntegrityError
from signer.eth import (
    SECP256K1_HALF_N,
    SECP256K1_N,
    RecoverableSignature,
    address_from_public_key,
    message_signature_bytes,
    parse_transaction,
    recover_address,
    recoverable_signature,
    verify_ecdsa_secp256k1,
)

NATIVE = KeyAPI(NativeECCBackend)
SECP256K1_P = 2**256 - 2**32 - 977


def _raw(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _native_address(digest: bytes, signature: RecoverableSignature) -> str:
    vrs = (signature.recovery_id, signature.r, signature.s)
    return NATIVE.Signature(vrs=vrs).recover_public_key_from_msg_hash(digest).to_checksum_address()


def test_i07_ten_thousand_random_digests() -> None:
    rng = random.Random(0x1707)
    keys = [coincurve.PrivateKey(rng.randbytes(32)) for _ in range(50)]
    public_keys = [key.public_key.format(compressed=False) for key in keys]
    short_r = short_s = high_s_inputs = 0
    for index in range(10_000):
        key_index = index % len(keys)
        digest = rng.randbytes(32)
        compact = keys[key_index].sign_recoverable(digest, hasher=None)
        r = int.from_bytes(compact[:32], "big")
        s = int.from_bytes(compact[32:64], "big")
        flip = rng.random() < 0.5
        high_s_inputs += flip
        signature = recoverable_signature(
            digest, _raw(r, SECP256K1_N - s if flip else s), public_keys[key_index]
        )
        assert signature.s <= SECP256K1_HALF_N
        # libsecp256k1 signs low-s and reports its own recovery id: ours must agree whatever the input s.
        assert (signature.r, signature.s, signature.recovery_id) == (r, s, compact[64])
        short_r += r < 2**248
        short_s += s < 2**248
        if index % 50 == 0:
            assert _native_address(digest, signature) == address_from_public_key(public_keys[key_index])
    # About 1 in 256 values has a leading zero byte; 10k samples must have met several of each.
    assert short_r > 10 and short_s > 10
    assert 4500 < high_s_inputs < 5500


def _find(predicate: object, secret: bytes) -> tuple[bytes, int, int]:
    key = coincurve.PrivateKey(secret)
    # Expected about 256 tries; bounded so a broken predicate fails instead of hanging.
    for counter in range(20_000):
        digest = counter.to_bytes(32, "big")
        compact = key.sign_recoverable(digest, hasher=None)
        r, s = int.from_bytes(compact[:32], "big"), int.from_bytes(compact[32:64], "big")
        if predicate(r, s):  # type: ignore[operator]
            return digest, r, s
    pytest.fail("no matching signature found")


@pytest.mark.parametrize(
    "predicate",
    [
        pytest.param(lambda r, s: r < 2**248, id="r-leading-zero"),
        pytest.param(lambda r, s: s < 2**248, id="s-leading-zero"),
    ],
)
def test_leading_zero_r_and_s(predicate: object) -> None:
    secret = bytes.fromhex("42" * 32)
    digest, r, s = _find(predicate, secret)
    for raw in (_raw(r, s), _raw(r, SECP256K1_N - s)):
        signature = recoverable_signature(digest, raw, public_key_of(secret))
        assert (signature.r, signature.s) == (r, s)
        packed = message_signature_bytes(signature)
        # Exactly 32 bytes each, zero padded, never shortened.
        assert len(packed) == 65
        assert int.from_bytes(packed[:32], "big") == r and int.from_bytes(packed[32:64], "big") == s
        assert packed[64] in (27, 28)
        assert verify_ecdsa_secp256k1(digest, packed, public_key_of(secret))
        assert verify_ecdsa_secp256k1(digest, raw, public_key_of(secret))
        assert _native_address(digest, signature) == address_of(secret)


@pytest.mark.parametrize("tx_type", [0, 2])
def test_transaction_with_short_r_is_minimally_encoded_and_valid(tx_type: int) -> None:
    """A transaction whose r has a leading zero byte: RLP drops it; eth-account must agree byte for byte."""
    secret = bytes.fromhex("43" * 32)
    base = {"type": tx_type, "chainId": 1, "gas": 21000, "to": "0x" + "11" * 20, "value": 1}
    fees = {"gasPrice": 1} if tx_type == 0 else {"maxFeePerGas": 2, "maxPriorityFeePerGas": 1}
    for nonce in range(5000):
        tx = parse_transaction({**base, **fees, "nonce": nonce})
        compact = coincurve.PrivateKey(secret).sign_recoverable(tx.digest, hasher=None)
        if int.from_bytes(compact[:32], "big") < 2**248:
            break
    else:
        pytest.fail("no short r in 5000 nonces")
    signature = recoverable_signature(
        tx.digest, hsm_sign(secret, tx.digest, high_s=True), public_key_of(secret)
    )
    signed = tx.assemble(signature)
    reference_fields = {
        k: v for k, v in {**base, **fees, "nonce": nonce}.items() if not (k == "type" and v == 0)
    }
    reference_fields["to"] = "0x1111111111111111111111111111111111111111"
    reference = Account.sign_transaction(reference_fields, secret)
    assert signed.raw == bytes(reference.raw_transaction)
    assert Account.recover_transaction(signed.raw) == address_of(secret)


@settings(max_examples=300, deadline=None)
@given(secret=private_keys, digest=st.binary(min_size=32, max_size=32), high_s=st.booleans())
def test_recoverable_signature_property(secret: bytes, digest: bytes, high_s: bool) -> None:
    signature = recoverable_signature(digest, hsm_sign(secret, digest, high_s=high_s), public_key_of(secret))
    assert 0 < signature.s <= SECP256K1_HALF_N
    assert recover_address(digest, signature) == address_of(secret)
    assert verify_ecdsa_secp256k1(digest, signature.to_bytes(), public_key_of(secret))


# I-08: every malformed or foreign signature is refused; no guessed v.

_SECRET = bytes.fromhex("44" * 32)
_DIGEST = bytes.fromhex("ab" * 32)


def _good() -> tuple[int, int]:
    compact = coincurve.PrivateKey(_SECRET).sign_recoverable(_DIGEST, hasher=None)
    return int.from_bytes(compact[:32], "big"), int.from_bytes(compact[32:64], "big")


def _der(r: int, s: int) -> bytes:
    def integer(value: int) -> bytes:
        body = value.to_bytes(value.bit_length() // 8 + 1, "big")
        return b"\x02" + bytes((len(body),)) + body

    body = integer(r) + integer(s)
    return b"\x30" + bytes((len(body),)) + body


def _not_an_x_coordinate() -> int:
    x = 5
    while pow(x**3 + 7, (SECP256K1_P - 1) // 2, SECP256K1_P) == 1:
        x += 1
    return x


@pytest.mark.parametrize(
    ("make_raw", "code"),
    [
        pytest.param(lambda r, s: b"", "signature_format", id="empty"),
        pytest.param(lambda r, s: _raw(r, s)[:63], "signature_format", id="63-bytes"),
        pytest.param(lambda r, s: _raw(r, s) + b"\x00", "signature_format", id="65-bytes"),
        pytest.param(lambda r, s: _raw(r, s) + b"\x1b", "signature_format", id="65-bytes-with-v"),
        pytest.param(lambda r, s: _raw(r, s) * 2, "signature_format", id="128-bytes"),
        pytest.param(lambda r, s: _der(r, s), "signature_format", id="DER"),
        pytest.param(lambda r, s: bytearray(_raw(r, s)), "signature_format", id="bytearray"),
        pytest.param(lambda r, s: _raw(r, s).hex(), "signature_format", id="hex-string"),
        pytest.param(lambda r, s: _raw(0, s), "signature_format", id="r=0"),
        pytest.param(lambda r, s: _raw(r, 0), "signature_format", id="s=0"),
        pytest.param(lambda r, s: _raw(SECP256K1_N, s), "signature_format", id="r=n"),
        pytest.param(lambda r, s: _raw(r, SECP256K1_N), "signature_format", id="s=n"),
        pytest.param(
            lambda r, s: _raw(r + SECP256K1_N, s) if r + SECP256K1_N < 2**256 else b"",
            "signature_format",
            id="r+n",
        ),
        pytest.param(lambda r, s: b"\xff" * 64, "signature_format", id="all-ff"),
        pytest.param(lambda r, s: _raw(r, s + 1), "signature_mismatch", id="s+1"),
        pytest.param(
            lambda r, s: _raw(s, r) if s < SECP256K1_N and r < SECP256K1_N else b"",
            "signature_mismatch",
            id="swapped",
        ),
        pytest.param(lambda r, s: _raw(_not_an_x_coordinate(), s), "signature_mismatch", id="r-not-on-curve"),
        pytest.param(lambda r, s: _raw(1, 1), "signature_mismatch", id="r=s=1"),
    ],
)
def test_i08_malformed_signatures(make_raw: object, code: str) -> None:
    r, s = _good()
    raw = make_raw(r, s)  # type: ignore[operator]
    with pytest.raises(IntegrityError) as error:
        recoverable_signature(_DIGEST, raw, public_key_of(_SECRET))
    assert error.value.code == code


def test_i08_signature_by_another_key_or_over_another_digest() -> None:
    other = bytes.fromhex("45" * 32)
    for high_s in (False, True):
        with pytest.raises(IntegrityError) as error:
            recoverable_signature(_DIGEST, hsm_sign(other, _DIGEST, high_s=high_s), public_key_of(_SECRET))
        assert error.value.code == "signature_mismatch"
        with pytest.raises(IntegrityError) as error:
            recoverable_signature(
                bytes(32), hsm_sign(_SECRET, _DIGEST, high_s=high_s), public_key_of(_SECRET)
            )
        assert error.value.code == "signature_mismatch"


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(min_size=64, max_size=64))
def test_i08_garbage_never_recovers_to_our_key(garbage: bytes) -> None:
    with pytest.raises(IntegrityError) as error:
        recoverable_signature(_DIGEST, garbage, public_key_of(_SECRET))
    assert error.value.code in ("signature_format", "signature_mismatch")


@pytest.mark.parametrize(
    "public_key",
    [
        b"",
        b"\x04" + b"\x00" * 64,  # not on the curve
        b"\x02" + b"\x11" * 32,  # compressed: the registry stores uncompressed keys
        public_key_of(_SECRET)[1:],  # 64 bytes without the 0x04 tag
        b"\x05" + public_key_of(_SECRET)[1:],
    ],
)
def test_bad_public_key_is_an_integrity_error(public_key: bytes) -> None:
    r, s = _good()
    with pytest.raises(IntegrityError) as error:
        recoverable_signature(_DIGEST, _raw(r, s), public_key)
    assert error.value.code == "invalid_public_key"
    with pytest.raises(IntegrityError):
        address_from_public_key(public_key)


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_digest_must_be_32_bytes(digest: object) -> None:
    r, s = _good()
    with pytest.raises(IntegrityError) as error:
        recoverable_signature(digest, _raw(r, s), public_key_of(_SECRET))  # type: ignore[arg-type]
    assert error.value.code == "signature_format"


@pytest.mark.parametrize(
    ("r", "s", "recovery_id"),
    [(0, 1, 0), (1, 0, 0), (SECP256K1_N, 1, 0), (1, SECP256K1_HALF_N + 1, 0), (1, 1, 2), (1, 1, -1)],
)
def test_recoverable_signature_type_holds_only_canonical_values(r: int, s: int, recovery_id: int) -> None:
    with pytest.raises(IntegrityError):
        RecoverableSignature(r=r, s=s, recovery_id=recovery_id)


def test_verify_helper() -> None:
    r, s = _good()
    public_key = public_key_of(_SECRET)
    compressed = coincurve.PublicKey(public_key).format(compressed=True)
    signature = recoverable_signature(_DIGEST, _raw(r, s), public_key)
    for key in (public_key, compressed):
        assert verify_ecdsa_secp256k1(_DIGEST, _raw(r, s), key)
        assert verify_ecdsa_secp256k1(_DIGEST, _raw(r, SECP256K1_N - s), key)  # high s verifies as ECDSA
        assert verify_ecdsa_secp256k1(_DIGEST, message_signature_bytes(signature), key)
        assert verify_ecdsa_secp256k1(_DIGEST, signature.to_bytes(), key)
    wrong_v = message_signature_bytes(signature)[:64] + bytes((28 - signature.recovery_id,))
    assert not verify_ecdsa_secp256k1(_DIGEST, wrong_v, public_key)
    assert not verify_ecdsa_secp256k1(bytes(32), _raw(r, s), public_key)
    assert not verify_ecdsa_secp256k1(_DIGEST, _raw(r, s), public_key_of(bytes.fromhex("46" * 32)))
    for bad in (b"", _raw(r, s)[:63], _raw(0, s), _raw(r, SECP256K1_N), _raw(r, s) + b"\x05", b"\xff" * 64):
        assert not verify_ecdsa_secp256k1(_DIGEST, bad, public_key)
    assert not verify_ecdsa_secp256k1(_DIGEST, _raw(r, s), b"\x04" + b"\x00" * 64)
    assert not verify_ecdsa_secp256k1(b"short", _raw(r, s), public_key)


@settings(max_examples=100, deadline=None)
@given(secret=private_keys)
def test_address_from_public_key_matches_eth_keys(secret: bytes) -> None:
    assert address_from_public_key(public_key_of(secret)) == address_of(secret)
    assert address_from_public_key(public_key_of(secret)) == Account.from_key(secret).address


def test_errors_carry_no_key_material() -> None:
    r, s = _good()
    public_key = public_key_of(_SECRET)
    with pytest.raises(IntegrityError) as error:
        recoverable_signature(_DIGEST, _raw(r, s + 1), public_key)
    text = str(error.value) + repr(error.value) + str(error.value.extra)
    for secretish in (_SECRET.hex(), public_key.hex()[:16], hex(r)[2:18], hex(s)[2:18]):
        assert secretish not in text
