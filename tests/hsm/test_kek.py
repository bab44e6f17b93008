"""Key-encryption keys for secrets on the real SoftHSM token: one per scope, confined, wrap/unwrap only,
found again by label; data keys wrapped with CKM_AES_KEY_WRAP_PAD open only under the KEK that wrapped
them and only unaltered."""

from __future__ import annotations

import os

import pkcs11.exceptions as pk_errors
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from signer.errors import IntegrityError, InvalidRequest
from signer.hsm import Hsm
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


async def test_a_stale_kek_handle_is_found_again(hsm: Hsm) -> None:
    """A cached KEK handle that the token no longer knows is recovered like a signing key's stale handle
    (forget the handles, find the key again), not answered as an HSM error."""
    kek_id = await hsm.kek_for_scope("kek-stale-" + os.urandom(4).hex())
    wrapped = await hsm.wrap_data_key(kek_id, os.urandom(32))

    def stale_handle(ctx):  # type: ignore[no-untyped-def]
        # A session object's handle, destroyed at once: a handle the token no longer knows.
        gone = ctx.session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: os.urandom(32),
                Attribute.TOKEN: False,
                Attribute.WRAP: True,
                Attribute.UNWRAP: True,
            }
        )
        gone.destroy()
        return gone

    gone = await hsm._run_on_worker(stale_handle)
    for operation in ("wrap", "unwrap"):
        hsm._token._keks[kek_id] = gone
        if operation == "wrap":
            assert len(await hsm.wrap_data_key(kek_id, os.urandom(32))) == 40
        else:
            assert len(await hsm.unwrap_data_key(kek_id, wrapped)) == 32


@pytest.mark.parametrize(
    "stale",
    [pk_errors.WrappingKeyHandleInvalid, pk_errors.UnwrappingKeyHandleInvalid],
    ids=lambda e: e.__name__,
)
def test_wrapping_with_a_stale_kek_handle_is_a_handle_to_refresh(stale: type[Exception]) -> None:
    """SoftHSM reports a KEK handle gone stale under load (another process re-indexed the token) as
    CKR_WRAPPING_KEY_HANDLE_INVALID / CKR_UNWRAPPING_KEY_HANDLE_INVALID; seen in a server's log as a 500
    hsm_error on a fetch. They are the same class as a stale signing-key handle: find the key again."""
    recovery, _ = translate(stale())
    assert recovery is Recovery.REFRESH_HANDLE
