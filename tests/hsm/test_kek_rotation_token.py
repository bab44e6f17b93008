"""The token's part of a KEK rotation, on the real SoftHSM token: a next KEK, making it the scope's (the
old one relabelled retired, still opening what it wrapped), rewrapping a data key inside the token (the
rewrapped key opens under the new KEK to the same data key), destroying only a retired KEK, and KEK
handles forgotten when the module is re-initialised (a kept one could name another key)."""

from __future__ import annotations

import os

import pytest
from pkcs11 import Attribute, ObjectClass

from signer.errors import IntegrityError, NotFound
from signer.hsm import Hsm
from signer.hsm.token import KEK_LABEL_PREFIX, KEK_RETIRED_PREFIX


def _label(hsm: Hsm, kek_id: str):  # type: ignore[no-untyped-def]
    def read(ctx):  # type: ignore[no-untyped-def]
        (key,) = ctx.session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: bytes.fromhex(kek_id)}
        )
        return str(key[Attribute.LABEL])

    return hsm._run_on_worker(read)


async def test_rotation_in_the_token(hsm: Hsm) -> None:
    scope = "kr-" + os.urandom(4).hex()
    old = await hsm.kek_for_scope(scope)
    dek = os.urandom(32)
    wrapped = await hsm.wrap_data_key(old, dek)
    new = await hsm.new_kek(scope)
    assert new != old
    # Until it is activated the scope still seals under the old KEK.
    assert await hsm.kek_for_scope(scope) == old
    assert await hsm.activate_kek(scope, new) == [old]
    assert await hsm.activate_kek(scope, new) == []  # idempotent: a resumed rotation runs it again
    assert await hsm.kek_for_scope(scope) == new
    assert await _label(hsm, new) == KEK_LABEL_PREFIX + scope
    assert await _label(hsm, old) == KEK_RETIRED_PREFIX + scope
    # The retired KEK still opens what it wrapped; the rewrapped key opens under the new one.
    assert await hsm.unwrap_data_key(old, wrapped) == dek
    rewrapped = await hsm.rewrap_data_key(old, new, wrapped)
    assert rewrapped != wrapped and dek not in rewrapped
    assert await hsm.unwrap_data_key(new, rewrapped) == dek
    with pytest.raises(IntegrityError):
        await hsm.unwrap_data_key(old, rewrapped)
    altered = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    with pytest.raises(IntegrityError) as refused:
        await hsm.rewrap_data_key(old, new, altered)
    assert refused.value.code == "secret_integrity"
    # Only a retired KEK is destroyed.
    with pytest.raises(IntegrityError) as active:
        await hsm.destroy_retired_kek(new)
    assert active.value.code == "kek_not_retired"
    await hsm.destroy_retired_kek(old)
    with pytest.raises(NotFound):
        await hsm.unwrap_data_key(old, wrapped)
    assert await hsm.unwrap_data_key(new, rewrapped) == dek


async def test_kek_handles_do_not_survive_a_reinitialisation(hsm: Hsm) -> None:
    scope = "kr-reinit-" + os.urandom(4).hex()
    first = await hsm.kek_for_scope(scope)
    second = await hsm.new_kek(scope)
    dek = os.urandom(32)
    for _ in range(3):
        one = await hsm.wrap_data_key(first, dek)
        two = await hsm.wrap_data_key(second, dek)
        # What a rescan does (``fresh`` calls past the rescan interval): C_Finalize, C_Initialize.
        await hsm._op(lambda ts: ts.reconnect())
        assert await hsm.unwrap_data_key(first, one) == dek
        assert await hsm.unwrap_data_key(second, two) == dek
