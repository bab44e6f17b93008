"""Approval webhooks (one URL per group) and the outbox of calls to deliver.

Owns the ``approval_webhooks`` and ``webhook_outbox`` tables. A webhook's signing secret is never
stored: only the salt it is derived from (and the previous salt during a rotation's overlap). The
outbox is a durable queue: a call is enqueued in the transaction that caused it, claimed with a lease by
a deliverer, and finished (delivered, or rescheduled). Besides approver groups, a row may belong to a
channel (a ``group_name`` starting with ``@``, which no group name can: ``@alerts`` for the alerts
webhook); a row given up on keeps ``delivered_at`` empty and ``next_attempt_at`` a century ahead.
Finished rows (delivered, or given up on) are pruned once older than the retention the service sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from signer.errors import Conflict
from signer.store import schema as t
from signer.store.checks import aware, nonempty
from signer.store.records import OutboxRecord, WebhookRecord
from signer.store.tx import Statements, WriteStatements

# A row rescheduled this far ahead was given up on (the deliverer sets a century).
GIVEN_UP_AFTER = timedelta(days=3650)


def _outbox(row: Any) -> OutboxRecord:
    m = row._mapping
    return OutboxRecord(
        id=m["id"],
        group_name=m["group_name"],
        url=m["url"],
        event=dict(m["event"]),
        created_at=m["created_at"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        delivered_at=m["delivered_at"],
        last_error=m["last_error"],
    )


class WebhookReads:
    """Reads of ``approval_webhooks``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def for_groups(self, groups: Sequence[str]) -> dict[str, str]:
        """The webhook URL of each of ``groups`` that has one."""
        c = t.approval_webhooks.c
        rows = await self._tx._all(select(c.group_name, c.url).where(c.group_name.in_(list(groups))))
        return {r[0]: r[1] for r in rows}

    async def get(self, group: str) -> WebhookRecord | None:
        row = await self._tx._first(
            select(t.approval_webhooks).where(t.approval_webhooks.c.group_name == group)
        )
        if row is None:
            return None
        m = row._mapping
        return WebhookRecord(
            group_name=m["group_name"],
            url=m["url"],
            created_at=m["created_at"],
            created_by=m["created_by"],
            secret_salt=m["secret_salt"],
            previous_secret_salt=m["previous_secret_salt"],
            previous_secret_until=m["previous_secret_until"],
        )


class WebhookWrites(WebhookReads):
    """Writes of ``approval_webhooks`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def set(self, group: str, url: str, now: datetime, by: str | None, *, secret_salt: str) -> None:
        """Point the group's webhook at ``url``; a new row takes ``secret_salt``, an existing one keeps
        its secrets (only a rotation changes them)."""
        nonempty(group, "group")
        nonempty(url, "url")
        nonempty(secret_salt, "secret_salt")
        aware(now, "now")
        c = t.approval_webhooks.c
        replaced = await self._tx._write(
            update(t.approval_webhooks)
            .where(c.group_name == group)
            .values(url=url, created_at=now, created_by=by)
        )
        if not replaced.rowcount:
            await self._tx._insert_new(
                t.approval_webhooks,
                {
                    "group_name": group,
                    "url": url,
                    "created_at": now,
                    "created_by": by,
                    "secret_salt": secret_salt,
                    "previous_secret_salt": None,
                    "previous_secret_until": None,
                },
                Conflict("a webhook exists for that group", code="webhook_exists"),
            )

    async def rotate_secret(
        self, group: str, new_salt: str, previous_until: datetime
    ) -> WebhookRecord | None:
        """The current secret becomes the previous one (until ``previous_until``; an older previous one
        is dropped) and ``new_salt`` the current one. None when the group has no webhook."""
        nonempty(new_salt, "new_salt")
        aware(previous_until, "previous_until")
        current = await self.get(group)
        if current is None:
            return None
        c = t.approval_webhooks.c
        values = {
            "secret_salt": new_salt,
            "previous_secret_salt": current.secret_salt,
            "previous_secret_until": previous_until,
        }
        result = await self._tx._write(
            update(t.approval_webhooks)
            .where(c.group_name == group, c.secret_salt.is_not_distinct_from(current.secret_salt))
            .values(**values)
        )
        if not result.rowcount:
            raise Conflict("the webhook changed meanwhile: try again", code="webhook_changed")
        return WebhookRecord(
            group_name=group,
            url=current.url,
            created_at=current.created_at,
            created_by=current.created_by,
            secret_salt=new_salt,
            previous_secret_salt=current.secret_salt,
            previous_secret_until=previous_until,
        )

    async def delete(self, group: str) -> bool:
        result = await self._tx._write(
            delete(t.approval_webhooks).where(t.approval_webhooks.c.group_name == group)
        )
        return bool(result.rowcount)


class OutboxReads:
    """Reads of ``webhook_outbox``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, outbox_id: str) -> OutboxRecord | None:
        row = await self._tx._first(select(t.webhook_outbox).where(t.webhook_outbox.c.id == outbox_id))
        return None if row is None else _outbox(row)

    async def due(self, now: datetime, limit: int = 20) -> list[OutboxRecord]:
        """Undelivered calls whose next attempt is due at ``now``, oldest first."""
        c = t.webhook_outbox.c
        rows = await self._tx._all(
            select(t.webhook_outbox)
            .where(c.delivered_at.is_(None), c.next_attempt_at <= now)
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
        )
        return [_outbox(r) for r in rows]

    async def channel_backlog(self, channel: str, now: datetime) -> tuple[int, datetime | None]:
        """How many of ``channel``'s calls are still being tried (neither delivered nor given up), and
        when the oldest of them was made."""
        c = t.webhook_outbox.c
        row = await self._tx._first(
            select(func.count(), func.min(c.created_at)).where(
                c.group_name == channel,
                c.delivered_at.is_(None),
                c.next_attempt_at < now + GIVEN_UP_AFTER,
            )
        )
        oldest = row[1]
        if isinstance(oldest, str):
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return int(row[0]), oldest

    async def undelivered(self, channel: str, limit: int) -> list[OutboxRecord]:
        """``channel``'s calls not delivered (being tried, or given up on), oldest first."""
        c = t.webhook_outbox.c
        rows = await self._tx._all(
            select(t.webhook_outbox)
            .where(c.group_name == channel, c.delivered_at.is_(None))
            .order_by(c.created_at, c.id)
            .limit(limit)
        )
        return [_outbox(r) for r in rows]


