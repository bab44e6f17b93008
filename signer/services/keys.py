"""Keys: generated inside the token, registered in the database, listed with the token's own evidence.

The private half never exists outside the HSM; the registry holds the public key, the EVM address, the
label, scope, tags and state, and the attributes read back from the token (``CKA_NEVER_EXTRACTABLE``,
``CKA_ALWAYS_SENSITIVE``, ``CKA_LOCAL``...) as evidence that it cannot leave. Service principals see only the
keys a grant of theirs reaches (none closed to them by a no-access grant); anyone else asking about another's
key gets the same 404 as for a missing one.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from signer.audit import EventTarget
from signer.errors import ConfigurationError, InvalidRequest, SignerError
from signer.eth import address_from_public_key
from signer.hsm import Curve, KeyVault
from signer.identity import Role
from signer.services.authorization import holds_any_grant
from signer.services.context import Clock, RequestContext, iso, require_role
from signer.services.facts import FactsCache
from signer.services.naming import NameKind, check_name
from signer.services.resources import KEYS, key_ref
from signer.store import KeyRecord, Store, Writer

log = logging.getLogger("signer.keys")


def key_view(key: KeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "label": key.label,
        "curve": key.curve,
        "public_key": "0x" + key.public_key,
        "address": key.address,
        "scope": key.scope,
        "tags": list(key.tags),
        "state": key.state,
        "attributes": dict(key.attributes),
        "created_by": key.created_by,
        "created_at": iso(key.created_at),
        "updated_at": iso(key.updated_at),
    }


def check_key_fields(label: str, scope: str, tags: list[str]) -> tuple[str, str, list[str]]:
    """The canonical label, scope and tags of a new key, or 400 ``invalid_name`` naming the field."""
    if not isinstance(tags, list) or len(tags) > 32:
        raise InvalidRequest("tags must be at most 32 short words", code="invalid_tags", field="tags")
    return (
        check_name(label, field="label", kind=NameKind.LABEL),
        check_name(scope, field="scope", kind=NameKind.SCOPE),
        [check_name(tag, field="tags", kind=NameKind.TAG) for tag in tags],
    )


class KeyService:
    def __init__(self, store: Store, hsm: KeyVault, facts: FactsCache, *, clock: Clock) -> None:
        self._store = store
        self._hsm = hsm
        self._facts = facts
        self._clock = clock

    async def create(
        self, ctx: RequestContext, curve: Curve, label: str, scope: str, tags: list[str]
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        label, scope, tags = check_key_fields(label, scope, tags)
        generated = await self._hsm.generate_key(curve, label)
        if not generated.attributes.confined:
            # A token that hands back a key it could export is not one we may use.
            await self._destroy_quietly(generated.hsm_id)
            raise ConfigurationError(
                "the token generated a key whose attributes say it could leave the token"
            )
        now = self._clock()
        record = KeyRecord(
            id="key_" + secrets.token_hex(10),
            label=label,
            curve=curve.value,
            public_key=generated.public_key.hex(),
            address=address_from_public_key(generated.public_key) if curve is Curve.SECP256K1 else None,
            scope=scope,
            tags=list(tags),
            state="active",
            hsm_id=generated.hsm_id,
            attributes=generated.attributes.as_dict(),
            created_by=ctx.caller.principal_id,
            created_at=now,
            updated_at=now,
        )

        async def unit(writer: Writer) -> dict[str, Any]:
            await writer.keys.insert(record)
            writer.append_audit(
                ctx.audit_event(
                    "key.create", now, resource=EventTarget("key", record.id), key=key_view(record)
                )
            )
            return key_view(record)

        try:
            return await self._store.submit(unit)
        except SignerError:
            # Not registered means not usable: remove it from the token rather than leave an orphan.
            await self._destroy_quietly(generated.hsm_id)
            raise

    async def _destroy_quietly(self, hsm_id: str) -> None:
        try:
            await self._hsm.destroy_key(hsm_id)
        except SignerError:
            log.warning("could not destroy an unregistered key on the token", extra={"hsm_id": hsm_id})

    async def _visible(self, ctx: RequestContext, key_id: str) -> KeyRecord:
        async with self._store.read() as reader:
            key = await reader.keys.get(key_id)
            if key is None:
                raise KEYS.not_found()
            if ctx.caller.role in (Role.ADMIN, Role.AUDITOR, Role.APPROVER):
                return key
            principal_id = ctx.caller.principal_id
            grants = await reader.grants.for_principal(
                principal_id, await reader.groups.of(principal_id), self._clock()
            )
        if not holds_any_grant(grants, key_ref(key)):
            raise KEYS.not_found()
        return key

    async def get(self, ctx: RequestContext, key_id: str) -> dict[str, Any]:
        key = await self._visible(ctx, key_id)
        view = key_view(key)
        try:
            view["attributes"] = (await self._hsm.key_attributes(key.hsm_id)).as_dict()
            view["attributes_source"] = "token"
        except SignerError:
            view["attributes_source"] = "registry"
        return view

    async def list_keys(
        self, ctx: RequestContext, *, limit: int = 100, after: str | None = None
    ) -> dict[str, Any]:
        async with self._store.read() as reader:
            keys = await reader.keys.all(limit=limit, after=after)
            if ctx.caller.role is Role.SERVICE:
                principal_id = ctx.caller.principal_id
                groups = await reader.groups.of(principal_id)
                grants = await reader.grants.for_principal(principal_id, groups, self._clock())
                keys = [k for k in keys if holds_any_grant(grants, key_ref(k))]
        items = [key_view(k) for k in keys]
        return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}

    async def set_state(self, ctx: RequestContext, key_id: str, state: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            key = await writer.keys.get(key_id)
            if key is None:
                raise KEYS.not_found()
            if key.state != state:
                await writer.keys.set_state(key_id, state, now)
            writer.append_audit(
                ctx.audit_event(
                    "key.enable" if state == "active" else "key.disable",
                    now,
                    resource=EventTarget("key", key_id),
                    key_id=key_id,
                    previous_state=key.state,
                    state=state,
                )
            )
            updated = await writer.keys.get(key_id)
            return key_view(updated or key)

        return await self._store.submit(unit)

    async def check_token_inventory(self) -> list[str]:
        """At start: refuse to run if the token holds a key that could leave it; report unregistered drift."""
        unconfined = await self._hsm.unconfined_keys()
        if unconfined:
            raise ConfigurationError(
                f"refusing to start: {len(unconfined)} key(s) on the token could leave it "
                f"(CKA_EXTRACTABLE or not CKA_SENSITIVE): {', '.join(sorted(unconfined))}"
            )
        on_token = {hsm_id for hsm_id, _label, _curve in await self._hsm.list_keys()}
        async with self._store.read() as reader:
            registered = await reader.keys.all(limit=1_000_000)
        missing = sorted(k.id for k in registered if k.hsm_id not in on_token)
        for key_id in missing:
            # Signing with it fails with key_not_found; an operator must look, so say it loudly.
            log.error("registered key is missing from the token", extra={"key_id": key_id})
        return missing
