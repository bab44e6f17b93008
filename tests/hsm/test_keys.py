"""Key generation, signing and inventory against the real SoftHSM token; every signature is checked by
an independent library (coincurve for secp256k1, pyca/cryptography for P-256 and Ed25519)."""

from __future__ import annotations

import hashlib
import os

import pytest
from pkcs11 import Attribute, ObjectClass

from signer.errors import IntegrityError, InvalidRequest, NotFound, SignerError
from signer.hsm import Curve, GeneratedKey, Hsm
from signer.hsm.token import SELF_TEST_DIGEST, SELF_TEST_MESSAGE
from tests.hsm.support import is_high_s, verify, verify_secp256k1_openssl

ALL_CURVES = list(Curve)


def payload(curve: Curve, seed: bytes) -> bytes:
    # ECDSA curves sign a 32-byte digest; Ed25519 signs the message itself.
    return hashlib.sha256(seed).digest() if curve is not Curve.ED25519 else b"message " + seed


@pytest.mark.parametrize("curve", ALL_CURVES)
async def test_generated_key_is_confined_and_signs(hsm: Hsm, curve: Curve) -> None:
    key = await hsm.generate_key(curve, f"gen-{curve.value}")

    assert isinstance(key, GeneratedKey) and key.curve is curve
    assert len(key.hsm_id) == 32 and bytes.fromhex(key.hsm_id)
    if curve is Curve.ED25519:
        assert len(key.public_key) == 32
    else:
        assert len(key.public_key) == 65 and key.public_key[0] == 0x04
    # Evidence read back from the token, not echoed from our template.
    assert key.attributes.confined
    assert key.attributes.as_dict() == {
        "CKA_SENSITIVE": True,
        "CKA_EXTRACTABLE": False,
        "CKA_ALWAYS_SENSITIVE": True,
        "CKA_NEVER_EXTRACTABLE": True,
        "CKA_LOCAL": True,
        "CKA_TOKEN": True,
    }
    assert await hsm.key_attributes(key.hsm_id) == key.attributes

    for i in range(20):
        data = payload(curve, os.urandom(16) + bytes([i]))
        signature = await hsm.sign(key.hsm_id, curve, data)
        assert len(signature) == 64
        assert verify(curve, key.public_key, data, signature)
        assert not verify(curve, key.public_key, payload(curve, b"another message"), signature)


async def test_key_objects_carry_the_promised_template(hsm: Hsm) -> None:
    key = await hsm.generate_key(Curve.SECP256K1, "template-check")
    key_id = bytes.fromhex(key.hsm_id)

    def read(ctx):  # type: ignore[no-untyped-def]
        objects = list(ctx.session.get_objects({Attribute.ID: key_id}))
        out = {}
        for obj in objects:
            wanted = [Attribute.TOKEN, Attribute.LABEL, Attribute.ID]
            if obj.object_class == ObjectClass.PRIVATE_KEY:
                wanted += [
                    Attribute.PRIVATE,
                    Attribute.SIGN,
                    Attribute.DECRYPT,
                    Attribute.UNWRAP,
                    Attribute.DERIVE,
                    Attribute.COPYABLE,
                ]
            else:
                wanted += [Attribute.VERIFY, Attribute.PRIVATE, Attribute.EC_PARAMS]
            out[obj.object_class] = obj.get_attributes(wanted)
        return out

    found = await hsm._run_on_worker(read)
    private, public = found[ObjectClass.PRIVATE_KEY], found[ObjectClass.PUBLIC_KEY]
    assert private[Attribute.ID] == public[Attribute.ID] == key_id
    assert private[Attribute.LABEL] == public[Attribute.LABEL] == "template-check"
    assert private[Attribute.TOKEN] and private[Attribute.PRIVATE] and private[Attribute.SIGN]
    assert not (private[Attribute.DECRYPT] or private[Attribute.UNWRAP] or private[Attribute.DERIVE])
    assert private[Attribute.COPYABLE] is False
    assert public[Attribute.TOKEN] and public[Attribute.VERIFY] and not public[Attribute.PRIVATE]
    assert public[Attribute.EC_PARAMS] == bytes.fromhex("06052b8104000a")  # OID 1.3.132.0.10