class OutboxWrites(OutboxReads):
    """Writes of ``webhook_outbox`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def enqueue(self, record: OutboxRecord) -> None:
        nonempty(record.id, "outbox id")
        aware(record.created_at, "created_at")
        aware(record.next_attempt_at, "next_attempt_at")
        await self._tx._insert_new(
            t.webhook_outbox,
            {
                "id": record.id,
                "group_name": record.group_name,
                "url": record.url,
                "event": dict(record.event),
                "created_at": record.created_at,
                "attempts": record.attempts,
                "next_attempt_at": record.next_attempt_at,
                "delivered_at": None,
                "last_error": None,
            },
            Conflict("an outbox entry with that id exists", code="outbox_exists"),
        )

    async def prune(self, now: datetime, keep: timedelta, limit: int = 1000) -> int:
        """Delete up to ``limit`` finished calls older than ``keep``: delivered before ``now - keep``,
        or given up on and made before then. Calls still being tried are never deleted, whatever their
        age. Returns how many went; the caller repeats while a full page goes."""
        aware(now, "now")
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        c = t.webhook_outbox.c
        cutoff = now - keep
        finished = (c.delivered_at.is_not(None) & (c.delivered_at < cutoff)) | (
            c.delivered_at.is_(None) & (c.next_attempt_at >= now + GIVEN_UP_AFTER) & (c.created_at < cutoff)
        )
        page = select(c.id).where(finished).order_by(c.created_at, c.id).limit(limit).scalar_subquery()
        result = await self._tx._write(delete(t.webhook_outbox).where(c.id.in_(page)))
        return int(result.rowcount or 0)

    async def claim(self, outbox_id: str, due: datetime, lease_until: datetime) -> bool:
        """Take a due call for delivery (compare-and-set on its next attempt): one claimer wins, in
        every process; a claimer that dies lets the lease run out and the call becomes due again."""
        c = t.webhook_outbox.c
        result = await self._tx._write(
            update(t.webhook_outbox)
            .where(c.id == outbox_id, c.delivered_at.is_(None), c.next_attempt_at <= due)
            .values(next_attempt_at=lease_until)
        )
        return bool(result.rowcount)

    async def finish(
        self,
        outbox_id: str,
        *,
        delivered_at: datetime | None,
        attempts: int,
        next_attempt_at: datetime,
        error: str | None,
    ) -> None:
        c = t.webhook_outbox.c
        await self._tx._write(
            update(t.webhook_outbox)
            .where(c.id == outbox_id)
            .values(
                delivered_at=delivered_at,
                attempts=attempts,
                next_attempt_at=next_attempt_at,
                last_error=error,
            )
        )
