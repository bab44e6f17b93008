"""The audit field key and the audit anchor in the real token.

The field key is a generic secret made in the token on first use (sensitive, never extractable, sign
only): equal inputs give equal HMAC-SHA256s, different inputs different ones, and its value cannot be
read back. The anchor is a CKO_DATA object that only grows unless forced (an acknowledged rollback).
"""

from __future__ import annotations

import pkcs11.exceptions as pk
import pytest
from pkcs11 import Attribute, ObjectClass

from signer.hsm import Hsm
from signer.hsm.token import AUDIT_ANCHOR_LABEL, AUDIT_HMAC_LABEL


async def test_the_field_key_is_confined_and_deterministic(hsm: Hsm) -> None:
    first = await hsm.audit_hmac(b"idempotency_key\x00order-42")
    assert len(first) == 32
    assert await hsm.audit_hmac(b"idempotency_key\x00order-42") == first
    assert await hsm.audit_hmac(b"idempotency_key\x00order-43") != first

    def inspect(ctx: object) -> tuple[int, bool, bool, bool]:
        keys = list(
            ctx.session.get_objects(  # type: ignore[attr-defined]
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: AUDIT_HMAC_LABEL}
            )
        )
        key = keys[0]
        try:
            key[Attribute.VALUE]
            readable = True
        except (pk.AttributeSensitive, pk.AttributeTypeInvalid):
            readable = False
        return len(keys), key[Attribute.SENSITIVE], key[Attribute.EXTRACTABLE], readable

    count, sensitive, extractable, readable = await hsm._run_on_worker(inspect)
    assert count == 1 and sensitive and not extractable and not readable


async def test_the_anchor_only_grows_unless_forced(hsm: Hsm) -> None:
    def drop(ctx: object) -> None:
        for obj in list(
            ctx.session.get_objects(  # type: ignore[attr-defined]
                {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: AUDIT_ANCHOR_LABEL}
            )
        ):
            obj.destroy()

    await hsm._run_on_worker(drop)
    try:
        assert await hsm.read_anchor() is None
        ten = (10).to_bytes(8, "big") + b"ten"
        assert await hsm.write_anchor(ten)
        assert await hsm.read_anchor() == ten
        assert not await hsm.write_anchor((9).to_bytes(8, "big") + b"nine")
        assert not await hsm.write_anchor((10).to_bytes(8, "big") + b"other")
        assert await hsm.read_anchor() == ten
        assert await hsm.write_anchor((3).to_bytes(8, "big") + b"ack", force=True)
        assert await hsm.read_anchor() == (3).to_bytes(8, "big") + b"ack"
        with pytest.raises(Exception, match="anchor"):
            await hsm.write_anchor(b"short")
    finally:
        await hsm._run_on_worker(drop)
