"""A batch of relinkable units run ahead of the write lock (SQLite, the batcher's held connection).

``Store.submit(unit, relinkable=True)``: when the batcher knows the head and every unit of a batch is
relinkable, the units run first with no lock held, and BEGIN IMMEDIATE, the head, the buffered rows,
the audit events (chained on the head found) and COMMIT go to the connection's thread as one job. These
tests hold it to the ordinary path's outcome: the chain is whole whoever committed in between, a moved
epoch or a unit that needs the database makes the batch run again under the lock, a unit's own error
stays its own, and a failing COMMIT leaves nothing. Another ``Store`` on the same file stands for the
other worker process (its own connections, its own gate file descriptor).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from signer.audit import verify_chain
from signer.errors import Conflict, DatabaseUnavailable
from signer.store import LedgerEntry, Store, Writer
from signer.store.internals import run_on_thread
from signer.store.tx import NeedsWriteLock
from tests.dbfixtures import fresh_store
from tests.store.store_testkit import event, principal, queued, sqlite_path

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def _chain(store: Store) -> list[tuple[int, str]]:
    async with store.read() as r:
        records = await r.audit.events()
        assert verify_chain(records, expected_head=await r.audit_head()).ok
    return [(e.seq, e.kind) for e in records]


def _in_transaction(connection: sqlite3.Connection) -> bool:
    return connection.in_transaction


class Trips:
    """Counts the jobs queued to the held connection's thread (each is one round trip)."""

    def __init__(self, store: Store) -> None:
        held = store._held
        assert held is not None
        self.connection = held[1]._connection
        self.count = 0
        original = self.connection._execute

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(fn, *args, **kwargs)

        self.connection._execute = counted


def marked(kind: str, runs: list[str] | None = None) -> Any:
    async def unit(w: Writer) -> int:
        if runs is not None:
            runs.append(kind)
        w.append_audit(event(kind))
        return w.epoch

    return unit


async def test_one_trip_per_batch_and_the_chain_stays_whole_across_two_processes(
    sqlite_store_url: str,
) -> None:
    async with (
        fresh_store(sqlite_store_url, pool_size=3) as store,
        fresh_store(sqlite_store_url, pool_size=3) as other,
    ):
        await store.submit(marked("a.first"), relinkable=True)  # the ordinary way: the head is unknown
        assert store._ahead_head is not None
        trips = Trips(store)
        await store.submit(marked("a.ahead"), relinkable=True)
        assert trips.count == 1  # BEGIN IMMEDIATE, head, rows, COMMIT: one job
        # The other process commits twice: this process's next batch is chained on its events.
        await other.submit(marked("b.one"), relinkable=True)
        await other.submit(marked("b.two"))
        await store.submit(marked("a.relinked"), relinkable=True)
        assert trips.count == 2
        await other.submit(marked("b.three"), relinkable=True)
        await store.submit(marked("a.last"), relinkable=True)
        assert trips.count == 3
        assert await _chain(store) == [
            (1, "a.first"),
            (2, "a.ahead"),
            (3, "b.one"),
            (4, "b.two"),
            (5, "a.relinked"),
            (6, "b.three"),
            (7, "a.last"),
        ]
        held = store._held
        assert held is not None
        assert not await run_on_thread(held[1]._connection, _in_transaction)


async def test_a_moved_epoch_runs_the_batch_again_on_the_facts_now(sqlite_store_url: str) -> None:
    async with (
        fresh_store(sqlite_store_url, pool_size=3) as store,
        fresh_store(sqlite_store_url, pool_size=3) as other,
    ):
        before = await store.submit(marked("first"), relinkable=True)

        async def bump(w: Writer) -> int:
            w.bump_epoch()
            w.append_audit(event("facts.changed"))
            return w.epoch

        moved = await other.submit(bump)
        assert moved == before + 1
        runs: list[str] = []
        # Run ahead on the epoch this process knew, found moved under the lock, run again on the new one.
        assert await store.submit(marked("decided", runs), relinkable=True) == moved
        assert runs == ["decided", "decided"]
        # Nothing of the first run was kept: one event.
        assert await _chain(store) == [(1, "first"), (2, "facts.changed"), (3, "decided")]
        # The next batch takes the lock first, then running ahead resumes.
        runs.clear()
        await store.submit(marked("next", runs), relinkable=True)
        await store.submit(marked("after", runs), relinkable=True)
        assert runs == ["next", "after"]
        trips = Trips(store)
        await store.submit(marked("ahead again"), relinkable=True)
        assert trips.count == 1


