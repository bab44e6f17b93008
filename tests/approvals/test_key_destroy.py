"""Destroying a key (U-06) in process, on the real SoftHSM token and both database backends.

Destroy commits the key's state and its audit event first, then destroys the private key in the token.
When the token fails at that moment (a wrapper here refuses ``destroy_key`` once, as a token gone away
would), the key already signs nothing, the answer says ``destroyed_in_token: false``, and the start-up
inventory finishes the destruction; a key the registry says is destroyed is not reported missing.
"""

from __future__ import annotations

from typing import Any

import pytest

from signer.clock import utcnow
from signer.errors import Conflict, HsmUnavailable
from signer.hsm import Curve, Hsm
from signer.services.facts import FactsCache
from signer.services.key_states import KeyAction
from signer.services.keys import KeyService
from tests.approvals.support import World


class DestroyFails:
    """The real token, except that destroying a key fails (the token went away at that moment)."""

    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hsm, name)

    async def destroy_key(self, hsm_id: str) -> None:
        raise HsmUnavailable("the token is gone")


async def _on_token(hsm: Hsm) -> set[str]:
    return {hsm_id for hsm_id, _label, _curve in await hsm.list_keys()}


async def test_a_destroy_the_token_failed_is_finished_at_the_next_start(world: World) -> None:
    ctx = world.admin_person.ctx
    failing = KeyService(world.store, DestroyFails(world.hsm), FactsCache(), clock=utcnow)  # type: ignore[arg-type]
    key = await world.keys.create(ctx, Curve.SECP256K1, "doomed one", "default", [])
    async with world.store.read() as reader:
        record = await reader.keys.get(key["id"])
    assert record is not None and record.hsm_id in await _on_token(world.hsm)
    await failing.change_state(ctx, key["id"], KeyAction.DEACTIVATE, reason="retired")
    view = await failing.change_state(ctx, key["id"], KeyAction.DESTROY, confirm="doomed one")
    assert (view["state"], view["destroyed_in_token"]) == ("destroyed", False)
    assert record.hsm_id in await _on_token(world.hsm)  # still there: the token failed
    # Irreversible already: nothing takes it back to a usable state.
    for action in (KeyAction.ACTIVATE, KeyAction.DESTROY, KeyAction.DEACTIVATE):
        with pytest.raises(Conflict) as refused:
            await world.keys.change_state(ctx, key["id"], action, confirm="doomed one")
        assert refused.value.code == "invalid_key_transition"

    missing = await world.keys.check_token_inventory()
    assert key["id"] not in missing
    assert record.hsm_id not in await _on_token(world.hsm)
    shown = await world.keys.get(ctx, key["id"])
    assert shown["public_key"] == key["public_key"] and shown["address"] == key["address"]
    assert shown["attributes_source"] == "registry"


async def test_destroy_removes_the_private_key_at_once(world: World) -> None:
    ctx = world.admin_person.ctx
    key = await world.keys.create(ctx, Curve.P256, "burnt", "default", [], inactive=True)
    assert key["state"] == "pre_activation"
    async with world.store.read() as reader:
        record = await reader.keys.get(key["id"])
    assert record is not None
    view = await world.keys.change_state(
        ctx, key["id"], KeyAction.DESTROY, confirm="burnt", reason="never used"
    )
    assert (view["state"], view["destroyed_in_token"]) == ("destroyed", True)
    assert record.hsm_id not in await _on_token(world.hsm)
    compromised = await world.keys.change_state(ctx, key["id"], KeyAction.COMPROMISE, confirm="burnt")
    assert compromised["state"] == "destroyed_compromised" and "destroyed_in_token" not in compromised
