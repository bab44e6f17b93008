"""Key-encryption keys for secrets on the real SoftHSM token: one per scope, confined, wrap/unwrap only,
found again by label; data keys wrapped with CKM_AES_KEY_WRAP_PAD open only under the KEK that wrapped
them and only unaltered."""

from __future__ import annotations

import os

import pkcs11.exceptions as pk
import pytest
from pkcs11 import Attribute, ObjectClass

from signer.errors import IntegrityError, InvalidRequest
from signer.hsm import Curve, Hsm
from signer.hsm.errormap import Recovery, translate
from signer.hsm.token import KEK_LABEL_PREFIX
from tests.hsm.conftest import MakeHsm


async def test_kek_is_generated_once_per_scope_and_found_by_label(hsm: Hsm, make_hsm: MakeHsm) -> None:
    scope = "kek-org-" + os.urandom(4).hex()
    first = await hsm.kek_for_scope(scope)
    assert await hsm.kek_for_scope(scope) == first
    assert await hsm.kek_for_scope(scope + "-other") != first
    # Another worker on the same token (a later start, another process) finds it by its label.
    again = await make_hsm("hsm-main")
    assert await again.kek_for_scope(scope) == first


async def test_kek_is_confined_and_can_only_wrap(hsm: Hsm) -> None:
    kek_id = await hsm.kek_for_scope("kek-template-" + os.urandom(4).hex())
    attributes = await hsm.kek_attributes(kek_id)
    assert attributes.sensitive and not attributes.extractable and attributes.token
    assert attributes.local and attributes.never_extractable and attributes.always_sensitive

    def read(ctx):  # type: ignore[no-untyped-def]
        (key,) = ctx.session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: bytes.fromhex(kek_id)}
        )
        return key.get_attributes(
            [
                Attribute.WRAP,
                Attribute.UNWRAP,
                Attribute.ENCRYPT,
                Attribute.DECRYPT,
                Attribute.SIGN,
                Attribute.VALUE_LEN,
                Attribute.LABEL,
            ]
        )

    raw = await hsm._run_on_worker(read)
    assert raw[Attribute.WRAP] is True and raw[Attribute.UNWRAP] is True
    assert (
        raw[Attribute.ENCRYPT] is False and raw[Attribute.DECRYPT] is False and raw[Attribute.SIGN] is False
    )
    assert raw[Attribute.VALUE_LEN] == 32
    assert str(raw[Attribute.LABEL]).startswith(KEK_LABEL_PREFIX)


async def test_wrap_and_unwrap_round_trip_and_leave_no_session_object(hsm: Hsm) -> None:
    kek_id = await hsm.kek_for_scope("kek-round-" + os.urandom(4).hex())

    def count(ctx):  # type: ignore[no-untyped-def]
        return len(list(ctx.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})))

    before = await hsm._run_on_worker(count)
    for _ in range(5):
        dek = os.urandom(32)
        wrapped = await hsm.wrap_data_key(kek_id, dek)
        assert dek not in wrapped and len(wrapped) == 40
        assert await hsm.unwrap_data_key(kek_id, wrapped) == dek
    assert await hsm._run_on_worker(count) == before


async def test_altered_or_foreign_wrapped_key_does_not_open(hsm: Hsm) -> None:
    kek_a = await hsm.kek_for_scope("kek-a-" + os.urandom(4).hex())
    kek_b = await hsm.kek_for_scope("kek-b-" + os.urandom(4).hex())
    dek = os.urandom(32)
    wrapped = await hsm.wrap_data_key(kek_a, dek)
    with pytest.raises(IntegrityError) as foreign:
        await hsm.unwrap_data_key(kek_b, wrapped)
    assert foreign.value.code == "secret_integrity"
    altered = bytearray(wrapped)
    altered[7] ^= 1
    with pytest.raises(IntegrityError):
        await hsm.unwrap_data_key(kek_a, bytes(altered))
    with pytest.raises(IntegrityError):
        await hsm.unwrap_data_key(kek_a, wrapped[:-8])
    assert dek.hex() not in str(foreign.value)


async def test_wrap_refuses_a_malformed_data_key(hsm: Hsm) -> None:
    kek_id = await hsm.kek_for_scope("kek-bad-" + os.urandom(4).hex())
    with pytest.raises(InvalidRequest):
        await hsm.wrap_data_key(kek_id, b"short")


async def test_a_kek_handle_gone_stale_is_found_again(hsm: Hsm, make_hsm: MakeHsm) -> None:
    """SoftHSM re-reads the token after another process (or this one) writes a key, and a cached KEK
    handle can then be invalid: PKCS#11 says CKR_WRAPPING_KEY_HANDLE_INVALID (or UNWRAPPING_...), which
    is the same stale handle as a signing key's and must be refreshed, not answered with 500 hsm_error."""
    kek_id = await hsm.kek_for_scope("kek-stale-" + os.urandom(4).hex())
    other = await make_hsm("hsm-main")
    dek = os.urandom(32)
    for _ in range(6):
        wrapped = await hsm.wrap_data_key(kek_id, dek)
        await other.kek_for_scope("kek-other-" + os.urandom(4).hex())
        await hsm.kek_for_scope("kek-own-" + os.urandom(4).hex())
        assert await hsm.unwrap_data_key(kek_id, wrapped) == dek
        await other.generate_key(Curve.SECP256K1, "stale-" + os.urandom(2).hex())
        await hsm.generate_key(Curve.SECP256K1, "stale-" + os.urandom(2).hex())
        assert len(await hsm.wrap_data_key(kek_id, dek)) == 40


@pytest.mark.parametrize("stale", [pk.WrappingKeyHandleInvalid, pk.UnwrappingKeyHandleInvalid])
def test_a_stale_kek_handle_is_refreshed_not_an_hsm_error(stale: type[Exception]) -> None:
    # Seen through a running server: a rotation after this process generated a KEK answered 500
    # hsm_error (WrappingKeyHandleInvalid) when SoftHSM had re-indexed the token in between.
    recovery, error = translate(stale())
    assert recovery is Recovery.REFRESH_HANDLE and error.code != "hsm_error"
