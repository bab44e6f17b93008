"""Secrets: the entry for creating, listing, showing, changing, disabling, deleting and fetching secrets.

Thin, like ``signing``: the fetch is an ``Order`` for the ``read_value`` payload kind run through the one
decision pipeline (grants, policy rules, audit); the other operations check the caller's grant on the
secret (or on its folder) with the same judge and write their record with a typed audit event in one
transaction. Existence and permission are separate: creating a secret grants nobody anything, and a
caller holding no grant about a secret gets ``secret_not_found``, exactly as for one that does not exist.

It must never return, log or audit a value except as the fetch's response, and never write a version
whose data key the token did not wrap (sealing happens before the row is written: a crash in between
leaves nothing behind).
"""

from __future__ import annotations

import logging
import re
import secrets as random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from policy import Effect
from signer.audit import AuditEvent, EventTarget, Outcome
from signer.errors import Conflict, Forbidden, InvalidRequest, NotFound
from signer.identity import Role
from signer.services.authorization import (
    holds_any_grant,
    load_policies,
    load_subject,
    optimistic_facts,
    policy_request,
    refusal,
)
from signer.services.context import Clock, RequestContext, iso, utcnow
from signer.services.fetch_notes import FetchNotes
from signer.services.impact_hook import ImpactHook, recorded_impact
from signer.services.naming import NameKind, check_name
from signer.services.pipeline import DecisionPipeline, Order, judge
from signer.services.policies import check_group
from signer.services.resources import ResourceRef
from signer.services.secret_access import access_view, ancestors, listing_targets
from signer.services.secret_backends import EXTERNAL, SecretBackends
from signer.services.secret_etag import IfMatch
from signer.services.secret_kind import (
    FETCH,
    Opener,
    Sealer,
    check_field_name,
    check_values,
    generate_value,
    not_found,
    sealed_backend,
    secret_ref,
)
from signer.store import Reader, SecretRecord, SecretVersionRecord, Store, Writer

log = logging.getLogger("signer.secrets")

CATEGORIES = ("api_key", "oauth_token", "database", "registry", "publication", "infrastructure", "other")
_SCAN_PAGE = 200
_METADATA = (
    "description",
    "tags",
    "category",
    "owner",
    "consumers",
    "pins",
    "overlap_seconds",
    "rotation_interval_seconds",
)
MAX_PINS = 64
MAX_PERIOD_SECONDS = 10 * 365 * 86400
SECRET_STATES = ("active", "disabled")
MAX_REASON = 256


def _owner(owner: object) -> tuple[str, str]:
    """``principal:<id>`` or ``group:<name>`` as (type, id)."""
    if isinstance(owner, str):
        kind, _, name = owner.partition(":")
        if kind == "group" and name:
            return "group", check_group(name)
        if kind == "principal" and name:
            return "principal", name
    raise InvalidRequest("owner is principal:<id> or group:<name>", code="invalid_owner", field="owner")


def _names(values: object, field: str, kind: NameKind) -> list[str]:
    if not isinstance(values, list):
        raise InvalidRequest(f"{field} is a list of names", code="invalid_name", field=field)
    return sorted({check_name(v, field=field, kind=kind) for v in values})


def version_state(secret: SecretRecord, version: SecretVersionRecord) -> str:
    """As shown: ``current``, ``previous`` (readable until its overlap ends), ``enabled``, ``staged``,
    ``disabled`` or ``destroyed``."""
    if version.state == "enabled":
        if version.version == secret.current_version:
            return "current"
        if version.disable_at is not None:
            return "previous"
    return version.state


def version_view(secret: SecretRecord, version: SecretVersionRecord) -> dict[str, Any]:
    """A version's metadata: who made it and when, its state, who changed that, when and why."""
    return {
        "version": version.version,
        "fields": sorted(version.sealed_fields),
        "created_at": iso(version.created_at),
        "created_by": version.created_by,
        "state": version_state(secret, version),
        "reason": version.reason,
        "state_changed_at": iso(version.state_changed_at),
        "state_changed_by": version.state_changed_by,
        "readable_until": iso(version.disable_at),
    }


