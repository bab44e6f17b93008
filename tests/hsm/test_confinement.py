"""A-07: attempts to get a private key out through the service's own logged-in PKCS#11 session.

Each attempt runs on the worker thread against the live session (``Hsm._run_on_worker``), i.e. with
every privilege the service itself has; the token must refuse all of them, and the inventory check
must flag a key that was born weaker.
"""

from __future__ import annotations

from typing import Any

import pkcs11.exceptions as pk
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from signer.hsm import Curve, Hsm
from tests.hsm.conftest import MakeHsm


async def test_sensitive_value_cannot_be_read(hsm: Hsm) -> None:
    key = await hsm.generate_key(Curve.SECP256K1, "exfil-read")

    def read_value(ctx: Any) -> bytes:
        return ctx.find_private_key(key.hsm_id)[Attribute.VALUE]

    with pytest.raises(pk.AttributeSensitive):
        await hsm._run_on_worker(read_value)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [(Attribute.EXTRACTABLE, True), (Attribute.SENSITIVE, False)],
    ids=["set-extractable", "clear-sensitive"],
)
async def test_confinement_attributes_cannot_be_weakened(hsm: Hsm, attribute: Attribute, value: bool) -> None:
    key = await hsm.generate_key(Curve.P256, f"exfil-{attribute.name.lower()}")

    def weaken(ctx: Any) -> None:
        ctx.find_private_key(key.hsm_id)[attribute] = value

    with pytest.raises(pk.AttributeReadOnly):
        await hsm._run_on_worker(weaken)
    assert (await hsm.key_attributes(key.hsm_id)).confined


async def test_private_key_cannot_be_wrapped_out(hsm: Hsm) -> None:
    key = await hsm.generate_key(Curve.SECP256K1, "exfil-wrap")

    def wrap(ctx: Any) -> bytes:
        # A session AES key the attacker controls, allowed to wrap anything.
        wrapping = ctx.session.generate_key(
            KeyType.AES, 256, store=False, template={Attribute.WRAP: True, Attribute.EXTRACTABLE: True}
        )
        try:
            return wrapping.wrap_key(ctx.find_private_key(key.hsm_id), mechanism=Mechanism.AES_KEY_WRAP_PAD)
        finally:
            wrapping.destroy()

    with pytest.raises(pk.KeyUnextractable):
        await hsm._run_on_worker(wrap)


async def test_private_key_cannot_be_copied(hsm: Hsm) -> None:
    key = await hsm.generate_key(Curve.ED25519, "exfil-copy")

    def copy(ctx: Any) -> object:
        return ctx.find_private_key(key.hsm_id).copy({Attribute.EXTRACTABLE: True, Attribute.TOKEN: False})

    with pytest.raises(pk.PKCS11Error) as info:
        await hsm._run_on_worker(copy)
    assert "0x1b" in str(info.value)  # CKR_ACTION_PROHIBITED: CKA_COPYABLE is false


async def test_inventory_flags_a_key_that_could_leave(make_hsm: MakeHsm) -> None:
    """A key generated extractable (as an importing or careless tool would) is reported by hsm_id."""
    aux = await make_hsm()
    good = await aux.generate_key(Curve.SECP256K1, "confined")
    weak_id = bytes.fromhex("ee" * 16)

    def make_weak_key(ctx: Any) -> None:
        params = ctx.session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: bytes.fromhex("06052b8104000a")}, local=True
        )
        params.generate_keypair(
            id=weak_id,
            label="weak",
            store=True,
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True, Attribute.SIGN: True},
        )

    def remove_weak_key(ctx: Any) -> None:
        for obj in ctx.session.get_objects({Attribute.ID: weak_id}):
            obj.destroy()

    await aux._run_on_worker(make_weak_key)
    try:
        assert await aux.unconfined_keys() == [weak_id.hex()]
        attributes = await aux.key_attributes(weak_id.hex())
        assert attributes.extractable and not attributes.never_extractable and not attributes.confined
        assert (await aux.key_attributes(good.hsm_id)).confined
        assert (weak_id.hex(), "weak", Curve.SECP256K1) in await aux.list_keys()
    finally:
        await aux._run_on_worker(remove_weak_key)
    assert await aux.unconfined_keys() == []

    def private_count(ctx: Any) -> int:
        template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: weak_id}
        return len(list(ctx.session.get_objects(template)))

    assert await aux._run_on_worker(private_count) == 0
