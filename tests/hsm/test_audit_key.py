"""The audit checkpoint key in the real token: Ed25519, confined (sensitive, never extractable, made in
the token), found again by its label rather than made twice, and its signatures verify with an
independent library."""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from signer.errors import NotFound
from signer.hsm import Curve, Hsm


async def test_the_audit_key_is_made_once_confined_and_signs_ed25519(hsm: Hsm) -> None:
    key = await hsm.audit_key()
    try:
        assert key.curve is Curve.ED25519 and len(key.public_key) == 32
        assert key.attributes.confined
        assert not key.attributes.extractable and key.attributes.never_extractable
        again = await hsm.audit_key()
        assert (again.hsm_id, again.public_key) == (key.hsm_id, key.public_key)
        note = b"signer.local/audit\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        signature = await hsm.sign(key.hsm_id, Curve.ED25519, note)
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, note)  # raises if bad
    finally:
        await hsm.destroy_key(key.hsm_id)


async def test_a_rotated_audit_key_is_confined_and_retiring_it_keeps_only_its_public_half(hsm: Hsm) -> None:
    first = await hsm.audit_key()
    rotated = await hsm.new_audit_key()
    try:
        assert rotated.curve is Curve.ED25519 and rotated.attributes.confined
        assert rotated.hsm_id != first.hsm_id
        # A rotated key is never taken for the first key, and is found by its id.
        assert (await hsm.audit_key()).hsm_id == first.hsm_id
        assert (await hsm.audit_key_by_id(rotated.hsm_id)).public_key == rotated.public_key
        body = b"signer.local/audit\n4\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        Ed25519PublicKey.from_public_bytes(rotated.public_key).verify(
            await hsm.sign(rotated.hsm_id, Curve.ED25519, body), body
        )
        # Retired: the private half is destroyed (twice is harmless), the public half stays listed.
        await hsm.destroy_audit_private(first.hsm_id)
        await hsm.destroy_audit_private(first.hsm_id)
        with pytest.raises(NotFound):
            await hsm.audit_key_by_id(first.hsm_id)
        with pytest.raises(NotFound):
            await hsm.sign(first.hsm_id, Curve.ED25519, body)
        listed = dict(await hsm.audit_public_keys())
        assert listed[first.hsm_id] == first.public_key and listed[rotated.hsm_id] == rotated.public_key
    finally:
        await hsm.destroy_key(rotated.hsm_id)
        with contextlib.suppress(NotFound):
            await hsm.destroy_key(first.hsm_id)