def secret_view(secret: SecretRecord, versions: list[SecretVersionRecord] | None = None) -> dict[str, Any]:
    """What anyone allowed to see a secret sees of it: metadata, never a value."""
    view: dict[str, Any] = {
        "id": secret.id,
        "name": secret.name,
        "folder": secret.folder,
        "description": secret.description,
        "tags": list(secret.tags),
        "category": secret.category,
        "owner": f"{secret.owner_type}:{secret.owner}",
        "consumers": list(secret.consumers),
        "origin": secret.origin,
        "generation": secret.generation,
        "current_version": secret.current_version,
        "created_at": iso(secret.created_at),
        "created_by": secret.created_by,
        "updated_at": iso(secret.updated_at),
        "updated_by": secret.updated_by,
        "last_fetched_at": iso(secret.last_fetched_at),
        "last_fetched_by": secret.last_fetched_by,
        # Where the value lives; a reference is metadata (an ARN or KV v2 path), never a value.
        "backend": secret.backend,
        "reference": secret.reference,
        # Check-and-set and rotation (``secret_etag``, ``secret_versions``).
        "revision": secret.revision,
        "pins": dict(secret.pins),
        "overlap_seconds": secret.overlap_seconds,
        "rotation_interval_seconds": secret.rotation_interval_seconds,
        "rotation_due_at": iso(secret.rotation_due_at),
        # The whole secret: ``active``, or ``disabled`` (no version is read); who changed it, when, why.
        "state": secret.state,
        "state_changed_at": iso(secret.state_changed_at),
        "state_changed_by": secret.state_changed_by,
        "state_reason": secret.state_reason,
    }
    if versions is not None:
        view["versions"] = [version_view(secret, v) for v in versions]
    return view


