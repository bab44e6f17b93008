"""Filtered audit exports for auditors (D): JSONL or CSV, streamed page by page in constant memory.

Filters: a time range (``since`` inclusive, ``until`` exclusive), the actor's principal id, the target
resource (type, and id), the action (the event kind, e.g. ``sign.transaction``, or the ``action`` of a
``request.refused`` event) and the outcome. Time and kind are filtered by the database; the rest on the
parsed event. The export is audited (``audit.export`` with its filters) before the first line leaves,
and it stops at the head seen then, so it ends although its own event grows the log. A filtered export
is for reading: only a full one (``/v1/audit/events``) verifies as a chain. CSV cells that a spreadsheet
would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR) are prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from signer.audit import AuditRecord, export_jsonl, format_at
from signer.identity import Role
from signer.services.context import Clock, RequestContext, require_role, utcnow
from signer.store import Store, Writer

PAGE = 1000
CSV_COLUMNS = (
    "seq",
    "at",
    "kind",
    "action",
    "outcome",
    "actor_id",
    "actor_name",
    "resource_type",
    "resource_id",
    "error_code",
    "request_id",
    "hash",
)


@dataclass(frozen=True, slots=True)
class ExportFilter:
    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None
    outcome: str | None = None

    def described(self) -> dict[str, Any]:
        return {
            k: (format_at(v) if isinstance(v, datetime) else v)
            for k, v in asdict(self).items()
            if v is not None
        }

    def matches(self, event: dict[str, Any]) -> bool:
        actor, resource = _part(event, "actor"), _part(event, "resource")
        if self.actor is not None and actor.get("principal_id") != self.actor:
            return False
        if self.resource_type is not None and resource.get("type") != self.resource_type:
            return False
        if self.resource_id is not None and resource.get("id") != self.resource_id:
            return False
        if self.action is not None and self.action not in (event.get("kind"), event.get("action")):
            return False
        return self.outcome is None or event.get("outcome") == self.outcome


def _part(event: dict[str, Any], name: str) -> dict[str, Any]:
    value = event.get(name)
    return value if isinstance(value, dict) else {}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_row(record: AuditRecord, event: dict[str, Any]) -> str:
    actor, resource, error = _part(event, "actor"), _part(event, "resource"), _part(event, "error")
    row = (
        record.seq,
        format_at(record.at),
        record.kind,
        event.get("action"),
        event.get("outcome"),
        actor.get("principal_id"),
        actor.get("name"),
        resource.get("type"),
        resource.get("id"),
        error.get("code"),
        record.request_id,
        record.hash,
    )
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([_cell(v) for v in row])
    return out.getvalue()


def csv_header() -> str:
    return ",".join(CSV_COLUMNS) + "\n"


class AuditExportService:
    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._clock = clock

    async def start(self, ctx: RequestContext, wanted: ExportFilter, fmt: str) -> int:
        """Check the role, record the export (in the log it exports), and return the seq to stop at."""
        require_role(ctx, Role.AUDITOR, Role.ADMIN)
        now = self._clock()

        async def unit(writer: Writer) -> int:
            head, _ = writer.head
            writer.append_audit(
                ctx.audit_event("audit.export", now, format=fmt, filters=wanted.described(), until_seq=head)
            )
            return head

        return await self._store.submit(unit)

    async def lines(self, wanted: ExportFilter, fmt: str, head: int) -> AsyncIterator[str]:
        """The export's text, a page at a time (constant memory whatever the log's length)."""
        if fmt == "csv":
            yield csv_header()
        after = 0
        kinds = [wanted.action] if wanted.action is not None and "." in wanted.action else []
        while after < head:
            async with self._store.read() as reader:
                records = await reader.audit.filtered(
                    after_seq=after,
                    until_seq=head,
                    limit=PAGE,
                    since=wanted.since,
                    until=wanted.until,
                    kinds=kinds,
                )
            if not records:
                return
            chunk: list[str] = []
            for record in records:
                event = json.loads(record.event)
                if not isinstance(event, dict) or not wanted.matches(event):
                    continue
                chunk.append(csv_row(record, event) if fmt == "csv" else next(iter(export_jsonl([record]))))
            if chunk:
                yield "".join(chunk)
            after = records[-1].seq
