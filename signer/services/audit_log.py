"""The audit log as a service: export for auditors (the export is itself audited), offline verification,
and the record of refused admin calls (``record_refusal``, called by ``signer.http.refusals`` for every
operation, so no handler has to remember)."""

from __future__ import annotations

from signer.audit import ErrorRef, EventTarget, Outcome, export_jsonl
from signer.identity import Role
from signer.services.context import Clock, RequestContext, require_role, utcnow
from signer.store import Store, Writer

MAX_EXPORT = 10_000


class AuditLogService:
    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._clock = clock

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
                ctx.audit_event("audit.export", self._clock(), after=after, count=len(records))
            )

        await self._store.submit(unit)
        return list(export_jsonl(records)), head_seq

    async def record_refusal(
        self, ctx: RequestContext, *, action: str, resource: EventTarget, error: ErrorRef
    ) -> None:
        """One ``request.refused`` event in its own transaction: who was refused what, on which
        resource, with which error code. The caller passes no input values and none are written."""
        event = ctx.audit_event(
            "request.refused",
            self._clock(),
            outcome=Outcome.REFUSED,
            resource=resource,
            error=error,
            action=action,
        )

        async def unit(writer: Writer) -> None:
            writer.append_audit(event)

        await self._store.submit(unit)
