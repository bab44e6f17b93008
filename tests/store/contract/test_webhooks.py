"""Approval webhooks and the delivery outbox (tables/webhooks.py): the contract both backends pass."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from signer.errors import Conflict
from signer.store import OutboxRecord, Store
from tests.store.store_testkit import T0, uid


async def test_a_webhook_keeps_its_secret_until_rotated(store: Store) -> None:
    async with store.write() as w:
        await w.webhooks.set("treasury", "https://a.example/hook", T0, "prn_admin", secret_salt="salt-1")
        await w.webhooks.set("ops", "https://b.example/hook", T0, None, secret_salt="salt-ops")
        # Pointing it elsewhere keeps the secret: only a rotation changes it.
        later = T0 + timedelta(minutes=1)
        await w.webhooks.set("treasury", "https://c.example/hook", later, "prn_admin", secret_salt="ignored")
    async with store.read() as r:
        hook = await r.webhooks.get("treasury")
        assert hook is not None and hook.url == "https://c.example/hook" and hook.secret_salt == "salt-1"
        assert await r.webhooks.for_groups(["treasury", "ops", "none"]) == {
            "treasury": "https://c.example/hook",
            "ops": "https://b.example/hook",
        }
        assert await r.webhooks.get("none") is None
    until = T0 + timedelta(days=1)
    async with store.write() as w:
        rotated = await w.webhooks.rotate_secret("treasury", "salt-2", until)
        assert await w.webhooks.rotate_secret("none", "salt-x", until) is None
    assert rotated is not None
    assert (rotated.secret_salt, rotated.previous_secret_salt, rotated.previous_secret_until) == (
        "salt-2",
        "salt-1",
        until,
    )
    async with store.read() as r:
        assert await r.webhooks.get("treasury") == rotated
    async with store.write() as w:
        assert await w.webhooks.delete("ops") is True
        assert await w.webhooks.delete("ops") is False


def call(at_minute: int, **kw) -> OutboxRecord:  # type: ignore[no-untyped-def]
    return OutboxRecord(
        id=kw.pop("id", uid("obx")),
        group_name="treasury",
        url="https://a.example/hook",
        event={"kind": "approval.requested", "n": at_minute},
        created_at=T0,
        attempts=0,
        next_attempt_at=T0 + timedelta(minutes=at_minute),
    )


async def test_the_outbox_hands_each_due_call_to_one_claimer(store: Store) -> None:
    first, second, later = call(0), call(1), call(60)
    async with store.write() as w:
        for record in (later, second, first):
            await w.outbox.enqueue(record)
        with pytest.raises(Conflict) as again:
            await w.outbox.enqueue(call(0, id=first.id))
    assert again.value.code == "outbox_exists"
    now = T0 + timedelta(minutes=5)
    async with store.read() as r:
        assert [c.id for c in await r.outbox.due(now)] == [first.id, second.id]
        assert await r.outbox.get(first.id) == first
        assert await r.outbox.get("obx_missing") is None
    lease = now + timedelta(seconds=30)
    async with store.write() as w:
        assert await w.outbox.claim(first.id, now, lease) is True
        assert await w.outbox.claim(first.id, now, lease) is False  # leased: not due until the lease ends
        await w.outbox.finish(first.id, delivered_at=now, attempts=1, next_attempt_at=lease, error=None)
        await w.outbox.finish(
            second.id, delivered_at=None, attempts=1, next_attempt_at=lease, error="http 500"
        )
    async with store.read() as r:
        assert await r.outbox.due(now) == []
        assert [c.id for c in await r.outbox.due(lease)] == [second.id]
        failed = await r.outbox.get(second.id)
        assert failed is not None and failed.last_error == "http 500" and failed.attempts == 1
        assert await r.approvals.backlog(now) == (0, 2)  # second and later are undelivered


async def test_finished_calls_are_pruned_after_the_retention_and_live_ones_never(store: Store) -> None:
    from signer.store import GIVEN_UP_AFTER

    keep = timedelta(days=30)
    now = T0 + timedelta(days=100)
    old, recent = now - timedelta(days=31), now - timedelta(days=29)

    def made(at: datetime) -> OutboxRecord:
        return OutboxRecord(
            id=uid("obx"),
            group_name="@alerts",
            url="https://a.example/hook",
            event={"kind": "anomaly.detected"},
            created_at=at,
            attempts=0,
            next_attempt_at=at,
        )

    delivered_old, delivered_recent = made(old), made(recent)
    given_up_old, given_up_recent = made(old), made(recent)
    retrying_old = made(old)  # still being tried: kept whatever its age
    calls = [delivered_old, delivered_recent, given_up_old, given_up_recent, retrying_old]
    async with store.write() as w:
        for record in calls:
            await w.outbox.enqueue(record)
        for record in (delivered_old, delivered_recent):
            await w.outbox.finish(
                record.id,
                delivered_at=record.created_at,
                attempts=1,
                next_attempt_at=record.created_at,
                error=None,
            )
        for record in (given_up_old, given_up_recent):
            await w.outbox.finish(
                record.id,
                delivered_at=None,
                attempts=12,
                next_attempt_at=now + GIVEN_UP_AFTER + timedelta(days=1),
                error="expired",
            )
        await w.outbox.finish(
            retrying_old.id, delivered_at=None, attempts=3, next_attempt_at=now, error="status 500"
        )
    async with store.write() as w:
        assert await w.outbox.prune(now, keep, limit=1) == 1  # a page at a time
        assert await w.outbox.prune(now, keep) == 1
        assert await w.outbox.prune(now, keep) == 0
        with pytest.raises(ValueError):
            await w.outbox.prune(now, keep, limit=0)
    async with store.read() as r:
        left = {record.id for record in calls if await r.outbox.get(record.id) is not None}
    assert left == {delivered_recent.id, given_up_recent.id, retrying_old.id}
