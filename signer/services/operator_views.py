"""What the console's operator and auditor pages read, each page one call: a key with its grants and
attached policies, a policy with its versions and attachments, the audit log's newest events with the
latest signed checkpoint. It composes the services that own the data and adds nothing they would not
show through the API: each of them checks the caller's role (admin, auditor) itself, and none of them
returns a secret value, a PIN or private key material.
"""

from __future__ import annotations

import json
from typing import Any

from signer.errors import NotFound
from signer.services.admin import AdminService
from signer.services.audit_log import AuditLogService
from signer.services.checkpoints import CheckpointService
from signer.services.context import RequestContext
from signer.services.keys import KeyService
from signer.services.policies import PolicyService

AUDIT_PAGE = 100


class OperatorViews:
    def __init__(
        self,
        keys: KeyService,
        admin: AdminService,
        policies: PolicyService,
        audit: AuditLogService,
        checkpoints: CheckpointService | None,
    ) -> None:
        self._keys = keys
        self._admin = admin
        self._policies = policies
        self._audit = audit
        self._checkpoints = checkpoints

    async def key(self, ctx: RequestContext, key_id: str) -> dict[str, Any]:
        """The key (state, token attributes), the grants naming it, the policies attached to it or to
        every key."""
        key = await self._keys.get(ctx, key_id)
        grants = [
            g
            for g in await self._admin.list_grants(ctx, None)
            if g["resource_type"] == "key" and g["resource_id"] == key_id
        ]
        attached = [
            a
            for a in await self._policies.list_attachments(ctx, include_detached=False)
            if a["key_id"] in (key_id, None)
        ]
        return {"key": key, "grants": grants, "attachments": attached}

    async def policies(self, ctx: RequestContext) -> dict[str, Any]:
        return {
            "policies": await self._policies.list_policies(ctx),
            "attachments": await self._policies.list_attachments(ctx, include_detached=False),
        }

    async def audit(self, ctx: RequestContext, *, before: int | None, search: str) -> dict[str, Any]:
        """Up to ``AUDIT_PAGE`` events ending at ``before`` (the newest when None), newest first, those
        whose kind, actor or target contain ``search``; the log's head and the latest checkpoint (the
        signed tree head an offline verifier checks the log against), or why there is none."""
        _, head = await self._audit.export(ctx, after=0, limit=1)
        end = head if before is None else max(0, min(before, head))
        start = max(0, end - AUDIT_PAGE)
        lines, _ = (
            await self._audit.export(ctx, after=start, limit=end - start) if end > start else ([], head)
        )
        events = [_parsed(line) for line in lines]
        needle = search.strip().lower()
        if needle:
            events = [e for e in events if needle in _searchable(e)]
        checkpoint: dict[str, Any] | None = None
        status = "checkpoints are off on this service"
        if self._checkpoints is not None:
            try:
                checkpoint = await self._checkpoints.get_checkpoint(ctx)
                status = f"the latest signed checkpoint covers events 1 to {checkpoint['size']}"
            except NotFound:
                status = "no checkpoint has been signed yet"
        return {
            "events": list(reversed(events)),
            "head": head,
            "start": start,
            "end": end,
            "checkpoint": checkpoint,
            "verification": status,
        }


def _parsed(line: str) -> dict[str, Any]:
    """An exported line; its ``event`` (the canonical JSON text the hash covers) as an object too."""
    record: dict[str, Any] = json.loads(line)
    if isinstance(record.get("event"), str):
        record["event"] = json.loads(record["event"])
    return record


def _searchable(event: dict[str, Any]) -> str:
    return f"{event.get('kind', '')} {json.dumps(event.get('event'))}".lower()
