"""External audit sinks' cursors and leases (tables/audit_sinks.py): the contract both backends pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from signer.store import Store


async def test_one_lease_holder_moves_the_cursor(store: Store) -> None:
    now = datetime.now(UTC)
    later = now + timedelta(seconds=15)
    async with store.write() as w:
        taken = await w.sinks.take_lease("file", "a", later, now, 0)
        assert taken is not None and (taken.delivered_seq, taken.lease_owner) == (0, "a")
        assert await w.sinks.take_lease("file", "b", later, now, 0) is None  # held by a
        assert await w.sinks.delivered("file", "a", 7)
        assert not await w.sinks.delivered("file", "b", 9)  # b holds no lease
        await w.sinks.failing("file", "a", now, "ConnectionRefusedError")
        await w.sinks.failing("file", "a", later, "TimeoutError")  # the first failure's time stays
    async with store.read() as r:
        state = await r.sinks.get("file")
        assert state is not None and state.delivered_seq == 7 and state.last_error == "TimeoutError"
        assert state.failing_since == now.replace(microsecond=now.microsecond)
    async with store.write() as w:
        # An expired lease is taken over; delivering clears the failure; the cursor never goes back.
        taken = await w.sinks.take_lease(
            "file", "b", later + timedelta(seconds=15), later + timedelta(seconds=1), 0
        )
        assert taken is not None and taken.lease_owner == "b" and taken.delivered_seq == 7
        assert not await w.sinks.delivered("file", "b", 3)
        assert await w.sinks.delivered("file", "b", 12)
        await w.sinks.release("file", "b")
    async with store.read() as r:
        state = await r.sinks.get("file")
        assert state is not None and state.lease_owner is None and state.failing_since is None
        assert [s.name for s in await r.sinks.all()] == ["file"]
