"""Principals and grants: the admin operations that decide who may use what.

Every change is written together with its audit event in one transaction, and changes to facts that
decisions depend on bump the facts epoch (the store does that), so a revoked grant stops working on the
next request in every process.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from policy import NATIVE, Effect, PolicyError, canonical_address
from signer.audit import AuditEvent, EventTarget, Outcome
from signer.errors import Conflict, InvalidRequest, NotFound, SignerError
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.authorization import decision_summary, to_grant
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.services.impact_hook import ImpactHook, recorded_impact
from signer.services.key_gate import KeyGate, refusal
from signer.services.key_lifecycle import GRANT_PAYLOADS, grant_body, revoke_body
from signer.services.naming import NameKind, check_name
from signer.services.payloads import PayloadKind
from signer.services.pending import PendingRequests
from signer.services.policies import check_group
from signer.services.resources import SCOPE, grant_operations, known_kind, resource_kind
from signer.store import GrantRecord, PrincipalRecord, Store, Writer


def principal_view(principal: PrincipalRecord) -> dict[str, Any]:
    return {
        "id": principal.id,
        "name": principal.name,
        "role": principal.role,
        "created_at": iso(principal.created_at),
        "created_by": principal.created_by,
        "disabled": principal.disabled_at is not None,
    }


def _budgets(raw: dict[str, str]) -> dict[str, str]:
    """Budgets as ``{asset: decimal string}``; the asset is ``native`` or a token address."""
    out: dict[str, str] = {}
    for asset, value in raw.items():
        if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 78:
            raise InvalidRequest("a budget is a decimal string", code="invalid_budget", field="value_budgets")
        amount = int(value)
        if amount >= 2**256:
            raise InvalidRequest(
                "a budget must be below 2**256", code="invalid_budget", field="value_budgets"
            )
        try:
            key = NATIVE if asset == NATIVE else canonical_address(asset)
        except PolicyError:
            raise InvalidRequest(
                "a budget's asset is 'native' or a token address",
                code="invalid_budget",
                field="value_budgets",
            ) from None
        out[key] = str(amount)
    return out


def grant_place(
    scope: str | None, resource: tuple[str, str] | None, *, key_id: str | None, secret_id: str | None
) -> tuple[str, str]:
    """What a grant names, as stored: ``(kind, id)`` of one resource, or ``("scope", prefix)``. Exactly
    one of a scope (canonical form) or a resource reference of a registered kind; ``key_id`` and
    ``secret_id`` are the older spellings of ``("key", id)`` and ``("secret", id)``. 400
    ``invalid_grant`` otherwise (the kind named by position, never repeated)."""
    named = [r for r in (resource, key_id and ("key", key_id), secret_id and ("secret", secret_id)) if r]
    if len(named) + (scope is not None) != 1:
        raise InvalidRequest("name exactly one of resource, key_id, secret_id or scope", code="invalid_grant")
    if scope is not None:
        return SCOPE, check_name(scope, field="scope", kind=NameKind.SCOPE)
    resource_type, resource_id = named[0]
    if resource_type == SCOPE or known_kind(resource_type) is None:
        raise InvalidRequest(
            "resource.type names no kind of resource", code="invalid_grant", field="resource.type"
        )
    return resource_type, resource_id


def grant_view(grant: GrantRecord) -> dict[str, Any]:
    """A grant as the API shows it: ``resource`` (kind and id) or ``scope``, whichever it names, and the
    same as ``resource_type`` / ``resource_id`` (``scope`` for a scope grant), the older spelling."""
    on_scope = grant.resource_type == SCOPE
    return {
        "id": grant.id,
        "principal_id": grant.principal_id,
        "group": grant.group_name,
        "max_uses": grant.max_uses,
        "value_budgets": dict(grant.value_budgets),
        "resource": None if on_scope else {"type": grant.resource_type, "id": grant.resource_id},
        "scope": grant.resource_id if on_scope else None,
        "resource_type": grant.resource_type,
        "resource_id": grant.resource_id,
        "operations": sorted(grant.operations),
        "no_access": grant.no_access,
        "expires_at": iso(grant.expires_at),
        "created_by": grant.created_by,
        "created_at": iso(grant.created_at),
        "revoked": grant.revoked_at is not None,
    }


def check_principal_name(name: str) -> str:
    """The canonical form of a principal name (uniqueness is decided on it), or 400 ``invalid_name``."""
    return check_name(name, field="name", kind=NameKind.IDENTIFIER)


def _reaches_keys(operations: Any, no_access: bool) -> bool:
    """Whether a scope grant changes what keys allow: it names a key operation, or it is a no-access
    grant (which closes keys below it as a revocation would)."""
    return no_access or bool(set(operations or ()) & resource_kind("key").operations)


class AdminService:
    def __init__(
        self,
        store: Store,
        auth: AuthService,
        *,
        clock: Clock = utcnow,
        pending: PendingRequests | None = None,
    ) -> None:
        self._store = store
        self._auth = auth
        self._clock = clock
        # Judges grants on a key (and their revocation) by the key_lifecycle rules in force on it.
        self._gate = KeyGate(store, pending or PendingRequests(clock=clock), clock=clock)
        # Records the impact review in the audit event of a revocation or a disabling (signer.app).
        self.impact: ImpactHook | None = None

    async def _impact(self, writer: Writer, action: str, target_id: str) -> dict[str, Any]:
        return await recorded_impact(self.impact, writer, action, target_id)

    async def create_principal(self, ctx: RequestContext | None, name: str, role: Role) -> dict[str, Any]:
        """Create a principal and its first credentials; ``ctx=None`` is the bootstrap of ``signer init``."""
        if ctx is not None:
            require_role(ctx, Role.ADMIN)
        name = check_principal_name(name)
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            if await writer.principals.by_name(name) is not None:
                raise Conflict("a principal with that name exists", code="principal_exists", field="name")
            principal = PrincipalRecord(
                id="prn_" + secrets.token_hex(8),
                name=name,
                role=role.value,
                created_at=now,
                created_by=ctx.caller.principal_id if ctx else "bootstrap",
                disabled_at=None,
            )
            await writer.principals.insert(principal)
            credentials = await self._auth.issue_credentials(writer, principal, now)
            writer.append_audit(
                AuditEvent.of(
                    "principal.create",
                    at=now,
                    outcome=Outcome.ALLOWED,
                    actor=ctx.actor() if ctx else {"name": "bootstrap"},
                    request_id=ctx.request_id if ctx else None,
                    resource=EventTarget("principal", principal.id),
                    principal=principal_view(principal),
                    new_token_ids=[credentials["access_token_id"], credentials["refresh_token_id"]],
                )
            )
            return {"principal": principal_view(principal), "credentials": credentials}

        return await self._store.submit(unit)

    async def recover_admin(self, name: str) -> dict[str, Any] | None:
        """New credentials for the enabled admin ``name``, for ``signer init --new-admin-credentials`` on
        this machine (whoever can read the data directory already holds the token key and the PIN). Older
        tokens keep working until revoked. None when there is no such enabled admin."""
        name = check_principal_name(name)
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any] | None:
            principal = await writer.principals.by_name(name)
            if principal is None or principal.role != Role.ADMIN.value or principal.disabled_at is not None:
                return None
            credentials = await self._auth.issue_credentials(writer, principal, now)
            writer.append_audit(
                AuditEvent.of(
                    "token.issue",
                    at=now,
                    outcome=Outcome.ALLOWED,
                    actor={"name": "local-recovery"},
                    request_id=None,
                    resource=EventTarget("principal", principal.id),
                    principal_id=principal.id,
                    new_token_ids=[credentials["access_token_id"], credentials["refresh_token_id"]],
                )
            )
            return {"principal": principal_view(principal), "credentials": credentials}

        return await self._store.submit(unit)

    async def has_admin(self) -> bool:
        async with self._store.read() as reader:
            principals = await reader.principals.all()
        return any(p.role == Role.ADMIN.value and p.disabled_at is None for p in principals)

    async def list_principals(self, ctx: RequestContext) -> list[dict[str, Any]]:
        require_role(ctx, Role.ADMIN)
        async with self._store.read() as reader:
            return [principal_view(p) for p in await reader.principals.all()]

    async def set_principal_disabled(
        self, ctx: RequestContext, principal_id: str, disabled: bool
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        if disabled and principal_id == ctx.caller.principal_id:
            raise Conflict("an admin cannot disable itself", code="cannot_disable_self")
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            principal = await writer.principals.get(principal_id)
            if principal is None:
                raise NotFound("no such principal", code="principal_not_found")
            impact = await self._impact(writer, "disable_principal", principal_id) if disabled else {}
            await writer.principals.set_disabled(principal_id, now if disabled else None)
            updated = await writer.principals.get(principal_id) or principal
            writer.append_audit(
                ctx.audit_event(
                    "principal.disable" if disabled else "principal.enable",
                    now,
                    resource=EventTarget("principal", principal_id),
                    principal_id=principal_id,
                    **impact,
                )
            )
            return principal_view(updated)

        return await self._store.submit(unit)

    async def create_grant(
        self,
        ctx: RequestContext,
        *,
        principal_id: str | None,
        group: str | None,
        scope: str | None,
        operations: list[str] | None,
        expires_at: datetime | None,
        max_uses: int | None = None,
        value_budgets: dict[str, str] | None = None,
        no_access: bool = False,
        resource: tuple[str, str] | None = None,
        key_id: str | None = None,
        secret_id: str | None = None,
        approval_id: str | None = None,
    ) -> dict[str, Any]:
        """Grant operations on one resource (``resource``: its kind and id) or everything under a scope
        to a principal or a group; or, with ``no_access``, say "no access" there: it overrides what the
        same principal or group inherits from a broader scope (``policy.grants`` says exactly how).
        ``key_id`` and ``secret_id`` are the older spellings of a key or secret reference.

        A grant on one key is judged by the ``key_lifecycle`` rules in force on it (action ``grant``):
        a deny refuses it, a rule asking for approval answers the pending request and grants nothing;
        ``approval_id`` names the caller's approved request for exactly this grant, which is then made,
        once, and its event names the approval and its approvers."""
        require_role(ctx, Role.ADMIN)
        if (principal_id is None) == (group is None):
            raise InvalidRequest("name exactly one of principal_id or group", code="invalid_grant")
        resource_type, resource_id = grant_place(scope, resource, key_id=key_id, secret_id=secret_id)
        if group is not None:
            group = check_group(group)
        if no_access:
            if operations is not None or max_uses is not None or value_budgets is not None:
                raise InvalidRequest(
                    "a no_access grant takes no operations, max_uses or value_budgets",
                    code="invalid_grant",
                )
            operations = []
        elif operations is None:
            raise InvalidRequest(
                "name the operations to allow, or set no_access",
                code="invalid_operations",
                field="operations",
            )
        # A grant on one resource names its kind's operations, a scope grant any kind's.
        allowed = grant_operations(resource_type)
        unknown = sorted(set(operations) - allowed)
        if unknown or (not operations and not no_access):
            raise InvalidRequest(
                "operations must be a non-empty subset of: " + ", ".join(sorted(allowed)),
                code="invalid_operations",
                field="operations",
            )
        budgets = _budgets(value_budgets or {})
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at is in the past", code="invalid_expiry", field="expires_at")
        on_key = resource_type == "key"
        payload = GRANT_PAYLOADS["grant"]
        body = grant_body(
            principal_id=principal_id,
            group=group,
            operations=operations,
            expires_at=expires_at,
            max_uses=max_uses,
            value_budgets=budgets,
            no_access=no_access,
        )
        approved = None
        if approval_id is not None:
            if not on_key:
                raise NotFound("no such approval request", code="approval_not_found")
            approved = await self._gate.approved(ctx, payload, resource_id, approval_id)

        async def unit(writer: Writer) -> dict[str, Any]:
            if principal_id is not None and await writer.principals.get(principal_id) is None:
                raise NotFound("no such principal", code="principal_not_found")
            if resource_type == SCOPE and _reaches_keys(operations, no_access):
                await self._refuse_scope_bypass(writer, ctx, payload, resource_id, now)
            passage = None
            if resource_type != SCOPE:
                kind = resource_kind(resource_type)
                resource = await kind.load(writer, resource_id)
                if resource is None:
                    raise kind.not_found()
                if on_key:
                    prepared = payload.parse_stored(body)(resource)
                    passage = await self._gate.pass_(writer, ctx, payload, resource, prepared, approved, now)
                    if passage.pending is not None:
                        # Nothing is granted: the grant waits for approvers (opened in this transaction).
                        return passage.answer_pending(
                            writer,
                            ctx,
                            "grant.create",
                            now,
                            EventTarget("key", resource_id),
                            key_id=resource_id,
                            requested=body,
                            **passage.event_fields(),
                        )
            grant = GrantRecord(
                id="grt_" + secrets.token_hex(8),
                principal_id=principal_id,
                resource_type=resource_type,
                resource_id=resource_id,
                operations=sorted(set(operations)),
                expires_at=expires_at,
                created_by=ctx.caller.principal_id,
                created_at=now,
                revoked_at=None,
                group_name=group,
                max_uses=max_uses,
                value_budgets=budgets,
                no_access=no_access,
            )
            # The policy engine must accept what is stored, or the grant would silently never apply.
            to_grant(grant)
            await writer.grants.insert(grant)
            passed = {} if passage is None else passage.event_fields()
            writer.append_audit(
                ctx.audit_event(
                    "grant.create",
                    now,
                    resource=EventTarget("grant", grant.id),
                    grant=grant_view(grant),
                    **passed,
                )
            )
            return grant_view(grant)

        try:
            return await self._store.submit(unit)
        except SignerError as exc:
            await self._gate.reopen_if_lost(approved, exc, ctx.request_id)
            raise

    async def _refuse_scope_bypass(
        self, writer: Writer, ctx: RequestContext, payload: PayloadKind, scope: str, now: datetime
    ) -> None:
        """A scope grant or its revocation where a ``key_lifecycle`` rule governs a key it reaches: a
        deny refuses it as on the key; approval is asked per key (a pending request is bound to one
        key), so the scope-wide change is refused and names the way through."""
        decision = await self._gate.judge_scope(writer, ctx, payload, scope, now)
        if decision.effect is Effect.DENY:
            raise refusal(decision)
        if decision.effect is Effect.REQUIRE_APPROVAL:
            summary = decision_summary(decision)
            raise Conflict(
                "a key_lifecycle rule asks for approval for this on keys under the scope: "
                "grant or revoke on each key instead, which opens an approval request",
                code="approval_required_per_key",
                reasons=summary["reasons"],
                decision=summary,
            )

    async def list_grants(self, ctx: RequestContext, principal_id: str | None) -> list[dict[str, Any]]:
        require_role(ctx, Role.ADMIN)
        async with self._store.read() as reader:
            return [grant_view(g) for g in await reader.grants.all(principal_id=principal_id)]

    async def revoke_grant(
        self, ctx: RequestContext, grant_id: str, *, approval_id: str | None = None
    ) -> dict[str, Any]:
        """Revoke a grant (again: no change, audited). Revoking a live grant on one key is judged by the
        ``key_lifecycle`` rules in force on it (action ``revoke_grant``) as ``create_grant`` is."""
        require_role(ctx, Role.ADMIN)
        now = self._clock()
        payload = GRANT_PAYLOADS["revoke_grant"]
        approved = None
        if approval_id is not None:
            async with self._store.read() as reader:
                named = await reader.grants.get(grant_id)
            if named is None or named.resource_type != "key":
                raise NotFound("no such approval request", code="approval_not_found")
            approved = await self._gate.approved(ctx, payload, named.resource_id, approval_id)

        async def unit(writer: Writer) -> dict[str, Any]:
            grant = await writer.grants.get(grant_id)
            if grant is None:
                raise NotFound("no such grant", code="grant_not_found")
            impact = {}
            passed: dict[str, Any] = {}
            if (
                grant.revoked_at is None
                and grant.resource_type == SCOPE
                and _reaches_keys(grant.operations, grant.no_access)
            ):
                await self._refuse_scope_bypass(writer, ctx, payload, grant.resource_id, now)
            if grant.revoked_at is None:
                key = await writer.keys.get(grant.resource_id) if grant.resource_type == "key" else None
                if key is not None:
                    body = revoke_body(grant_id, grant.principal_id, grant.group_name, list(grant.operations))
                    prepared = payload.parse_stored(body)(key)
                    passage = await self._gate.pass_(writer, ctx, payload, key, prepared, approved, now)
                    if passage.pending is not None:
                        # Nothing is revoked: the revocation waits for approvers.
                        return passage.answer_pending(
                            writer,
                            ctx,
                            "grant.revoke",
                            now,
                            EventTarget("grant", grant_id),
                            grant_id=grant_id,
                            key_id=key.id,
                            **passage.event_fields(),
                        )
                    passed = passage.event_fields()
                impact = await self._impact(writer, "revoke_grant", grant_id)
                await writer.grants.revoke(grant_id, now)
            elif approved is not None:
                # Revoked meanwhile: the approved revocation has nothing left to do.
                raise Conflict("the grant is already revoked", code="grant_revoked")
            writer.append_audit(
                ctx.audit_event(
                    "grant.revoke",
                    now,
                    resource=EventTarget("grant", grant_id),
                    grant_id=grant_id,
                    **impact,
                    **passed,
                )
            )
            return {"id": grant_id, "revoked": True}

        try:
            return await self._store.submit(unit)
        except SignerError as exc:
            await self._gate.reopen_if_lost(approved, exc, ctx.request_id)
            raise
