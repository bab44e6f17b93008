"""Policy documents (immutable versions), where they are attached, and shadow decisions.

Owns the ``policy_versions``, ``policy_attachments`` and ``shadow_decisions`` tables. Inserting a
version, attaching (which detaches the same policy's previous attachment at that place and mode) and
detaching move the facts epoch. A shadow decision is buffered in the transaction and written with the
batch at COMMIT; it is dropped with its unit if the unit fails.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.driver import Step
from signer.store.records import ATTACHMENT_MODES, AttachmentRecord, PolicyVersionRecord
from signer.store.tx import Statements, WriteStatements


def _version(row: Any) -> PolicyVersionRecord:
    m = row._mapping
    return PolicyVersionRecord(
        policy_id=m["policy_id"],
        version=int(m["version"]),
        document=m["document"],
        digest=m["digest"],
        created_by=m["created_by"],
        created_at=m["created_at"],
    )


def _attachment(row: Any) -> AttachmentRecord:
    m = row._mapping
    return AttachmentRecord(
        id=m["id"],
        policy_id=m["policy_id"],
        version=int(m["version"]),
        scope=m["scope"],
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        mode=m["mode"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        detached_at=m["detached_at"],
    )


_SHADOW_COLUMNS = (
    "attachment_id",
    "at",
    "request_id",
    "live_effect",
    "candidate_effect",
    "differs",
    "candidate",
)

_SHADOW_INSERT = t.shadow_decisions.insert()


class PolicyReads:
    """Reads of policy versions, attachments and the shadow report."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get_version(self, policy_id: str, version: int) -> PolicyVersionRecord | None:
        c = t.policy_versions.c
        row = await self._tx._first(
            select(t.policy_versions).where(c.policy_id == policy_id, c.version == version)
        )
        return None if row is None else _version(row)

    async def versions(self, policy_id: str) -> list[PolicyVersionRecord]:
        c = t.policy_versions.c
        rows = await self._tx._all(
            select(t.policy_versions).where(c.policy_id == policy_id).order_by(c.version)
        )
        return [_version(r) for r in rows]

    async def latest_versions(self) -> list[PolicyVersionRecord]:
        c = t.policy_versions.c
        rows = await self._tx._all(select(t.policy_versions).order_by(c.policy_id, c.version))
        latest: dict[str, PolicyVersionRecord] = {}
        for row in rows:
            record = _version(row)
            latest[record.policy_id] = record
        return list(latest.values())

    async def attachments(self, *, include_detached: bool = False) -> list[AttachmentRecord]:
        c = t.policy_attachments.c
        query = select(t.policy_attachments).order_by(c.created_at, c.id)
        if not include_detached:
            query = query.where(c.detached_at.is_(None))
        return [_attachment(r) for r in await self._tx._all(query)]

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = await self._tx._first(
            select(t.policy_attachments).where(t.policy_attachments.c.id == attachment_id)
        )
        return None if row is None else _attachment(row)

    async def attached_documents(self) -> list[tuple[AttachmentRecord, PolicyVersionRecord]]:
        """Every attachment in force (live and shadow) with the version it names."""
        a, v = t.policy_attachments.c, t.policy_versions.c
        rows = await self._tx._all(
            select(t.policy_attachments, v.document, v.digest, v.created_at.label("version_created_at"))
            .select_from(
                t.policy_attachments.join(
                    t.policy_versions, and_(a.policy_id == v.policy_id, a.version == v.version)
                )
            )
            .where(a.detached_at.is_(None))
            .order_by(a.created_at, a.id)
        )
        out = []
        for row in rows:
            m = row._mapping
            attachment = _attachment(row)
            version = PolicyVersionRecord(
                policy_id=attachment.policy_id,
                version=attachment.version,
                document=m["document"],
                digest=m["digest"],
                created_by=None,
                created_at=m["version_created_at"],
            )
            out.append((attachment, version))
        return out

    async def shadow_report(self, attachment_id: str, *, recent: int = 20) -> dict[str, Any]:
        """Counts of (live effect, candidate effect) pairs and the most recent differing decisions."""
        c = t.shadow_decisions.c
        rows = await self._tx._all(
            select(c.live_effect, c.candidate_effect, c.differs, func.count())
            .where(c.attachment_id == attachment_id)
            .group_by(c.live_effect, c.candidate_effect, c.differs)
        )
        pairs: dict[tuple[str, str], int] = {}
        differing = evaluated = 0
        for live, candidate, differs, count in rows:
            pairs[(live, candidate)] = pairs.get((live, candidate), 0) + int(count)
            differing += int(count) if differs else 0
            evaluated += int(count)
        latest = await self._tx._all(
            select(c.at, c.request_id, c.live_effect, c.candidate_effect, c.candidate)
            .where(c.attachment_id == attachment_id, c.differs.is_(True))
            .order_by(c.id.desc())
            .limit(recent)
        )
        return {
            "evaluated": evaluated,
            "differing": differing,
            "by_effect": [
                {"live": live, "candidate": cand, "count": n} for (live, cand), n in sorted(pairs.items())
            ],
            "recent_differences": [
                {
                    "at": r[0].isoformat(),
                    "request_id": r[1],
                    "live": r[2],
                    "candidate": r[3],
                    "candidate_decision": json.loads(r[4]),
                }
                for r in latest
            ],
        }


