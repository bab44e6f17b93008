"""Groups, policy documents and their attachments: the admin side of "what may be signed".

Policy versions are immutable: a change is a new version, parsed strictly by ``policy`` before it is
stored, named by the sha256 of its canonical form; the version a client submits must be the next one,
so two admins editing at once cannot overwrite each other silently. Attaching a version at a scope or to
one resource by reference (``{"type": "key" | "secret", "id"}``; a bare ``key_id`` is the older spelling
of a key reference) puts it in force (``live``) or beside the live one (``shadow``: judged on real
traffic, recorded, never deciding). Every change bumps the facts epoch, so it takes effect on the next
request in every process, and is written with its audit event in one transaction.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from policy import PolicyDocument, PolicyDocumentError
from signer.audit import EventTarget
from signer.errors import Conflict, InvalidRequest, NotFound
from signer.identity import Role
from signer.services.authorization import parse_stored
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.services.naming import NameKind, check_name
from signer.services.resources import known_kind
from signer.store import AttachmentRecord, PolicyVersionRecord, Store, Writer


def check_group(name: str) -> str:
    """The canonical form of a group name, or 400 ``invalid_name`` (field ``group``)."""
    return check_name(name, field="group", kind=NameKind.IDENTIFIER)


def version_view(record: PolicyVersionRecord, *, with_document: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "policy_id": record.policy_id,
        "version": record.version,
        "digest": record.digest,
        "created_by": record.created_by,
        "created_at": iso(record.created_at),
    }
    if with_document:
        view["document"] = json.loads(record.document)
    return view


def attachment_view(record: AttachmentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "policy_id": record.policy_id,
        "version": record.version,
        "scope": record.scope,
        "resource": (
            None if record.resource_type is None else {"type": record.resource_type, "id": record.resource_id}
        ),
        "key_id": record.key_id,
        "mode": record.mode,
        "created_by": record.created_by,
        "created_at": iso(record.created_at),
        "detached_at": iso(record.detached_at),
    }


def attachment_place(
    scope: str | None, key_id: str | None, resource: tuple[str, str] | None
) -> tuple[str | None, tuple[str, str] | None]:
    """Where an attachment goes: exactly one of a scope (canonical form) or a resource reference (a
    ``key_id`` is the key reference ``("key", key_id)``); 400 ``invalid_attachment`` otherwise, and for a
    reference to a kind that is not registered (named by position, never repeated)."""
    if key_id is not None:
        if resource is not None:
            raise InvalidRequest(
                "attach to exactly one of scope, resource or key_id", code="invalid_attachment"
            )
        resource = ("key", key_id)
    if (scope is None) == (resource is None):
        raise InvalidRequest("attach to exactly one of scope, resource or key_id", code="invalid_attachment")
    if scope is not None:
        return check_name(scope, field="scope", kind=NameKind.SCOPE), None
    assert resource is not None
    if known_kind(resource[0]) is None:
        raise InvalidRequest(
            "resource.type names no kind of resource", code="invalid_attachment", field="resource.type"
        )
    return None, resource


def document_error(exc: PolicyDocumentError) -> InvalidRequest:
    """A document that does not parse: ``invalid_policy``, or ``invalid_name`` for a name in it (the
    code every name field answers with), naming the path either way."""
    code = "invalid_name" if exc.code == "invalid_name" else "invalid_policy"
    return InvalidRequest(str(exc.message), code=code, field=exc.path or None)


class PolicyService:
    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._clock = clock

    def _audit(
        self, writer: Writer, ctx: RequestContext, kind: str, resource: EventTarget, **fields: Any
    ) -> None:
        writer.append_audit(ctx.audit_event(kind, self._clock(), resource=resource, **fields))

    # -- groups -----------------------------------------------------------------------------------

    async def add_member(self, ctx: RequestContext, group: str, principal_id: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        group = check_group(group)
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            added = await writer.groups.add(group, principal_id, now, ctx.caller.principal_id)
            if added:
                self._audit(
                    writer,
                    ctx,
                    "group.add",
                    EventTarget("group", group),
                    group=group,
                    principal_id=principal_id,
                )
            return {"group": group, "principal_id": principal_id, "added": added}

        return await self._store.submit(unit)

    async def remove_member(self, ctx: RequestContext, group: str, principal_id: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        group = check_group(group)

        async def unit(writer: Writer) -> dict[str, Any]:
            if not await writer.groups.remove(group, principal_id):
                raise NotFound("that principal is not in the group", code="member_not_found")
            self._audit(
                writer,
                ctx,
                "group.remove",
                EventTarget("group", group),
                group=group,
                principal_id=principal_id,
            )
            return {"group": group, "principal_id": principal_id, "removed": True}

        return await self._store.submit(unit)

    async def get_group(self, ctx: RequestContext, group: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        group = check_group(group)
        async with self._store.read() as reader:
            return {"group": group, "members": await reader.groups.members(group)}

    async def list_groups(self, ctx: RequestContext) -> list[dict[str, Any]]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        async with self._store.read() as reader:
            groups = await reader.groups.all()
        return [{"group": g, "members": m} for g, m in sorted(groups.items())]

    # -- policy versions --------------------------------------------------------------------------

    async def create_version(self, ctx: RequestContext, document: PolicyDocument) -> dict[str, Any]:
        """Store the next version of a policy (the document's ``version`` must be exactly that)."""
        require_role(ctx, Role.ADMIN)
        now = self._clock()
        canonical = document.canonical_json().decode("utf-8")
        # Parsing the canonical form again must give the same digest, or a stored version could not be
        # read back as what was approved.
        if parse_stored(canonical).digest != document.digest:
            raise InvalidRequest("the document does not round-trip", code="invalid_policy")

        async def unit(writer: Writer) -> dict[str, Any]:
            versions = await writer.policies.versions(document.policy_id)
            expected = versions[-1].version + 1 if versions else 1
            if document.version != expected:
                raise Conflict(
                    f"the next version of {document.policy_id} is {expected}",
                    code="policy_version_conflict",
                    field="version",
                    expected_version=expected,
                )
            record = PolicyVersionRecord(
                document.policy_id, document.version, canonical, document.digest, ctx.caller.principal_id, now
            )
            await writer.policies.insert_version(record)
            self._audit(
                writer,
                ctx,
                "policy.create",
                EventTarget("policy", record.policy_id),
                policy_id=record.policy_id,
                version=record.version,
                digest=record.digest,
            )
            return version_view(record)

        return await self._store.submit(unit)

    async def list_policies(self, ctx: RequestContext) -> list[dict[str, Any]]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        async with self._store.read() as reader:
            latest = await reader.policies.latest_versions()
        return [version_view(v, with_document=False) for v in latest]

    async def get_policy(self, ctx: RequestContext, policy_id: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        async with self._store.read() as reader:
            versions = await reader.policies.versions(policy_id)
        if not versions:
            raise NotFound("no such policy", code="policy_not_found")
        return {"policy_id": policy_id, "versions": [version_view(v) for v in versions]}

    # -- attachments ------------------------------------------------------------------------------

    async def attach(
        self,
        ctx: RequestContext,
        policy_id: str,
        version: int,
        *,
        scope: str | None,
        key_id: str | None = None,
        resource: tuple[str, str] | None = None,
        mode: str,
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        scope, resource = attachment_place(scope, key_id, resource)
        if mode not in ("live", "shadow"):
            raise InvalidRequest("mode must be live or shadow", code="invalid_field", field="mode")
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            if await writer.policies.get_version(policy_id, version) is None:
                raise NotFound("no such policy version", code="policy_not_found")
            if resource is not None:
                kind = known_kind(resource[0])
                assert kind is not None
                if await kind.load(writer, resource[1]) is None:
                    raise kind.not_found()
            record = AttachmentRecord(
                "att_" + secrets.token_hex(8),
                policy_id,
                version,
                scope,
                None if resource is None else resource[0],
                None if resource is None else resource[1],
                mode,
                ctx.caller.principal_id,
                now,
            )
            detached = await writer.policies.attach(record)
            self._audit(
                writer,
                ctx,
                "policy.attach",
                EventTarget("policy_attachment", record.id),
                attachment=attachment_view(record),
                replaced=detached,
            )
            return attachment_view(record)

        return await self._store.submit(unit)

    async def detach(self, ctx: RequestContext, attachment_id: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            record = await writer.policies.get_attachment(attachment_id)
            if record is None:
                raise NotFound("no such attachment", code="attachment_not_found")
            if await writer.policies.detach(attachment_id, now):
                self._audit(
                    writer,
                    ctx,
                    "policy.detach",
                    EventTarget("policy_attachment", attachment_id),
                    attachment_id=attachment_id,
                )
            return {"id": attachment_id, "detached": True}

        return await self._store.submit(unit)

    async def list_attachments(self, ctx: RequestContext, *, include_detached: bool) -> list[dict[str, Any]]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        async with self._store.read() as reader:
            records = await reader.policies.attachments(include_detached=include_detached)
        return [attachment_view(r) for r in records]

    async def shadow_report(self, ctx: RequestContext, attachment_id: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        async with self._store.read() as reader:
            record = await reader.policies.get_attachment(attachment_id)
            if record is None or record.mode != "shadow":
                raise NotFound("no such shadow attachment", code="attachment_not_found")
            report = await reader.policies.shadow_report(attachment_id)
        return {"attachment": attachment_view(record), **report}
