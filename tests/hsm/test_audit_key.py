"""The audit checkpoint key in the real token: Ed25519, confined (sensitive, never extractable, made in
the token), found again by its label rather than made twice, and its signatures verify with an
independent library."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