async def test_softhsm_high_s_signatures_verify_independently(hsm: Hsm) -> None:
    """About half of SoftHSM's ECDSA signatures have a high s: both forms must still verify."""
    key = await hsm.generate_key(Curve.SECP256K1, "high-s")
    high = 0
    for i in range(200):
        digest = hashlib.sha256(b"high-s %d" % i).digest()
        signature = await hsm.sign(key.hsm_id, Curve.SECP256K1, digest)
        assert verify(Curve.SECP256K1, key.public_key, digest, signature)
        assert verify_secp256k1_openssl(key.public_key, digest, signature)
        high += is_high_s(signature)
    assert 40 <= high <= 160  # a binomial(200, 1/2) outside this band has probability < 1e-17


async def test_inventory_lists_and_destroys(hsm: Hsm) -> None:
    made = {curve: await hsm.generate_key(curve, f"inventory-{curve.value}") for curve in ALL_CURVES}
    listed = {hsm_id: (label, curve) for hsm_id, label, curve in await hsm.list_keys()}
    for curve, key in made.items():
        assert listed[key.hsm_id] == (f"inventory-{curve.value}", curve)
    assert await hsm.unconfined_keys() == []

    victim = made[Curve.P256]
    await hsm.destroy_key(victim.hsm_id)
    assert victim.hsm_id not in {hsm_id for hsm_id, _, _ in await hsm.list_keys()}
    with pytest.raises(NotFound) as info:
        await hsm.sign(victim.hsm_id, Curve.P256, bytes(32))
    assert info.value.code == "key_not_found"
    with pytest.raises(NotFound):
        await hsm.destroy_key(victim.hsm_id)
    with pytest.raises(NotFound):
        await hsm.key_attributes(victim.hsm_id)

    def count_objects(ctx):  # type: ignore[no-untyped-def]
        return len(list(ctx.session.get_objects({Attribute.ID: bytes.fromhex(victim.hsm_id)})))

    assert await hsm._run_on_worker(count_objects) == 0  # public half gone too


@pytest.mark.parametrize("curve", ALL_CURVES)
async def test_self_test_leaves_nothing_behind(hsm: Hsm, curve: Curve) -> None:
    def self_test_objects(ctx):  # type: ignore[no-untyped-def]
        return len(list(ctx.session.get_objects({Attribute.LABEL: "signer-self-test"})))

    before = await hsm.list_keys()
    public_key, data, signature = await hsm.self_test(curve)
    assert data == (SELF_TEST_MESSAGE if curve is Curve.ED25519 else SELF_TEST_DIGEST)
    assert verify(curve, public_key, data, signature)
    assert await hsm.list_keys() == before
    assert await hsm._run_on_worker(self_test_objects) == 0


async def test_bad_requests_are_typed_errors(hsm: Hsm) -> None:
    key = await hsm.generate_key(Curve.SECP256K1, "bad-requests")
    with pytest.raises(InvalidRequest) as info:
        await hsm.sign(key.hsm_id, Curve.SECP256K1, bytes(31))
    assert info.value.code == "invalid_digest"
    with pytest.raises(InvalidRequest) as info:
        await hsm.sign("not-hex", Curve.SECP256K1, bytes(32))
    assert info.value.code == "invalid_hsm_id"
    with pytest.raises(InvalidRequest):
        await hsm.sign(key.hsm_id.upper(), Curve.SECP256K1, bytes(32))
    with pytest.raises(NotFound) as nf:
        await hsm.sign("00" * 16, Curve.SECP256K1, bytes(32))
    assert nf.value.code == "key_not_found"
    with pytest.raises(IntegrityError) as mismatch:
        await hsm.sign(key.hsm_id, Curve.P256, bytes(32))
    assert mismatch.value.code == "curve_mismatch"
    with pytest.raises(InvalidRequest) as label:
        await hsm.generate_key(Curve.SECP256K1, "bad\nlabel")
    assert label.value.code == "invalid_label"
    with pytest.raises(InvalidRequest):
        await hsm.generate_key(Curve.SECP256K1, "")
    with pytest.raises(SignerError) as curve:
        await hsm.generate_key("secp256r1", "x")  # type: ignore[arg-type]
    assert curve.value.code == "unsupported_curve"
    with pytest.raises(InvalidRequest):
        await hsm.sign(key.hsm_id, Curve.SECP256K1, "00" * 32)  # type: ignore[arg-type]
    # The key still works after all that.
    await hsm.sign(key.hsm_id, Curve.SECP256K1, bytes(32))
