"""Rows for authorisation beyond the basics: groups, policy versions and attachments, the ledger of spend
and rate reservations, idempotency keys and shadow decisions.

Mixed into ``Reader`` and ``Writer`` (``signer.store.core``); all SQL stays in this package. The ledger
is the part that needs care. Limits are exact rolling sums, but summing a day of rows on every request
would make the check the slowest step of signing, so ``limit_windows`` keeps, per limit key and window
length, the total of the rows recorded after ``through``. A check advances ``through`` to the new window
start and subtracts only the rows that fell out since the last check: each row is added once and taken
out once. Totals are loaded once per write transaction and changed in memory; the new ledger rows and
the changed totals are written just before COMMIT (like the audit events). Every write transaction holds
the store's write lock, so no other process can change a total between read and write, and a unit that
fails has its in-memory reservations undone with the rest of its work. A window whose start moved
backwards (a clock stepped back, another replica's clock behind) adds back the rows between the two
starts, so a clock jump cannot re-enable spending. Callers should judge every unit of a batch at the
transaction's own instant (``Writer.now``): then the window moves once per batch, not once per unit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, or_, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.records import (
    ATTACHMENT_MODES,
    AttachmentRecord,
    GrantRecord,
    IdempotencyRecord,
    LedgerEntry,
    PolicyVersionRecord,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware")


def grant_from_row(row: Any) -> GrantRecord:
    m = row._mapping
    return GrantRecord(
        id=m["id"],
        principal_id=m["principal_id"],
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        operations=list(m["operations"]),
        expires_at=m["expires_at"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        group_name=m["group_name"],
        max_uses=None if m["max_uses"] is None else int(m["max_uses"]),
        value_budgets=dict(m["value_budgets"] or {}),
    )


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
        key_id=m["key_id"],
        mode=m["mode"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        detached_at=m["detached_at"],
    )


class PolicyReads:
    """Read queries; needs ``_all`` and ``_first`` from the class it is mixed into."""

    _conn: AsyncConnection

    async def _all(self, statement: Any) -> list[Any]:  # pragma: no cover - provided by _Queries
        raise NotImplementedError

    async def _first(self, statement: Any) -> Any:  # pragma: no cover - provided by _Queries
        raise NotImplementedError

    # groups

    async def groups_of(self, principal_id: str) -> frozenset[str]:
        c = t.group_members.c
        rows = await self._all(select(c.group_name).where(c.principal_id == principal_id))
        return frozenset(r[0] for r in rows)

    async def group_members(self, group: str) -> list[str]:
        c = t.group_members.c
        rows = await self._all(select(c.principal_id).where(c.group_name == group).order_by(c.principal_id))
        return [r[0] for r in rows]

    async def list_groups(self) -> dict[str, list[str]]:
        c = t.group_members.c
        rows = await self._all(select(c.group_name, c.principal_id).order_by(c.group_name, c.principal_id))
        groups: dict[str, list[str]] = {}
        for group, principal in rows:
            groups.setdefault(group, []).append(principal)
        return groups

    # grants

    async def grants_for(self, principal_id: str, groups: frozenset[str], now: datetime) -> list[GrantRecord]:
        """Live grants (not revoked, not expired at ``now``) to the principal or any of its groups."""
        _aware(now, "now")
        g = t.grants.c
        subject = g.principal_id == principal_id
        if groups:
            subject = or_(subject, g.group_name.in_(sorted(groups)))
        rows = await self._all(
            select(t.grants)
            .where(subject, g.revoked_at.is_(None), or_(g.expires_at.is_(None), g.expires_at > now))
            .order_by(g.created_at, g.id)
        )
        return [grant_from_row(r) for r in rows]

    # policies

    async def get_policy_version(self, policy_id: str, version: int) -> PolicyVersionRecord | None:
        c = t.policy_versions.c
        row = await self._first(
            select(t.policy_versions).where(c.policy_id == policy_id, c.version == version)
        )
        return None if row is None else _version(row)

    async def policy_versions(self, policy_id: str) -> list[PolicyVersionRecord]:
        c = t.policy_versions.c
        rows = await self._all(select(t.policy_versions).where(c.policy_id == policy_id).order_by(c.version))
        return [_version(r) for r in rows]

    async def latest_policy_versions(self) -> list[PolicyVersionRecord]:
        c = t.policy_versions.c
        rows = await self._all(select(t.policy_versions).order_by(c.policy_id, c.version))
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
        return [_attachment(r) for r in await self._all(query)]

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None:
        row = await self._first(
            select(t.policy_attachments).where(t.policy_attachments.c.id == attachment_id)
        )
        return None if row is None else _attachment(row)

    async def attached_documents(self) -> list[tuple[AttachmentRecord, PolicyVersionRecord]]:
        """Every attachment in force (live and shadow) with the version it names."""
        a, v = t.policy_attachments.c, t.policy_versions.c
        rows = await self._all(
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

    # idempotency and shadow

    async def get_idempotency(self, principal_id: str, key: str) -> IdempotencyRecord | None:
        c = t.idempotency_keys.c
        row = await self._first(
            select(t.idempotency_keys).where(c.principal_id == principal_id, c.key == key)
        )
        if row is None:
            return None
        m = row._mapping
        return IdempotencyRecord(
            principal_id=m["principal_id"],
            key=m["key"],
            request_digest=m["request_digest"],
            response=json.loads(m["response"]),
            created_at=m["created_at"],
        )

    async def shadow_report(self, attachment_id: str, *, recent: int = 20) -> dict[str, Any]:
        """Counts of (live effect, candidate effect) pairs and the most recent differing decisions."""
        c = t.shadow_decisions.c
        rows = await self._all(
            select(c.live_effect, c.candidate_effect, c.differs).where(c.attachment_id == attachment_id)
        )
        pairs: dict[tuple[str, str], int] = {}
        differing = 0
        for live, candidate, differs in rows:
            pairs[(live, candidate)] = pairs.get((live, candidate), 0) + 1
            differing += 1 if differs else 0
        latest = await self._all(
            select(c.at, c.request_id, c.live_effect, c.candidate_effect, c.candidate)
            .where(c.attachment_id == attachment_id, c.differs.is_(True))
            .order_by(c.id.desc())
            .limit(recent)
        )
        return {
            "evaluated": len(rows),
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


@dataclass(slots=True)
class _Window:
    """The running total of one limit key over one window length (``seconds`` None: all time)."""

    seconds: int | None
    total: int
    through: datetime | None
    stored: bool
    dirty: bool = False


class PolicyWrites:
    """Write methods; needs ``_write``, ``_execute``, ``_insert_new``, ``bump_epoch`` and ``_check_live``
    from ``Writer``. ``_ledger_init`` must run in the writer's constructor, ``_ledger_mark`` /
    ``_ledger_undo`` at unit boundaries and ``_ledger_flush`` before COMMIT."""

    _store: Any

    def _ledger_init(self) -> None:
        self._windows: dict[str, dict[int | None, _Window]] = {}
        self._ledger_pending: list[LedgerEntry] = []
        self._shadow_pending: list[dict[str, Any]] = []
        self._window_undo: list[tuple[_Window, int, datetime | None, bool]] = []
        self._ledger_marks = (0, 0, 0)

    # -- group commit hooks ---------------------------------------------------------------------

    def _ledger_mark(self) -> None:
        self._window_undo.clear()
        self._ledger_marks = (len(self._ledger_pending), len(self._shadow_pending), 0)

    def _ledger_undo(self) -> None:
        ledger_count, shadow_count, _ = self._ledger_marks
        del self._ledger_pending[ledger_count:]
        del self._shadow_pending[shadow_count:]
        for window, total, through, dirty in reversed(self._window_undo):
            window.total, window.through, window.dirty = total, through, dirty
        self._window_undo.clear()

    async def _ledger_flush(self) -> None:
        if self._ledger_pending:
            await self._execute(  # type: ignore[attr-defined]
                t.ledger.insert(),
                [
                    {
                        "limit_key": e.limit_key,
                        "amount": str(e.amount),
                        "window_start": e.window_start,
                        "window_end": e.window_end,
                        "request_id": e.request_id,
                    }
                    for e in self._ledger_pending
                ],
            )
        new_rows: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for limit_key, windows in self._windows.items():
            for window in windows.values():
                if not window.dirty:
                    continue
                row = {
                    "limit_key": limit_key,
                    "window_seconds": -1 if window.seconds is None else window.seconds,
                    "total": str(window.total),
                    "through": window.through,
                }
                (changed if window.stored else new_rows).append(row)
        if new_rows:
            await self._execute(t.limit_windows.insert(), new_rows)  # type: ignore[attr-defined]
        for row in changed:
            c = t.limit_windows.c
            await self._execute(  # type: ignore[attr-defined]
                update(t.limit_windows)
                .where(c.limit_key == row["limit_key"], c.window_seconds == row["window_seconds"])
                .values(total=row["total"], through=row["through"])
            )
        if self._shadow_pending:
            await self._execute(t.shadow_decisions.insert(), self._shadow_pending)  # type: ignore[attr-defined]

    def discard_ledger_changes(self) -> None:
        """Forget every reservation and total change of this transaction (a dry run reads only)."""
        self._windows.clear()
        self._ledger_pending.clear()
        self._window_undo.clear()

    # -- the ledger -----------------------------------------------------------------------------

    async def _key_windows(self, limit_key: str) -> dict[int | None, _Window]:
        windows = self._windows.get(limit_key)
        if windows is None:
            c = t.limit_windows.c
            rows = await self._all(  # type: ignore[attr-defined]
                select(c.window_seconds, c.total, c.through).where(c.limit_key == limit_key)
            )
            windows = {}
            for seconds, total, through in rows:
                key = None if int(seconds) < 0 else int(seconds)
                windows[key] = _Window(key, int(total), through, stored=True)
            self._windows[limit_key] = windows
        return windows

    async def _sum_rows(self, limit_key: str, after: datetime | None, through: datetime | None) -> int:
        """Committed plus pending amounts for ``limit_key`` with ``after < window_start <= through``."""
        c = t.ledger.c
        query = select(c.amount).where(c.limit_key == limit_key)
        if after is not None:
            query = query.where(c.window_start > after)
        if through is not None:
            query = query.where(c.window_start <= through)
        rows = await self._all(query)  # type: ignore[attr-defined]
        total: int = sum(int(r[0]) for r in rows)
        for entry in self._ledger_pending:
            if (
                entry.limit_key == limit_key
                and (after is None or entry.window_start > after)
                and (through is None or entry.window_start <= through)
            ):
                total += entry.amount
        return total

    def _remember(self, window: _Window) -> None:
        self._window_undo.append((window, window.total, window.through, window.dirty))

    async def usage(self, limit_key: str, since: datetime | None, now: datetime) -> int:
        """The sum of reservations for ``limit_key`` with ``window_start > since`` (all of them when
        ``since`` is None), as committed plus what this transaction reserved so far."""
        _aware(since, "since")
        _aware(now, "now")
        seconds = None if since is None else round((now - since).total_seconds())
        windows = await self._key_windows(limit_key)
        window = windows.get(seconds)
        if window is None:
            window = _Window(seconds, await self._sum_rows(limit_key, since, None), since, stored=False)
            window.dirty = True
            windows[seconds] = window
            return window.total
        if since is None or window.through is None:
            return window.total
        if since < window.through:
            # The window start moved backwards (another process's clock is behind, or the clock
            # stepped back): rows taken out between the two starts count again.
            self._remember(window)
            window.total += await self._sum_rows(limit_key, since, window.through)
            window.through, window.dirty = since, True
        elif since > window.through:
            self._remember(window)
            window.total -= await self._sum_rows(limit_key, window.through, since)
            window.through, window.dirty = since, True
        return window.total

    async def reserve(self, entries: list[LedgerEntry]) -> None:
        """Record reservations (written at COMMIT) and add them to every loaded running total."""
        for entry in entries:
            _aware(entry.window_start, "window_start")
            if isinstance(entry.amount, bool) or not isinstance(entry.amount, int) or entry.amount < 0:
                raise ValueError("a reservation amount must be a non-negative integer")
            windows = await self._key_windows(entry.limit_key)
            self._ledger_pending.append(entry)
            for window in windows.values():
                if window.through is None or entry.window_start > window.through:
                    self._remember(window)
                    window.total += entry.amount
                    window.dirty = True

    # -- groups -----------------------------------------------------------------------------------

    async def add_member(self, group: str, principal_id: str, now: datetime, by: str | None) -> bool:
        """Add a principal to a group; False if it already was a member."""
        try:
            await self._insert_new(  # type: ignore[attr-defined]
                t.group_members,
                {"group_name": group, "principal_id": principal_id, "added_at": now, "added_by": by},
                Conflict("already a member", code="already_member"),
                missing_parent=NotFound("no such principal", code="principal_not_found"),
            )
        except Conflict:
            return False
        self.bump_epoch()  # type: ignore[attr-defined]
        return True

    async def remove_member(self, group: str, principal_id: str) -> bool:
        c = t.group_members.c
        result = await self._write(  # type: ignore[attr-defined]
            delete(t.group_members).where(c.group_name == group, c.principal_id == principal_id)
        )
        if result.rowcount:
            self.bump_epoch()  # type: ignore[attr-defined]
            return True
        return False

    # -- policies ---------------------------------------------------------------------------------

    async def insert_policy_version(self, record: PolicyVersionRecord) -> None:
        await self._insert_new(  # type: ignore[attr-defined]
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
        self.bump_epoch()  # type: ignore[attr-defined]

    async def attach_policy(self, record: AttachmentRecord) -> list[str]:
        """Put a version in force at a place; the same policy's previous attachment there in the same
        mode is detached. Returns the ids detached."""
        if record.mode not in ATTACHMENT_MODES:
            raise ValueError("mode must be live or shadow")
        c = t.policy_attachments.c
        place = c.scope == record.scope if record.scope is not None else c.key_id == record.key_id
        previous = await self._all(  # type: ignore[attr-defined]
            select(c.id).where(
                c.policy_id == record.policy_id, c.mode == record.mode, place, c.detached_at.is_(None)
            )
        )
        detached = [r[0] for r in previous]
        if detached:
            await self._write(  # type: ignore[attr-defined]
                update(t.policy_attachments).where(c.id.in_(detached)).values(detached_at=record.created_at)
            )
        await self._insert_new(  # type: ignore[attr-defined]
            t.policy_attachments,
            {
                "id": record.id,
                "policy_id": record.policy_id,
                "version": record.version,
                "scope": record.scope,
                "key_id": record.key_id,
                "mode": record.mode,
                "created_by": record.created_by,
                "created_at": record.created_at,
                "detached_at": None,
            },
            Conflict("an attachment with that id exists", code="attachment_exists"),
            missing_parent=NotFound("no such policy version", code="policy_not_found"),
        )
        self.bump_epoch()  # type: ignore[attr-defined]
        return detached

    async def detach_policy(self, attachment_id: str, now: datetime) -> bool:
        c = t.policy_attachments.c
        result = await self._write(  # type: ignore[attr-defined]
            update(t.policy_attachments)
            .where(c.id == attachment_id, c.detached_at.is_(None))
            .values(detached_at=now)
        )
        if result.rowcount:
            self.bump_epoch()  # type: ignore[attr-defined]
            return True
        return False

    # -- idempotency and shadow -------------------------------------------------------------------

    async def insert_idempotency(self, record: IdempotencyRecord) -> None:
        await self._insert_new(  # type: ignore[attr-defined]
            t.idempotency_keys,
            {
                "principal_id": record.principal_id,
                "key": record.key,
                "request_digest": record.request_digest,
                "response": json.dumps(record.response, sort_keys=True, separators=(",", ":")),
                "created_at": record.created_at,
            },
            Conflict("that idempotency key was used", code="idempotency_key_used"),
        )

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
