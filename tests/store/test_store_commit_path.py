"""The signing commit path: buffered rows, lazy savepoints, idempotency keys and the folded ledger cache.

Every test runs on SQLite and PostgreSQL. The rows a unit buffers (audit events, reservations,
idempotency records) are written with the batch at COMMIT, so a failing unit must leave none of them,
its batch neighbours must keep all of theirs, and the ledger cache a store folds its own rows into must
stay equal to what summing the table in SQL gives.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sqlite3
import sys
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from signer.errors import AuditUnavailable, Conflict
from signer.store import IdempotencyRecord, LedgerEntry, Reader, Store, Writer
from signer.store import schema as t
from tests.dbfixtures import fresh_store
from tests.store.store_testkit import (
    POISON_KIND,
    T0,
    event,
    install_commit_poison,
    principal,
    remove_commit_poison,
    sqlite_path,
    submit_all,
)

KEY = "spend:key:k1:native"
RATE = "rate:principal:p1"


class Refused(Exception):
    pass


async def table_rows(store: Store, statement: Any) -> list[tuple[Any, ...]]:
    async with store.read() as r:
        return [tuple(row) for row in await r._all(statement)]


async def sql_sum(store: Store, limit_key: str, since: Any) -> int:
    c = t.ledger.c
    query = select(c.amount).where(c.limit_key == limit_key)
    if since is not None:
        query = query.where(c.window_start > since)
    return sum(int(a) for (a,) in await table_rows(store, query))


def idempotency(name: str, **response: Any) -> IdempotencyRecord:
    return IdempotencyRecord("prn_1", name, "d" * 64, {"name": name, **response}, T0)


def signing_unit(n: int, *, fail: str | None = None):  # type: ignore[no-untyped-def]
    """A unit shaped like the signing service's: usage, reservations, an idempotency record, an event;
    ``fail`` says after which step it raises."""

    async def unit(w: Writer) -> int:
        now = T0 + timedelta(seconds=n)
        await w.ledger.usage(KEY, now - timedelta(days=1), now)
        await w.ledger.usage(RATE, now - timedelta(seconds=60), now)
        if await w.idempotency.get("prn_1", f"idem-{n}") is not None:
            raise Conflict("replayed", code="replayed")
        w.append_audit(event("sign.transaction", n=n))
        if fail == "after_audit":
            raise Refused
        await w.ledger.reserve(
            [LedgerEntry(KEY, 1000 + n, now, None, f"req-{n}"), LedgerEntry(RATE, 1, now, None)]
        )
        await w.idempotency.insert(idempotency(f"idem-{n}", n=n))
        if fail == "after_buffering":
            raise Refused
        if fail == "after_sql_write":
            await w.principals.insert(principal(f"ghost{n}"))
            raise Refused
        if fail == "conflict":
            await w.idempotency.insert(idempotency(f"idem-{n}"))  # its own key: taken
        return n

    return unit


async def test_failing_units_in_a_large_batch_leave_nothing_and_neighbours_keep_everything(
    store: Store,
) -> None:
    modes: list[str | None] = [
        None,
        "after_audit",
        None,
        "after_buffering",
        "after_sql_write",
        None,
        "conflict",
    ]
    plan = [modes[i % len(modes)] for i in range(42)]
    writers: set[Writer] = set()

    def tracked(unit):  # type: ignore[no-untyped-def]
        async def run(w: Writer) -> Any:
            writers.add(w)
            return await unit(w)

        return run

    results = await submit_all(store, [tracked(signing_unit(n, fail=mode)) for n, mode in enumerate(plan)])
    assert len(writers) == 1  # one transaction for all 42
    good = [n for n, mode in enumerate(plan) if mode is None]
    for n, mode in enumerate(plan):
        if mode is None:
            assert results[n] == n
        elif mode == "conflict":
            assert isinstance(results[n], Conflict) and results[n].code == "idempotency_key_used"
        else:
            assert isinstance(results[n], Refused), (n, mode, results[n])

    events = await table_rows(store, select(t.audit_events.c.seq, t.audit_events.c.event))
    assert [seq for seq, _ in events] == list(range(1, len(good) + 1))
    assert [f'"n":{n}' in text for (_, text), n in zip(events, good, strict=True)] == [True] * len(good)
    ledger = await table_rows(store, select(t.ledger.c.request_id).where(t.ledger.c.limit_key == KEY))
    assert sorted(r for (r,) in ledger) == sorted(f"req-{n}" for n in good)
    keys = await table_rows(store, select(t.idempotency_keys.c.key))
    assert sorted(k for (k,) in keys) == sorted(f"idem-{n}" for n in good)
    async with store.read() as r:
        assert await r.principals.all() == []
        assert await store.integrity_check()
    # The failed units' idempotency keys stayed free.
    assert await store.submit(signing_unit(1)) == 1


async def test_units_that_only_buffer_take_no_savepoint(store: Store) -> None:
    writers: list[Writer] = []

    def unit_for(n: int, fail: str | None = None):  # type: ignore[no-untyped-def]
        inner = signing_unit(n, fail=fail)

        async def unit(w: Writer) -> Any:
            writers.append(w)
            return await inner(w)

        return unit

    results = await submit_all(store, [unit_for(0), unit_for(1, "after_buffering"), unit_for(2)])
    assert results[0] == 0 and isinstance(results[1], Refused) and results[2] == 2
    assert writers[0]._savepoints_used == 0
    results = await submit_all(store, [unit_for(3), unit_for(4, "after_sql_write"), unit_for(5)])
    assert writers[-1]._savepoints_used == 1  # only the unit that sent a write statement took one


async def test_idempotency_keys_within_a_batch_and_across_transactions(store: Store) -> None:
    async def first(w: Writer) -> None:
        await w.idempotency.insert(idempotency("k", answer=1))

    async def second(w: Writer) -> Any:
        # The first unit's record is not in the table yet, but this transaction must see it.
        seen = await w.idempotency.get("prn_1", "k")
        assert seen is not None and seen.response == {"name": "k", "answer": 1}
        await w.idempotency.insert(idempotency("k", answer=2))

    async def buffers_then_fails(w: Writer) -> None:
        await w.idempotency.insert(idempotency("k2", answer="lost"))
        raise Refused

    async def takes_the_freed_key(w: Writer) -> Any:
        assert await w.idempotency.get("prn_1", "k2") is None
        await w.idempotency.insert(idempotency("k2", answer="kept"))

    results = await submit_all(store, [first, second, buffers_then_fails, takes_the_freed_key])
    assert results[0] is None and results[3] is None
    assert isinstance(results[1], Conflict) and results[1].code == "idempotency_key_used"
    assert isinstance(results[2], Refused)

    async with store.read() as r:
        k = await r.idempotency.get("prn_1", "k")
        k2 = await r.idempotency.get("prn_1", "k2")
    assert k is not None and k.response == {"name": "k", "answer": 1} and k.created_at == T0
    assert k2 is not None and k2.response == {"name": "k2", "answer": "kept"}

    async def later(w: Writer) -> Any:
        found = await w.idempotency.get("prn_1", "k")
        assert found == k
        await w.idempotency.insert(idempotency("k"))

    try:
        await store.submit(later)
    except Conflict as exc:
        assert exc.code == "idempotency_key_used"
    else:
        raise AssertionError("a committed key was taken again")


async def test_two_stores_keep_folded_caches_equal_to_sql_sums(store_url: str) -> None:
    rng = random.Random(5)
    windows = [timedelta(seconds=5), timedelta(seconds=30), None]
    async with fresh_store(store_url) as one, fresh_store(store_url) as two:
        now = T0
        for step in range(30):
            now += timedelta(seconds=rng.choice([0, 1, 2, 4, -3]))
            store = (one, two)[rng.randrange(2)]
            units = []
            for _ in range(rng.randint(1, 4)):
                entries = [
                    LedgerEntry(rng.choice([KEY, RATE]), rng.choice([1, 7, 2**100]), now, None)
                    for _ in range(rng.randint(0, 3))
                ]
                fail = rng.random() < 0.25

                async def unit(w: Writer, entries=entries, fail=fail, now=now) -> None:  # type: ignore[no-untyped-def]
                    for key in (KEY, RATE):
                        for window in windows:
                            await w.ledger.usage(key, None if window is None else now - window, now)
                    await w.ledger.reserve(entries)
                    w.append_audit(event(now=now.isoformat()))
                    if fail:
                        raise Refused

                units.append(unit)
            await asyncio.gather(*(store.submit(u) for u in units), return_exceptions=True)

            (newest,) = (await table_rows(store, select(func.max(t.ledger.c.id))))[0]
            # The store that just committed folded its own rows in: nothing new for its next sync.
            assert store.ledger_cache.last_id == int(newest or 0), step
            for s in (one, two):
                for key in (KEY, RATE):
                    entry = s.ledger_cache.keys.get(key)
                    if entry is None or s.ledger_cache.last_id != int(newest or 0):
                        continue
                    for window in windows:
                        since = (
                            entry.horizon
                            if window is None
                            else max(now - window, entry.horizon or now - window)
                        )
                        assert entry.sum_after(since) == await sql_sum(s, key, since), (step, key, window)

            # And what each store's writer answers is the exact SQL sum, whoever wrote last.
            async def read(w: Writer, now=now) -> dict[Any, int]:  # type: ignore[no-untyped-def]
                return {
                    (key, window): await w.ledger.usage(key, None if window is None else now - window, now)
                    for key in (KEY, RATE)
                    for window in windows
                }

            for s in (one, two):
                seen = await s.submit(read)
                for (key, window), value in seen.items():
                    assert value == await sql_sum(s, key, None if window is None else now - window)


async def test_a_failed_commit_folds_nothing(store_url: str) -> None:
    await install_commit_poison(store_url)
    try:
        async with fresh_store(store_url) as store:

            async def reserve(w: Writer, kind: str = "test.event") -> None:
                await w.ledger.usage(KEY, None, T0)
                await w.ledger.reserve([LedgerEntry(KEY, 5, T0, None)])
                w.append_audit(event(kind))

            await store.submit(reserve)
            before = store.ledger_cache.last_id

            async def poisoned(w: Writer) -> None:
                await reserve(w, POISON_KIND)

            results = await submit_all(store, [reserve, poisoned])
            assert all(isinstance(r, AuditUnavailable) for r in results), results
            assert store.ledger_cache.last_id == before
            assert store.ledger_cache.keys[KEY].sum_after(None) == 5 == await sql_sum(store, KEY, None)

            async def read(w: Writer) -> int:
                return await w.ledger.usage(KEY, None, T0)

            assert await store.submit(read) == 5
    finally:
        await remove_commit_poison(store_url)


async def test_sqlite_a_stale_commit_hint_cannot_skip_a_needed_commit(sqlite_store_url: str) -> None:
    # The flush sends COMMIT itself and tells the connection that SQLAlchemy's commit() has nothing
    # left to do; any later statement must clear that, or a transaction could be left uncommitted.
    async with fresh_store(sqlite_store_url) as store:

        async def unit(w: Writer) -> None:
            w.append_audit(event("test.committed_in_flush"))

        await store.submit(unit)
        conn = await store._checkout(store._write_engine)
        try:
            driver_connection = (await conn.get_raw_connection()).driver_connection
            driver_connection.committed = True  # as if a flush had just committed
            await conn.begin()
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.exec_driver_sql("INSERT INTO meta (name, value) VALUES ('hint', 'kept')")
            await conn.commit()
        finally:
            await store._release(conn)
        # Seen from another connection (the pool may hand back the same one, which sees its own writes).
        other = sqlite3.connect(sqlite_path(sqlite_store_url))
        try:
            assert other.execute("SELECT value FROM meta WHERE name = 'hint'").fetchall() == [("kept",)]
            assert other.execute("SELECT kind FROM audit_events").fetchall() == [("test.committed_in_flush",)]
        finally:
            other.close()


async def test_finished_transactions_leave_no_cycle_for_the_garbage_collector(store: Store) -> None:
    """A writer, its table families and the rows they buffered, and a reader, are freed by reference
    counting once their transaction is over: left in a cycle, every batch's would wait for a collection,
    which then stalls the worker's event loop for milliseconds."""
    for n in range(3):
        await store.submit(signing_unit(n))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(3, 8):
            await store.submit(signing_unit(n))

        async def appends(w: Writer) -> None:
            w.append_audit(event("appended"))

        for _ in range(5):
            # On SQLite the batcher's batches of these run ahead of the write lock (Store._run_ahead).
            await store.submit(appends, relinkable=True)
        async with store.write() as w:
            await w.principals.insert(principal("cycle"))
            w.append_audit(event("principal.created", n=99))
        async with store.read() as r:
            assert [p.name for p in await r.principals.all()] == ["cycle"]
        gc.collect()
        left = sorted({type(o).__name__ for o in gc.garbage if isinstance(o, (Reader, Writer))})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


async def test_sqlite_checkpoints_the_wal_beside_the_commits(sqlite_store_url: str) -> None:
    """With SQLite's own checkpoint off, the store's passive one still copies committed pages back into
    the database file every few dozen batches (64), outside any COMMIT."""
    async with fresh_store(sqlite_store_url, sqlite_pragmas={"wal_autocheckpoint": 0}) as store:
        for n in range(70):
            await store.submit(signing_unit(n))
        task = store._wal_checkpoint
        assert task is not None
        await task
        # The WAL index's checkpoint info: nBackfill, the frames already copied into the database.
        with open(sqlite_path(sqlite_store_url) + "-shm", "rb") as shm:
            header = shm.read(100)
        assert int.from_bytes(header[96:100], sys.byteorder) > 0
        async with store.read() as r:
            assert [seq for seq, *_ in await r.audit.chain_slice(0, 100)] == list(range(1, 71))
