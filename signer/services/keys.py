"""Keys: generated inside the token, registered in the database, listed with the token's own evidence.

The private half never exists outside the HSM; the registry holds the public key, the EVM address, the
label, scope, tags and state, and the attributes read back from the token (``CKA_NEVER_EXTRACTABLE``,
``CKA_ALWAYS_SENSITIVE``, ``CKA_LOCAL``...) as evidence that it cannot leave. Service principals see only the
keys a grant of theirs reaches (none closed to them by a no-access grant); anyone else asking about another's
key gets the same 404 as for a missing one.

A key's state follows the lifecycle graph of ``signer.services.key_states`` (NIST SP 800-57): each
transition is a compare-and-set on the key's row with its ``key.<action>`` audit event in the same
transaction; a transition the graph has no edge for is ``invalid_key_transition`` (409) and writes
nothing. Compromise and destroy are irreversible, so the caller confirms them by naming the key's
label. ``key_lifecycle`` policy rules attached to the key or a scope above it may deny a transition or
send it to M-of-N approvers (a pending request, ``signer.services.key_gate``); its requester then
completes the approved transition once, and its event names the approval and who approved. Destroy
commits the state and its audit event first, then destroys the private key in the token; the row, its
public key and address stay.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any

from signer.audit import EventTarget
from signer.errors import ConfigurationError, Conflict, InvalidRequest, NotFound, SignerError
from signer.eth import address_from_public_key
from signer.hsm import Curve, KeyVault
from signer.identity import Role
from signer.services.authorization import holds_any_grant
from signer.services.context import Clock, RequestContext, iso, require_role
from signer.services.facts import FactsCache
from signer.services.key_gate import KeyGate
from signer.services.key_lifecycle import PAYLOADS, lifecycle_body, stored_compromised_at
from signer.services.key_states import (
    COMPROMISED_STATES,
    DESTROYED_STATES,
    NEEDS_CONFIRMATION,
    TRANSITIONS,
    KeyAction,
    KeyState,
    may_sign,
    next_state,
)
from signer.services.naming import NameKind, check_name
from signer.services.pending import (
    PendingRequests,
)
from signer.services.resources import KEYS, key_ref
from signer.store import ApprovalRequestRecord, KeyRecord, Store, Writer

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
        "can_sign": may_sign(key.state),
        "compromised": key.state in COMPROMISED_STATES,
        "compromised_at": iso(key.compromised_at),
        "attributes": dict(key.attributes),
        "created_by": key.created_by,
        "created_at": iso(key.created_at),
        "updated_at": iso(key.updated_at),
    }


# What the old routes asked for: ``disable`` a suspended key or ``enable`` an active one is no change.
_LEGACY_TARGET = {KeyAction.SUSPEND: KeyState.SUSPENDED.value, KeyAction.ACTIVATE: KeyState.ACTIVE.value}


def _actions_from(state: str) -> frozenset[KeyAction]:
    try:
        return frozenset(TRANSITIONS[KeyState(state)])
    except ValueError:
        return frozenset()


def check_key_fields(label: str, scope: str, tags: list[str]) -> tuple[str, str, list[str]]:
    """The canonical label, scope and tags of a new key, or 400 ``invalid_name`` naming the field."""
    if not isinstance(tags, list) or len(tags) > 32:
        raise InvalidRequest("tags must be at most 32 short words", code="invalid_tags", field="tags")
    return (
        check_name(label, field="label", kind=NameKind.LABEL),
        check_name(scope, field="scope", kind=NameKind.SCOPE),
        [check_name(tag, field="tags", kind=NameKind.TAG) for tag in tags],
    )


def _approved_body(approved: ApprovalRequestRecord, body: dict[str, Any]) -> dict[str, Any]:
    """The body an approved transition applies: the approved one. A reason (or compromise time) given
    again must be the approved one: an approval is for its body."""
    stored = dict(approved.payload.get("body") or {})
    for name in ("reason", "compromised_at"):
        if body.get(name) is not None and body.get(name) != stored.get(name):
            raise Conflict(
                f"the approved request has another {name}: send it as approved, or leave it out",
                code="approval_mismatch",
                field=name,
            )
    return stored


class KeyService:
    def __init__(
        self,
        store: Store,
        hsm: KeyVault,
        facts: FactsCache,
        *,
        clock: Clock,
        pending: PendingRequests | None = None,
    ) -> None:
        self._store = store
        self._hsm = hsm
        self._facts = facts
        self._clock = clock
        # Judges transitions by the key_lifecycle rules; opens and closes their pending requests.
        self._gate = KeyGate(store, pending or PendingRequests(clock=clock), clock=clock)

    async def create(
        self,
        ctx: RequestContext,
        curve: Curve,
        label: str,
        scope: str,
        tags: list[str],
        *,
        inactive: bool = False,
    ) -> dict[str, Any]:
        """Generate a key in the token and register it: active, or ``pre_activation`` when
        ``inactive`` (it signs nothing until activated)."""
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
            state=KeyState.PRE_ACTIVATION.value if inactive else KeyState.ACTIVE.value,
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
        if key.state in DESTROYED_STATES:
            # Nothing left on the token to read (and a miss there would make the worker look again).
            view["attributes_source"] = "registry"
            return view
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

    async def change_state(
        self,
        ctx: RequestContext,
        key_id: str,
        action: KeyAction,
        *,
        reason: str | None = None,
        confirm: str | None = None,
        compromised_at: datetime | None = None,
        via: str | None = None,
        approval_id: str | None = None,
    ) -> dict[str, Any]:
        """Move a key along the lifecycle graph by ``action``; audited as ``key.<action>``.

        A refused transition is 409 ``invalid_key_transition`` and writes nothing. Compromise and
        destroy need ``confirm`` equal to the key's label (else 400 ``confirmation_mismatch``).
        ``via`` names the old route (``disable``/``enable``) for which asking for the state the key is
        already in is answered with the key unchanged, as those routes always did.

        The ``key_lifecycle`` rules in force on the key judge the transition (``policy.evaluate_lifecycle``):
        a deny is 403 ``policy_denied``; a rule asking for approval opens a pending request instead and
        the answer is its ``pending_approval`` body (nothing changes). With ``approval_id``, the caller's
        own approved request for this action on this key is completed: the body it approved (reason,
        compromised_at) is applied, once, and the event names the approval and its approvers."""
        require_role(ctx, Role.ADMIN)
        now = self._clock()
        if compromised_at is not None and compromised_at > now:
            raise InvalidRequest(
                "compromised_at is in the future", code="invalid_compromised_at", field="compromised_at"
            )
        payload = PAYLOADS[action]
        approved: ApprovalRequestRecord | None = None
        body = lifecycle_body(action, reason, compromised_at)
        if approval_id is not None:
            approved = await self._gate.approved(ctx, payload, key_id, approval_id)
            body = _approved_body(approved, body)
            reason, compromised_at = body.get("reason"), stored_compromised_at(body)

        async def unit(writer: Writer) -> tuple[dict[str, Any], KeyRecord | None]:
            key = await writer.keys.get(key_id)
            if key is None:
                raise KEYS.not_found()
            target = next_state(key.state, action)
            if target is None:
                if via is not None and key.state == _LEGACY_TARGET[action]:
                    return key_view(key), key
                raise Conflict(
                    f"a key in state {key.state} cannot {action.value}",
                    code="invalid_key_transition",
                    state=key.state,
                    action=action.value,
                    allowed=sorted(a.value for a in _actions_from(key.state)),
                )
            if action in NEEDS_CONFIRMATION and confirm != key.label:
                raise InvalidRequest(
                    f"{action.value} is irreversible: confirm with the key's label",
                    code="confirmation_mismatch",
                    field="confirm",
                )
            passage = await self._gate.pass_(
                writer, ctx, payload, key, payload.parse_stored(body)(key), approved, now
            )
            fields: dict[str, Any] = {
                "key_id": key_id,
                "previous_state": key.state,
                "state": target.value,
                "reason": reason,
                "changed_at": iso(now),
            }
            if action is KeyAction.COMPROMISE:
                fields["compromised_at"] = iso(compromised_at)
            if via is not None:
                fields["via"] = via
            fields.update(passage.event_fields())
            if passage.pending is not None:
                # Nothing changes: the transition waits for approvers (opened in this transaction).
                fields["state"] = key.state
                fields["requested_state"] = target.value
                answer = passage.answer_pending(
                    writer, ctx, "key." + action.value, now, EventTarget("key", key_id), **fields
                )
                return answer, None
            await writer.keys.set_state(
                key_id, target.value, now, expected=key.state, compromised_at=compromised_at
            )
            writer.append_audit(
                ctx.audit_event("key." + action.value, now, resource=EventTarget("key", key_id), **fields)
            )
            updated = await writer.keys.get(key_id)
            return key_view(updated or key), key

        try:
            view, before = await self._store.submit(unit)
        except SignerError as exc:
            await self._gate.reopen_if_lost(approved, exc, ctx.request_id)
            raise
        if before is None:
            return view
        if approved is not None:
            view["approval"] = {"id": approved.id, "payload_digest": approved.payload_digest}
        if view["state"] in DESTROYED_STATES and before.state not in DESTROYED_STATES:
            # The state and its audit event are committed: the key signs nothing from here on. Now
            # the irreversible part; if the token fails, the start-up inventory finishes it.
            view["destroyed_in_token"] = await self._destroy_in_token(key_id, before.hsm_id)
        return view

    async def _destroy_in_token(self, key_id: str, hsm_id: str) -> bool:
        try:
            await self._hsm.destroy_key(hsm_id)
        except NotFound:
            return True  # already gone from the token (an earlier attempt, or another process)
        except SignerError:
            log.error("a destroyed key is still on the token", extra={"key_id": key_id})
            return False
        return True

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
        for key in registered:
            if key.state in DESTROYED_STATES and key.hsm_id in on_token:
                # Destroyed in the registry but the token failed at the time: finish it now.
                if await self._destroy_in_token(key.id, key.hsm_id):
                    on_token.discard(key.hsm_id)
        missing = sorted(
            k.id for k in registered if k.hsm_id not in on_token and k.state not in DESTROYED_STATES
        )
        for key_id in missing:
            # Signing with it fails with key_not_found; an operator must look, so say it loudly.
            log.error("registered key is missing from the token", extra={"key_id": key_id})
        return missing
