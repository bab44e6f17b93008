"""Audit retention: archive the oldest events with their checkpoints, then prune them, and what remains
still verifies.

An archive holds the events from the first one still stored through a boundary that is always a signed
checkpoint's size (the largest at or below the seq or time asked for): the tree's right edge where the
stored log starts (``tree_start``, when an earlier prune left one), the events, and every checkpoint in
the range right after the event at its size, the boundary's last. It is exactly what ``signer audit
verify`` reads, so an archive verifies on its own. Its SHA-256 is computed over the bytes as they are
streamed and recorded (``audit_archives``, and an ``audit.archived`` event) when the last byte has
left; the CLI computes the same digest over the file it wrote.

A prune names an archive by that digest and deletes what it holds (``audit.pruned`` is recorded in the
same transaction): the events through the boundary, the checkpoints before it and the tree nodes wholly
inside it. The boundary's checkpoint stays, and its right edge is stored, so the checkpoint task goes on
from it, proofs about later events find their left siblings, and an export of what remains starts with
that edge and verifies against the next checkpoint (and against the boundary's checkpoint, held from the
archive, with ``--checkpoint``). A prune is refused without a recorded archive that starts where the
stored log starts (nothing could be deleted unarchived) and whose boundary's edge still matches its
signed checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policy import MAX_WINDOW
from signer.audit import export_jsonl
from signer.errors import Conflict, IntegrityError, NotFound
from signer.identity import Role
from signer.services.checkpoints import CheckpointService
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.store import Store, Writer
from signer.store.tables.audit_retention import ArchiveRecord

_PAGE = 2000
# No policy limit's window reaches further back (policy.parsing's MAX_WINDOW), plus a day of slack for
# clocks: ledger rows older than this can never count again.
LEDGER_KEEP = timedelta(seconds=MAX_WINDOW) + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    first_seq: int  # the first event in the archive
    through: int  # the boundary: a signed checkpoint's size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class AuditRetention:
    def __init__(self, store: Store, checkpoints: CheckpointService, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._checkpoints = checkpoints
        self._clock = clock

    async def plan(self, ctx: RequestContext, before_seq: int | None, before: datetime | None) -> ArchivePlan:
        """The range an archive of the events before ``before_seq`` and recorded before ``before`` holds
        (neither: every event the newest checkpoint covers)."""
        require_role(ctx, Role.ADMIN)
        async with self._store.read() as reader:
            first = await reader.retention.first_retained_seq()
            limit, _ = await reader.audit_head()
            if before_seq is not None:
                limit = min(limit, before_seq - 1)
            if before is not None:
                limit = min(limit, await reader.retention.last_seq_before(before))
            through = await reader.retention.checkpoint_size_at_most(limit)
        start = 1 if first is None else first
        if through is None or through < start:
            raise Conflict(
                "no signed checkpoint lies in that range: nothing can be archived yet",
                code="archive_range_empty",
            )
        return ArchivePlan(start, through)

    async def archive(self, ctx: RequestContext, plan: ArchivePlan) -> AsyncIterator[bytes]:
        """The archive's bytes, a page at a time; recorded (digest and range, audited) once all were made."""
        digest = hashlib.sha256()
        notes: dict[int, str] = {}
        cursor = plan.first_seq - 1
        async with self._store.read() as reader:
            while True:
                page = await reader.checkpoints.page(cursor, 1000)
                notes.update((r.size, r.note) for r in page if r.size <= plan.through)
                if len(page) < 1000 or page[-1].size >= plan.through:
                    break
                cursor = page[-1].size
        if plan.through not in notes:
            raise IntegrityError("the boundary's checkpoint is gone", code="archive_range_empty")
        if plan.first_seq > 1:
            edge = await self._checkpoints.edge_at(plan.first_seq - 1)
            head = {"tree_start": {"size": plan.first_seq - 1, "edge": [_b64(h) for _, _, h in edge]}}
            chunk = (json.dumps(head, sort_keys=True) + "\n").encode()
            digest.update(chunk)
            yield chunk
        after = plan.first_seq - 1
        while after < plan.through:
            async with self._store.read() as reader:
                records = await reader.audit.events(after_seq=after, limit=min(_PAGE, plan.through - after))
            if not records:
                raise IntegrityError(
                    "the audit log has a gap in the archived range", code="audit_chain_broken"
                )
            parts: list[str] = []
            for record, line in zip(records, export_jsonl(records), strict=True):
                parts.append(line)
                note = notes.get(record.seq)
                if note is not None:
                    parts.append(json.dumps({"checkpoint": note}, sort_keys=True) + "\n")
            chunk = "".join(parts).encode("utf-8")
            digest.update(chunk)
            yield chunk
            after = records[-1].seq
        now = self._clock()
        archived = ArchiveRecord(
            digest.hexdigest(), plan.first_seq, plan.through, now, ctx.caller.principal_id
        )

        async def unit(writer: Writer) -> None:
            await writer.retention.add_archive(archived)
            writer.append_audit(
                ctx.audit_event(
                    "audit.archived",
                    now,
                    first_seq=plan.first_seq,
                    through_seq=plan.through,
                    digest=archived.digest,
                )
            )

        await self._store.submit(unit)

    async def prune(self, ctx: RequestContext, before_seq: int, archive_digest: str) -> dict[str, Any]:
        """Delete the events an archive holds (those before ``before_seq`` through its boundary)."""
        require_role(ctx, Role.ADMIN)
        async with self._store.read() as reader:
            archive = await reader.retention.archive(archive_digest)
            first = await reader.retention.first_retained_seq()
            boundary = None if archive is None else await reader.checkpoints.at_size(archive.through_seq)
        if archive is None:
            raise NotFound("no archive with that digest was made", code="archive_not_found")
        if before_seq <= archive.through_seq:
            raise Conflict(
                "the archive reaches past before_seq: archive the range asked for first",
                code="archive_mismatch",
            )
        start = 1 if first is None else first
        if start > archive.through_seq:
            return {"pruned_through": start - 1, "events_deleted": 0, "archive_digest": archive_digest}
        if archive.first_seq > start:
            raise Conflict(
                "the archive starts after the oldest stored event: archive from the start first",
                code="archive_mismatch",
            )
        if boundary is None:
            raise Conflict("the archive's boundary checkpoint is not stored", code="archive_mismatch")
        edge = await self._checkpoints.edge_at(archive.through_seq)
        if tuple(h for _, _, h in edge) != tuple(boundary.edge):
            raise IntegrityError(
                "the tree's edge at the boundary does not match its signed checkpoint",
                code="audit_tree_incomplete",
            )
        now = self._clock()

        async def unit(writer: Writer) -> int:
            writer.append_audit(
                ctx.audit_event(
                    "audit.pruned",
                    now,
                    through_seq=archive.through_seq,
                    archive_digest=archive_digest,
                    archived_at=iso(archive.created_at),
                )
            )
            return await writer.retention.prune(archive.through_seq, edge)

        deleted = await self._store.submit(unit)
        return {
            "pruned_through": archive.through_seq,
            "events_deleted": deleted,
            "archive_digest": archive_digest,
        }

    async def prune_ledger(self, ctx: RequestContext) -> dict[str, Any]:
        """Delete usage ledger rows older than every limit window (grant budgets are kept), audited."""
        require_role(ctx, Role.ADMIN)
        now = self._clock()
        before = now - LEDGER_KEEP

        async def unit(writer: Writer) -> int:
            deleted = await writer.retention.prune_ledger(before)
            writer.append_audit(
                ctx.audit_event("ledger.pruned", now, before=iso(before), rows_deleted=deleted)
            )
            return deleted

        deleted = await self._store.submit(unit)
        return {"rows_deleted": deleted, "before": iso(before)}