async def test_a_unit_that_needs_the_database_runs_under_the_lock(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url, pool_size=3) as store:
        await store.submit(marked("first"), relinkable=True)
        runs: list[str] = []

        async def reads(w: Writer) -> bool:
            runs.append("reads")
            found = await w.principals.get("nobody")
            w.append_audit(event("read"))
            return found is None

        async def swallows(w: Writer) -> tuple[int, str]:
            runs.append("swallows")
            try:
                head = w.head
            except NeedsWriteLock:
                head = (-1, "")  # a unit that catches it changes nothing: the batch runs again
            w.append_audit(event("swallowed"))
            return head

        async def writes(w: Writer) -> str:
            runs.append("writes")
            p = principal("ahead-writer")
            await w.principals.insert(p)
            w.append_audit(event("wrote"))
            return p.id

        assert await store.submit(reads, relinkable=True) is True
        assert runs == ["reads", "reads"]
        store._ahead_skip = 0  # past the back-off, so the next batch runs ahead again
        runs.clear()
        head_before = await _head(store)
        assert await store.submit(swallows, relinkable=True) == head_before  # under the lock: the true head
        assert runs == ["swallows", "swallows"]
        store._ahead_skip = 0
        runs.clear()
        created = await store.submit(writes, relinkable=True)
        assert runs == ["writes", "writes"]
        async with store.read() as r:
            assert await r.principals.get(created) is not None
        assert await _chain(store) == [(1, "first"), (2, "read"), (3, "swallowed"), (4, "wrote")]


async def _head(store: Store) -> tuple[int, str]:
    async with store.read() as r:
        return await r.audit_head()


async def test_the_back_off_doubles_with_every_miss_and_resets_after_a_success(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url, pool_size=3) as store:
        await store.submit(marked("first"), relinkable=True)

        async def reads(w: Writer) -> None:
            await w.principals.get("nobody")
            w.append_audit(event("read"))

        skips = []
        for _ in range(4):
            store._ahead_skip = 0
            await store.submit(reads, relinkable=True)
            skips.append(store._ahead_skip)
        assert skips == [1, 2, 4, 8]
        store._ahead_skip = 0
        trips = Trips(store)
        await store.submit(marked("ahead"), relinkable=True)
        assert trips.count == 1
        assert store._ahead_next_skip == 1


async def test_units_own_errors_and_buffered_rows_in_a_batch_run_ahead(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url, pool_size=3) as store:
        await store.submit(marked("first"), relinkable=True)

        def reserving(n: int, fail: bool) -> Any:
            async def unit(w: Writer) -> int:
                w.append_audit(event("sign", n=n))
                await w.ledger.reserve([LedgerEntry("limit:k", 10 + n, T0, None, f"req-{n}")])
                if fail:
                    raise Conflict("unit refuses", code="conflict")
                return n

            return unit

        trips = Trips(store)
        held = store._held
        assert held is not None
        # Hold the batcher inside one unit so that the five queue behind it and share the next batch.
        running, release = asyncio.Event(), asyncio.Event()

        async def hold(w: Writer) -> None:
            running.set()
            await release.wait()
            w.append_audit(event("held"))

        holder = asyncio.create_task(store.submit(hold, relinkable=True))
        await running.wait()
        tasks = [
            asyncio.create_task(store.submit(reserving(n, fail=n in (1, 3)), relinkable=True))
            for n in range(5)
        ]
        await queued(store, 5)
        release.set()
        await holder
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == 0 and results[2] == 2 and results[4] == 4
        assert isinstance(results[1], Conflict) and isinstance(results[3], Conflict)
        assert trips.count == 2  # the holder's batch, then the five: one job each
        assert await _chain(store) == [(1, "first"), (2, "held"), (3, "sign"), (4, "sign"), (5, "sign")]
        async with store.write() as w:
            # Only the reservations of the units that succeeded were written.
            assert await w.ledger.usage("limit:k", None, T0) == 10 + 12 + 14
            w.ledger.discard()


async def test_a_commit_that_fails_ahead_runs_the_ordinary_way_and_reports_it(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url, pool_size=3) as store:
        await store.submit(marked("first"), relinkable=True)
        path = sqlite_path(sqlite_store_url)
        runs: list[str] = []
        os.chmod(path, 0o400)
        try:
            with pytest.raises(DatabaseUnavailable):
                await store.submit(marked("refused", runs), relinkable=True)
        finally:
            os.chmod(path, 0o600)
        assert await _chain(store) == [(1, "first")]
        await store.submit(marked("after"), relinkable=True)
        assert await _chain(store) == [(1, "first"), (2, "after")]


async def test_relinkable_units_commit_on_every_backend(store: Store) -> None:
    # PostgreSQL has no held connection: relinkable units simply run under the lock.
    results = [await store.submit(marked(f"u{n}"), relinkable=True) for n in range(3)]
    assert len(results) == 3
    assert [kind for _, kind in await _chain(store)] == ["u0", "u1", "u2"]