class PolicyWrites(PolicyReads):
    """Writes of policy versions and attachments, and the shadow decisions buffer."""

    __slots__ = ("_mark", "_shadow_pending")
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)
        self._shadow_pending: list[dict[str, Any]] = []
        self._mark = 0
        tx._buffer(self)

    # -- the shadow decisions buffer (see tx.Buffer) ----------------------------------------------

    def mark(self) -> None:
        self._mark = len(self._shadow_pending)

    def undo(self) -> None:
        del self._shadow_pending[self._mark :]

    def steps(self) -> list[Step]:
        if not self._shadow_pending:
            return []
        return [Step(self._tx._prepared(_SHADOW_INSERT, _SHADOW_COLUMNS), rows=self._shadow_pending)]

    def flushed(self, results: list[list[Any]]) -> None:
        pass

    def committed(self) -> None:
        pass

    # -- versions and attachments -----------------------------------------------------------------

    async def insert_version(self, record: PolicyVersionRecord) -> None:
        await self._tx._insert_new(
            t.policy_versions,
            {
                "policy_id": record.policy_id,
                "version": record.version,
                "document": record.document,
                "digest": record.digest,
                "created_by": record.created_by,
                "created_at": record.created_at,
            },
            Conflict("that policy version exists", code="policy_version_exists"),
        )
        self._tx.bump_epoch()

    async def attach(self, record: AttachmentRecord) -> list[str]:
        """Put a version in force at a place; the same policy's previous attachment there in the same
        mode is detached. Returns the ids detached."""
        if record.mode not in ATTACHMENT_MODES:
            raise ValueError("mode must be live or shadow")
        c = t.policy_attachments.c
        if (record.scope is None) == (record.resource_id is None) or (record.resource_type is None) != (
            record.resource_id is None
        ):
            raise ValueError("an attachment names exactly one scope or one resource (type and id)")
        place = (
            c.scope == record.scope
            if record.scope is not None
            else and_(c.resource_type == record.resource_type, c.resource_id == record.resource_id)
        )
        previous = await self._tx._all(
            select(c.id).where(
                c.policy_id == record.policy_id, c.mode == record.mode, place, c.detached_at.is_(None)
            )
        )
        detached = [r[0] for r in previous]
        if detached:
            await self._tx._write(
                update(t.policy_attachments).where(c.id.in_(detached)).values(detached_at=record.created_at)
            )
        await self._tx._insert_new(
            t.policy_attachments,
            {
                "id": record.id,
                "policy_id": record.policy_id,
                "version": record.version,
                "scope": record.scope,
                "resource_type": record.resource_type,
                "resource_id": record.resource_id,
                "mode": record.mode,
                "created_by": record.created_by,
                "created_at": record.created_at,
                "detached_at": None,
            },
            Conflict("an attachment with that id exists", code="attachment_exists"),
            missing_parent=NotFound("no such policy version", code="policy_not_found"),
        )
        self._tx.bump_epoch()
        return detached

    async def detach(self, attachment_id: str, now: datetime) -> bool:
        c = t.policy_attachments.c
        result = await self._tx._write(
            update(t.policy_attachments)
            .where(c.id == attachment_id, c.detached_at.is_(None))
            .values(detached_at=now)
        )
        if result.rowcount:
            self._tx.bump_epoch()
            return True
        return False

    def record_shadow(
        self,
        attachment_id: str,
        at: datetime,
        request_id: str | None,
        live_effect: str,
        candidate_effect: str,
        differs: bool,
        candidate: dict[str, Any],
    ) -> None:
        """Buffer a shadow decision; written at COMMIT, dropped with its unit if the unit fails."""
        self._shadow_pending.append(
            {
                "attachment_id": attachment_id,
                "at": at,
                "request_id": request_id,
                "live_effect": live_effect,
                "candidate_effect": candidate_effect,
                "differs": differs,
                "candidate": json.dumps(candidate, sort_keys=True, separators=(",", ":")),
            }
        )
