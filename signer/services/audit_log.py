"""Reading the audit log: export for auditors (the export is itself audited) and offline verification."""

from __future__ import annotations

from signer.audit import export_jsonl
from signer.identity import Role
from signer.services.context import RequestContext, iso, require_role, utcnow
from signer.store import Store, Writer

MAX_EXPORT = 10_000


class AuditLogService:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def export(self, ctx: RequestContext, *, after: int, limit: int) -> tuple[list[str], int]:
        """One page of the log after ``after``, and the head seq when it was read.

        Every export appends its own event, so a client paging "until empty" would never finish: page
        until ``after`` reaches the head returned with the first page instead.
        """
        require_role(ctx, Role.AUDITOR, Role.ADMIN)
        limit = max(1, min(limit, MAX_EXPORT))
        async with self._store.read() as reader:
            head_seq, _ = await reader.audit_head()
            records = await reader.audit.events(after_seq=max(after, 0), limit=limit)

        async def unit(writer: Writer) -> None:
            writer.append_audit(
                {
                    "kind": "audit.export",
                    "outcome": "allowed",
                    "request_id": ctx.request_id,
                    "at": iso(utcnow()),
                    "actor": ctx.actor(),
                    "after": after,
                    "count": len(records),
                }
            )

        await self._store.submit(unit)
        return list(export_jsonl(records)), head_seq