class SecretsService:
    def __init__(
        self,
        store: Store,
        pipeline: DecisionPipeline,
        sealer: Sealer,
        *,
        max_value_bytes: int,
        clock: Clock = utcnow,
        backends: SecretBackends | None = None,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._sealer = sealer
        self._backends = backends or SecretBackends(
            sealed_backend(store, sealer, lambda: pipeline.facts_cache.epoch)
        )
        self._opener = Opener(self._backends, clock, FetchNotes())
        self._max_value_bytes = max_value_bytes
        self._clock = clock
        # Records the impact review in the audit event of a deletion or a new value (signer.app).
        self.impact: ImpactHook | None = None

    # -- authorisation of the operations that do not go through the pipeline --------------------

    async def _allowed(
        self, reader: Reader | Writer, ctx: RequestContext, operation: str, ref: ResourceRef, *, exists: bool
    ) -> bool:
        """Whether the caller may do ``operation`` on ``ref``; raises the refusal when ``exists`` and
        the caller holds some grant about it (else the not-found answer). Rules are judged with the
        usage this process knows; nothing is reserved for these operations."""
        now = self._clock()
        policies = await load_policies(reader)
        subject = await load_subject(reader, ctx.caller.principal_id, now, policies)
        request = policy_request(subject, ref, operation, {})
        decision = judge(
            request, subject.policy_set, optimistic_facts(self._store.ledger_cache.at_least), now
        )
        if decision.effect is Effect.ALLOW:
            return True
        if not exists:
            return False
        raise refusal(decision, subject, ref)

    async def _load_allowed(
        self, reader: Reader | Writer, ctx: RequestContext, secret_id: str, operation: str
    ) -> SecretRecord:
        secret = await reader.secrets.get(secret_id)
        if secret is None:
            raise not_found()
        await self._allowed(reader, ctx, operation, secret_ref(secret), exists=True)
        return secret

    async def load_allowed(
        self, reader: Reader | Writer, ctx: RequestContext, secret_id: str, operation: str
    ) -> SecretRecord:
        """The secret, if the caller may do ``operation`` on it (else its refusal or not-found)."""
        return await self._load_allowed(reader, ctx, secret_id, operation)

    async def allowed_on_folder(
        self, reader: Reader | Writer, ctx: RequestContext, operation: str, ref: ResourceRef
    ) -> bool:
        """Whether the caller may do ``operation`` on secrets in the folder ``ref`` names."""
        return await self._allowed(reader, ctx, operation, ref, exists=False)

    def forget(self, secret_id: str) -> None:
        """This process drops the secret's cached version rows and unwrapped data keys."""
        self._backends.sealed.forget(secret_id)

    def generated(self, rule: Mapping[str, Any]) -> tuple[dict[str, bytes], dict[str, Any] | None]:
        """A new value from a generated secret's stored rule, and the rule."""
        return self._values(None, rule)

    # -- operations --------------------------------------------------------------------------------

    async def create(
        self,
        ctx: RequestContext,
        *,
        folder: str,
        name: str,
        owner: str,
        description: str = "",
        tags: list[str] | None = None,
        category: str = "other",
        consumers: list[str] | None = None,
        fields: Mapping[str, Any] | None = None,
        generate: Mapping[str, Any] | None = None,
        backend: str = "sealed",
        reference: str | None = None,
    ) -> dict[str, Any]:
        """A new secret with its first version (or, held by reference in an external ``backend``, the
        record and its ``reference``: the backend is not asked now); nobody is granted anything by it."""
        folder = _no_dotdot(check_name(folder, field="folder", kind=NameKind.SCOPE), "folder")
        name = _no_dotdot(check_name(name, field="name", kind=NameKind.IDENTIFIER), "name")
        owner_type, owner_id = _owner(owner)
        if category not in CATEGORIES:
            raise InvalidRequest("unknown category", code="invalid_category", field="category")
        tag_list = _names(tags or [], "tags", NameKind.TAG)
        consumer_list = _names(consumers or [], "consumers", NameKind.TAG)
        if backend != "sealed":
            return await self._create_reference(
                ctx,
                backend,
                reference,
                fields is not None or generate is not None,
                folder=folder,
                name=name,
                description=_description(description),
                tags=tag_list,
                category=category,
                owner_type=owner_type,
                owner=owner_id,
                consumers=consumer_list,
            )
        if reference is not None:
            raise InvalidRequest(
                "a reference names a secret held by an external backend: give backend",
                code="invalid_reference",
                field="reference",
            )
        values, rule = self._values(fields, generate)
        async with self._store.read() as reader:
            ref = ResourceRef("secret", "(new)", folder, "active")
            if not await self._allowed(reader, ctx, "create", ref, exists=False):
                raise Forbidden(
                    "creating secrets in this folder is not granted", code="operation_not_granted"
                )
            interval, overlap = inherited_defaults(
                folder, await reader.secrets.folder_defaults(ancestors(folder))
            )
        secret_id = "sec_" + random.token_hex(8)
        kek_id, wrapped, sealed = await self._sealer.seal(secret_id, 1, folder, values)
        now = self._clock()
        record = SecretRecord(
            id=secret_id,
            name=name,
            folder=folder,
            description=_description(description),
            tags=tag_list,
            category=category,
            owner_type=owner_type,
            owner=owner_id,
            consumers=consumer_list,
            origin="generated" if rule is not None else "provided",
            generation=rule,
            current_version=1,
            created_at=now,
            created_by=ctx.caller.principal_id,
            updated_at=now,
            updated_by=ctx.caller.principal_id,
            # The folder's defaults (the narrowest folder at or above it that sets each).
            rotation_interval_seconds=interval,
            overlap_seconds=overlap,
            rotation_due_at=_after(now, interval),
        )
        version = SecretVersionRecord(secret_id, 1, kek_id, wrapped, sealed, now, ctx.caller.principal_id)

        async def unit(writer: Writer) -> dict[str, Any]:
            if owner_type == "principal":
                await _check_principal_owner(writer, ctx, owner_id)
            await writer.secrets.insert(record, version)
            view = secret_view(record, [version])
            writer.append_audit(
                ctx.audit_event("secret.create", now, resource=EventTarget("secret", secret_id), secret=view)
            )
            return view

        return await self._store.submit(unit)

    async def _create_reference(
        self,
        ctx: RequestContext,
        backend: str,
        reference: str | None,
        has_value: bool,
        *,
        folder: str,
        name: str,
        **metadata: Any,
    ) -> dict[str, Any]:
        """A record whose value ``backend`` holds under ``reference`` (no version: current_version 0)."""
        if backend not in EXTERNAL:
            raise InvalidRequest("unknown secret backend", code="invalid_backend", field="backend")
        if has_value:
            raise InvalidRequest(
                "a secret held by reference has no value here: give reference, not fields or generate",
                code="invalid_secret_fields",
            )
        if not isinstance(reference, str) or not reference:
            raise InvalidRequest("a secret held by reference needs its reference", code="invalid_reference")
        reference = self._backends.for_new(backend).check_reference(reference)
        async with self._store.read() as reader:
            ref = ResourceRef("secret", "(new)", folder, "active")
            if not await self._allowed(reader, ctx, "create", ref, exists=False):
                raise Forbidden(
                    "creating secrets in this folder is not granted", code="operation_not_granted"
                )
        secret_id = "sec_" + random.token_hex(8)
        now = self._clock()
        record = SecretRecord(
            id=secret_id,
            name=name,
            folder=folder,
            origin="provided",
            generation=None,
            current_version=0,
            created_at=now,
            created_by=ctx.caller.principal_id,
            updated_at=now,
            updated_by=ctx.caller.principal_id,
            backend=backend,
            reference=reference,
            **metadata,
        )

        async def unit(writer: Writer) -> dict[str, Any]:
            if record.owner_type == "principal" and await writer.principals.get(record.owner) is None:
                raise NotFound("no such principal", code="principal_not_found")
            await writer.secrets.insert(record, None)
            view = secret_view(record, [])
            writer.append_audit(
                ctx.audit_event("secret.create", now, resource=EventTarget("secret", secret_id), secret=view)
            )
            return view

        return await self._store.submit(unit)

    def _values(
        self, fields: Mapping[str, Any] | None, generate: Mapping[str, Any] | None
    ) -> tuple[dict[str, bytes], dict[str, Any] | None]:
        if (fields is None) == (generate is None):
            raise InvalidRequest("give exactly one of fields or generate", code="invalid_secret_fields")
        if fields is not None:
            return check_values(fields, self._max_value_bytes), None
        assert generate is not None
        rule = dict(generate)
        field = check_field_name(rule.pop("field", "value"))
        value, stored = generate_value(rule)
        if len(value) > self._max_value_bytes:
            raise InvalidRequest("the generated value would be too large", code="secret_value_too_large")
        return {field: value}, {**stored, "field": field}

    async def list(
        self, ctx: RequestContext, folder: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> dict[str, Any]:
        """The secrets under ``folder`` (all when None) the caller may ``list``; metadata only. Reads
        only what the caller's ``list`` grants name (``secret_access.listing_targets``)."""
        under = None if folder is None else check_name(folder, field="folder", kind=NameKind.SCOPE)
        items: list[dict[str, Any]] = []
        cursor = after
        async with self._store.read() as reader:
            now = self._clock()
            policies = await load_policies(reader)
            subject = await load_subject(reader, ctx.caller.principal_id, now, policies)
            folders, ids = listing_targets(subject.grants, under)
            if not folders and not ids:
                return {"items": [], "next": None}
            known = optimistic_facts(self._store.ledger_cache.at_least)
            while True:
                page = await reader.secrets.in_folders(folders, ids, limit=_SCAN_PAGE, after=cursor)
                for secret in page:
                    cursor = secret.id
                    ref = secret_ref(secret)
                    if under is not None and not (
                        secret.folder == under or secret.folder.startswith(under + "/")
                    ):
                        continue
                    if not holds_any_grant(subject.grants, ref):
                        continue
                    decision = judge(policy_request(subject, ref, "list", {}), subject.policy_set, known, now)
                    if decision.effect is Effect.ALLOW:
                        items.append(secret_view(secret))
                        if len(items) == limit:
                            return {"items": items, "next": cursor}
                if len(page) < _SCAN_PAGE:
                    return {"items": items, "next": None}

    async def show(self, ctx: RequestContext, secret_id: str) -> dict[str, Any]:
        """Metadata, versions, and who can use it through which grants (``secret_access.access_view``)."""
        async with self._store.read() as reader:
            secret = await self._load_allowed(reader, ctx, secret_id, "read_metadata")
            view = secret_view(secret, await reader.secrets.versions(secret.id))
            now = self._clock()
            about = await reader.grants.about("secret", secret.id, ancestors(secret.folder), now)
            view["access"] = access_view(secret_ref(secret), about, now)
            return view

    async def update(
        self,
        ctx: RequestContext,
        secret_id: str,
        changes: Mapping[str, Any],
        if_match: IfMatch | None = None,
    ) -> dict[str, Any]:
        """Change description, tags, category, owner, consumers, pins (workload -> version), overlap
        or rotation interval (never the name, folder or value); ``if_match``: check-and-set."""
        unknown = set(changes) - set(_METADATA)
        if unknown or not changes:
            raise InvalidRequest(
                "change one or more of: " + ", ".join(_METADATA), code="invalid_secret_update"
            )
        columns: dict[str, Any] = {}
        if "description" in changes:
            columns["description"] = _description(changes["description"])
        if "tags" in changes:
            columns["tags"] = _names(changes["tags"], "tags", NameKind.TAG)
        if "consumers" in changes:
            columns["consumers"] = _names(changes["consumers"], "consumers", NameKind.TAG)
        if "category" in changes:
            if changes["category"] not in CATEGORIES:
                raise InvalidRequest("unknown category", code="invalid_category", field="category")
            columns["category"] = changes["category"]
        if "owner" in changes:
            columns["owner_type"], columns["owner"] = _owner(changes["owner"])
        if "pins" in changes:
            columns["pins"] = _pins(changes["pins"])
        for name in ("overlap_seconds", "rotation_interval_seconds"):
            if name in changes:
                columns[name] = period(changes[name], name)
        now = self._clock()
        if "rotation_interval_seconds" in columns:
            interval = columns["rotation_interval_seconds"]
            columns["rotation_due_at"] = None if interval is None else now + timedelta(seconds=interval)

        async def unit(writer: Writer) -> dict[str, Any]:
            secret = await self._load_allowed(writer, ctx, secret_id, "update")
            revision = None if if_match is None else if_match.check(secret)
            if columns.get("owner_type") == "principal":
                await _check_principal_owner(writer, ctx, columns["owner"])
            if columns.get("pins") and secret.backend != "sealed":
                raise Conflict(
                    "a secret held by reference has no versions here to pin",
                    code="secret_held_by_reference",
                )
            for number in set(columns.get("pins", {}).values()):
                if await writer.secrets.version_state(secret.id, number) != "enabled":
                    raise Conflict(
                        "a consumer can be pinned only to an enabled version",
                        code="secret_version_not_pinnable",
                        field="pins",
                    )
            await writer.secrets.update_metadata(
                secret.id, columns, now, ctx.caller.principal_id, if_revision=revision
            )
            updated = await writer.secrets.get(secret.id)
            assert updated is not None
            view = secret_view(updated, await writer.secrets.versions(secret.id))
            writer.append_audit(
                ctx.audit_event(
                    "secret.update", now, resource=EventTarget("secret", secret.id), changed=sorted(changes)
                )
            )
            return view

        return await self._store.submit(unit)

    async def set_value(
        self,
        ctx: RequestContext,
        secret_id: str,
        fields: Mapping[str, Any] | None = None,
        generate: Mapping[str, Any] | None = None,
        *,
        from_rule: bool = False,
        stage: bool = False,
        if_match: IfMatch | None = None,
    ) -> dict[str, Any]:
        """A new version (rotation): what the next fetch returns, or with ``stage`` a pending version
        read only by number until it is promoted. ``from_rule``: a generated secret's new value from
        its stored rule. The previous current version stays readable for the secret's overlap, then
        the service disables it (``secret_versions``)."""
        async with self._store.read() as reader:
            secret = await self._load_allowed(reader, ctx, secret_id, "update")
        if secret.backend != "sealed":
            raise Conflict(
                "this secret's value is held by its backend: set it there", code="secret_held_by_reference"
            )
        if from_rule:
            if fields is not None or generate is not None:
                raise InvalidRequest(
                    "give one of fields, generate or from_rule", code="invalid_secret_fields"
                )
            if secret.generation is None:
                raise Conflict(
                    "this secret's value was provided: give the new value",
                    code="secret_not_generated",
                )
            generate = secret.generation
        values, rule = self._values(fields, generate)
        async with self._store.read() as reader:
            latest = await reader.secrets.latest_version(secret.id)
        return await self.add_version(
            ctx, secret, values, rule, stage=stage, if_match=if_match, number=latest + 1
        )

    async def add_version(
        self,
        ctx: RequestContext | None,
        secret: SecretRecord,
        values: Mapping[str, bytes],
        rule: Mapping[str, Any] | None,
        *,
        number: int,
        stage: bool = False,
        if_match: IfMatch | None = None,
    ) -> dict[str, Any]:
        """Seal ``values`` as version ``number`` and store it (current, or staged), audited as
        ``secret.rotate``. ``ctx`` None: the service itself (a scheduled rotation), which writes only
        if the record is still as ``secret`` shows it (check-and-set: one worker wins)."""
        kek_id, wrapped, sealed = await self._sealer.seal(secret.id, number, secret.folder, values)
        now = self._clock()
        by = None if ctx is None else ctx.caller.principal_id
        version = SecretVersionRecord(
            secret.id, number, kek_id, wrapped, sealed, now, by, state="staged" if stage else "enabled"
        )

        async def unit(writer: Writer) -> dict[str, Any]:
            if ctx is None:
                seen: SecretRecord | None = secret
                revision: int | None = secret.revision
            else:
                seen = await self._load_allowed(writer, ctx, secret.id, "update")
                revision = None if if_match is None else if_match.check(seen)
            assert seen is not None
            impact = await recorded_impact(self.impact, writer, "rotate_secret", secret.id)
            # Refused with secret_version_exists if another writer added this version first.
            await writer.secrets.add_version(
                version,
                current_was=seen.current_version,
                if_revision=revision,
                previous_until=_after(now, seen.overlap_seconds),
                rotation_due_at=_after(now, seen.rotation_interval_seconds),
            )
            # A rotation: this process forgets the secret's unwrapped data keys at once.
            self._backends.sealed.forget(secret.id)
            updated = await writer.secrets.get(secret.id)
            assert updated is not None
            view = secret_view(updated, await writer.secrets.versions(secret.id))
            target = EventTarget("secret", secret.id)
            event: dict[str, Any] = dict(
                version=number,
                fields=sorted(values),
                generated=rule is not None,
                staged=stage,
                **impact,
            )
            if ctx is None:
                writer.append_audit(
                    service_event("secret.rotate", now, resource=target, **event, scheduled=True)
                )
            else:
                writer.append_audit(ctx.audit_event("secret.rotate", now, resource=target, **event))
            return view

        return await self._store.submit(unit)

    async def delete(self, ctx: RequestContext, secret_id: str) -> dict[str, Any]:
        """Remove the secret and every sealed version (a secret held by reference: only the record;
        the backend's secret is left as it is)."""
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            secret = await self._load_allowed(writer, ctx, secret_id, "delete")
            impact = await recorded_impact(self.impact, writer, "delete_secret", secret.id)
            await writer.secrets.delete(secret.id)
            self._backends.sealed.forget(secret.id)
            writer.append_audit(
                ctx.audit_event(
                    "secret.delete",
                    now,
                    resource=EventTarget("secret", secret.id),
                    name=secret.name,
                    folder=secret.folder,
                    **impact,
                )
            )
            return {"id": secret.id, "deleted": True}

        return await self._store.submit(unit)

    async def set_state(
        self,
        ctx: RequestContext,
        secret_id: str,
        state: str,
        *,
        reason: object = None,
        if_match: IfMatch | None = None,
    ) -> dict[str, Any]:
        """Disable (``disabled``) or enable (``active``) the whole secret; needs ``update`` on it, like a
        version's state. While disabled every read of every version, through any backend, answers ``409
        secret_disabled`` to a caller a grant reaches (anyone else: ``secret_not_found``); metadata
        stays visible and new values may still be written (so a leaked value can be replaced before
        the secret is enabled again). The change moves the facts epoch, and this process forgets the
        secret's cached rows and data keys and its facts cache at once; another process's fetch judged
        on a record it cached before the change finds the epoch moved at its commit and is refused
        there, so no value leaves. Audited as ``secret.disable`` / ``secret.enable`` with the impact
        review of the change (``disable_secret`` / ``enable_secret``); setting the state it has is a
        no-op, audited with ``changed: false`` and no review."""
        if state not in SECRET_STATES:
            raise ValueError(f"unknown secret state {state!r}")
        why = state_reason(reason)
        now = self._clock()
        action, kind = (
            ("disable_secret", "secret.disable")
            if state == "disabled"
            else ("enable_secret", "secret.enable")
        )

        async def unit(writer: Writer) -> tuple[dict[str, Any], int]:
            secret = await self._load_allowed(writer, ctx, secret_id, "update")
            revision = None if if_match is None else if_match.check(secret)
            impact = (
                {} if secret.state == state else await recorded_impact(self.impact, writer, action, secret.id)
            )
            changed = await writer.secrets.set_state(
                secret.id, state, now=now, by=ctx.caller.principal_id, reason=why, if_revision=revision
            )
            # Nothing this process holds of it may serve a read: its version rows and data keys go.
            self._backends.sealed.forget(secret.id)
            updated = await writer.secrets.get(secret.id)
            assert updated is not None
            writer.append_audit(
                ctx.audit_event(
                    kind,
                    now,
                    resource=EventTarget("secret", secret.id),
                    name=secret.name,
                    folder=secret.folder,
                    was=secret.state,
                    state=state,
                    changed=changed,
                    reason=why,
                    **impact,
                )
            )
            return secret_view(updated, await writer.secrets.versions(secret.id)), writer.epoch

        view, epoch = await self._store.submit(unit)
        # This worker's facts cache forgets what it held before the change (other workers find the
        # epoch moved when a fetch commits, and refuse it then).
        self._pipeline.facts_cache.observe(epoch)
        return view

    async def fetch(
        self,
        ctx: RequestContext,
        secret_id: str,
        *,
        version: int | None = None,
        field: str | None = None,
        workload: str | None = None,
        source: str | None = None,
        backend_version: str | None = None,
        approval_id: str | None = None,
    ) -> dict[str, Any]:
        """The values of the current (or a named) version, one field or all: through the pipeline, so
        grants and rules judge it and its audit event (who, workload, source, version, field names,
        never a value) commits before the values leave. A read policy sends to approvers answers the
        pending request instead; with ``approval_id`` its requester releases the approved read once."""
        if workload is not None:
            workload = check_name(workload, field="workload", kind=NameKind.TAG)
        if approval_id is not None:
            return await self._release(ctx, secret_id, approval_id, version, field, workload, source)
        fields = {
            "opener": self._opener,
            "version": version,
            "backend_version": backend_version,
            "field": field,
            "workload": workload,
            "source": source,
            "by": ctx.caller.principal_id,
        }
        # No Idempotency-Key: the pipeline would store the response, and the response is the value.
        # "Last fetched" is written with the audit event (``Prepared.settles``), in one transaction.
        try:
            return await self._pipeline.run(Order(ctx, FETCH, secret_id, FETCH.parse(fields)))
        except Conflict as exc:
            if exc.code != "secret_changed":
                raise
            # Rotated between the check and the commit (this process knew an older current
            # version): once more, now that the commit has moved the facts on.
            return await self._pipeline.run(Order(ctx, FETCH, secret_id, FETCH.parse(fields)))

    async def _release(
        self,
        ctx: RequestContext,
        secret_id: str,
        approval_id: str,
        version: int | None,
        field: str | None,
        workload: str | None,
        source: str | None,
    ) -> dict[str, Any]:
        """An approved read, released once to its requester: the version and fields approved."""
        if version is not None or field is not None:
            raise InvalidRequest(
                "an approved read releases what was approved: give neither version nor field",
                code="approval_fixes_the_read",
                field="approval_id",
            )
        by = ctx.caller.principal_id

        def stored(body: Mapping[str, Any]) -> Any:
            return FETCH.parse_stored(
                {**body, "opener": self._opener, "workload": workload, "source": source, "by": by}
            )

        return await self._pipeline.release(ctx, FETCH, secret_id, approval_id, stored)

    async def close(self) -> None:
        """Close the external backends' connections."""
        await self._backends.close()


async def _check_principal_owner(writer: Writer, ctx: RequestContext, owner_id: str) -> None:
    """A principal may name itself as owner; only an admin (who can list principals anyway) may name
    another one. Anyone else is refused alike whether that principal exists or not, so ``create`` and
    ``update`` are no oracle for principal ids."""
    if owner_id != ctx.caller.principal_id and ctx.caller.role is not Role.ADMIN:
        raise Forbidden(
            "only an admin may make another principal the owner; name a group or yourself",
            code="owner_not_allowed",
            field="owner",
        )
    if await writer.principals.get(owner_id) is None:
        raise NotFound("no such principal", code="principal_not_found")


def inherited_defaults(
    folder: str, defaults: Mapping[str, tuple[int | None, int | None]]
) -> tuple[int | None, int | None]:
    """(rotation interval, overlap) for a secret created in ``folder``: each from the narrowest folder
    at or above it that sets it."""
    interval: int | None = None
    overlap: int | None = None
    for at in reversed(ancestors(folder)):
        got = defaults.get(at)
        if got is None:
            continue
        interval = got[0] if interval is None else interval
        overlap = got[1] if overlap is None else overlap
    return interval, overlap


def service_event(kind: str, at: datetime, *, resource: EventTarget, **fields: Any) -> AuditEvent:
    """An event the service writes itself (a scheduled rotation, an overlap's end): no actor."""
    return AuditEvent.of(
        kind, at=at, outcome=Outcome.ALLOWED, actor=None, request_id=None, resource=resource, **fields
    )


def _after(now: datetime, seconds: int | None) -> datetime | None:
    return None if not seconds else now + timedelta(seconds=seconds)


def period(value: object, field: str) -> int | None:
    """Seconds, 1 to ten years; 0 or null clears it."""
    if value is None or value == 0:
        return None
    if type(value) is not int or not 1 <= value <= MAX_PERIOD_SECONDS:
        raise InvalidRequest(
            f"{field} is 1 to {MAX_PERIOD_SECONDS} seconds, or 0 to clear", code="invalid_period", field=field
        )
    return value


def _pins(value: object) -> dict[str, int]:
    """Consumer (a workload label) -> version number; an empty object unpins everyone."""
    if not isinstance(value, Mapping) or len(value) > MAX_PINS:
        raise InvalidRequest(
            f"pins is an object of at most {MAX_PINS} workload -> version", code="invalid_pins", field="pins"
        )
    pins: dict[str, int] = {}
    for workload, number in value.items():
        name = check_name(workload, field="pins", kind=NameKind.TAG)
        if type(number) is not int or not 1 <= number <= 999_999_999:
            raise InvalidRequest("a pinned version is a positive integer", code="invalid_pins", field="pins")
        pins[name] = number
    return pins


def state_reason(value: object) -> str | None:
    """Why a secret is disabled or enabled: printable text up to ``MAX_REASON`` characters, or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_REASON or not value.isprintable():
        raise InvalidRequest(
            f"reason is printable text up to {MAX_REASON} characters", code="invalid_reason", field="reason"
        )
    return value


def _no_dotdot(value: str, field: str) -> str:
    # Legal in the name rule, but a path-like look-alike in a secret's name or folder: refused.
    if ".." in value:
        raise InvalidRequest(f"{field} may not contain '..'", code="invalid_name", field=field)
    return value


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _description(value: object) -> str:
    """Up to 1024 characters without control characters (newline and tab allowed)."""
    if not isinstance(value, str) or len(value) > 1024 or _CONTROL.search(value):
        raise InvalidRequest(
            "description is text up to 1024 characters without control characters",
            code="invalid_description",
            field="description",
        )
    return value