async def test_a_full_database_during_the_one_trip_leaves_nothing_and_is_reported(
    sqlite_store_url: str,
) -> None:
    path = sqlite_path(sqlite_store_url)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    async with fresh_store(
        sqlite_store_url, pool_size=3, sqlite_pragmas={"max_page_count": pages + 12}
    ) as store:
        await store.submit(marked("first"), relinkable=True)
        committed = 1
        big = "x" * 3000
        with pytest.raises(DatabaseUnavailable) as raised:
            for n in range(10_000):

                async def unit(w: Writer, n: int = n) -> None:
                    w.append_audit(event("filler", n=n, pad=big))

                await store.submit(unit, relinkable=True)
                committed += 1
        assert raised.value.message == "database storage is full"
        assert store._ahead_next_skip > 1  # the one trip failed first, then the ordinary way reported it
        chain = await _chain(store)
        assert len(chain) == committed  # nothing half-written
        assert await store.integrity_check()


async def test_the_gate_is_taken_and_let_go_on_the_connections_thread(sqlite_store_url: str) -> None:
    # The write gate is held only inside the one job: free again by the time the caller hears back,
    # and a batch never holds it while its units run on the loop.
    gate_file = sqlite_path(sqlite_store_url) + ".write-lock"
    async with fresh_store(sqlite_store_url, pool_size=3) as store:
        await store.submit(marked("first"), relinkable=True)
        fd = os.open(gate_file, os.O_RDWR)
        try:

            def free() -> bool:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                fcntl.flock(fd, fcntl.LOCK_UN)
                return True

            seen: list[bool] = []

            async def looks(w: Writer) -> None:
                seen.append(free())  # running ahead: nobody holds the gate for this batch yet
                w.append_audit(event("ahead"))

            trips = Trips(store)
            await store.submit(looks, relinkable=True)
            assert trips.count == 1
            assert seen == [True]
            assert free()
        finally:
            os.close(fd)
        assert await _chain(store) == [(1, "first"), (2, "ahead")]


async def test_a_batch_waiting_for_a_gate_held_elsewhere_gives_up_at_the_lock_timeout(
    sqlite_store_url: str,
) -> None:
    # Another process holds the gate past the lock timeout: the batch run ahead stops waiting (its job,
    # still queued for the lock on the connection's thread, will do nothing) and turns to the ordinary
    # way, which waits as long and reports "database is busy"; nothing of it is kept. Once the other lets
    # go, the abandoned job gives the lock straight back and the next batch commits.
    gate_file = sqlite_path(sqlite_store_url) + ".write-lock"
    async with fresh_store(sqlite_store_url, pool_size=3, lock_timeout=0.3) as store:
        await store.submit(marked("first"), relinkable=True)
        fd = os.open(gate_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            runs: list[str] = []
            with pytest.raises(DatabaseUnavailable) as raised:
                await store.submit(marked("refused", runs), relinkable=True)
            assert raised.value.message == "database is busy"
            assert runs == ["refused"]  # ahead; the ordinary way never got the gate to run it again
            fcntl.flock(fd, fcntl.LOCK_UN)
            store._ahead_skip = 0
            await store.submit(marked("after"), relinkable=True)
            # Let go after the batch: another holder gets it at once.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        assert await _chain(store) == [(1, "first"), (2, "after")]


async def test_closing_the_store_does_not_wait_for_a_claim_still_queued_for_the_gate(
    sqlite_store_url: str,
) -> None:
    # The connection whose thread still waits for the gate (a claim given up on) is set aside: the next
    # batch uses another connection, and closing the store does not wait for the other holder.
    gate_file = sqlite_path(sqlite_store_url) + ".write-lock"
    fd = os.open(gate_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        async with fresh_store(sqlite_store_url, pool_size=3, lock_timeout=0.3) as store:
            await store.submit(marked("first"), relinkable=True)
            stuck = store._held
            fcntl.flock(fd, fcntl.LOCK_EX)
            with pytest.raises(DatabaseUnavailable):
                await store.submit(marked("refused"), relinkable=True)
            assert store._held is None or store._held is not stuck
            with pytest.raises(DatabaseUnavailable):
                await store.submit(marked("refused again"), relinkable=True)
            closing = asyncio.create_task(store.close())
            await asyncio.wait_for(asyncio.shield(closing), timeout=10)
        assert stuck is not None
        fcntl.flock(fd, fcntl.LOCK_UN)
        # The claim's job gets the lock, gives it back and ends; the set-aside connection is then closed.
        await asyncio.gather(*store._set_aside_releases)
    finally:
        os.close(fd)
    async with fresh_store(sqlite_store_url, pool_size=3) as store:
        assert await _chain(store) == [(1, "first")]
        await store.submit(marked("after"), relinkable=True)
        assert await _chain(store) == [(1, "first"), (2, "after")]
