"""Group commit and the audit chain: gapless sequences, isolation of failing units, failing commits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signer.audit import GENESIS_HASH, export_jsonl, verify_chain, verify_jsonl
from signer.errors import AuditUnavailable, Conflict, NotFound, SignerError
from signer.store import AuditRecord, Store, Writer
from tests.dbfixtures import fresh_store
from tests.store.store_testkit import (
    POISON_KIND,
    T0,
    Gate,
    event,
    install_commit_poison,
    principal,
    queued,
    remove_commit_poison,
    submit_all,
    token,
)


async def all_events(store: Store) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    async with store.read() as r:
        while True:
            page = await r.audit.events(after_seq=records[-1].seq if records else 0, limit=97)
            if not page:
                return records
            records.extend(page)


async def assert_chain(store: Store, count: int) -> list[AuditRecord]:
    records = await all_events(store)
    assert [r.seq for r in records] == list(range(1, count + 1))
    async with store.read() as r:
        head = await r.audit_head()
    result = verify_chain(records, expected_head=head)
    assert result.ok, result
    assert result.checked == count
    assert verify_jsonl(export_jsonl(records), expected_head=head).ok
    assert await store.integrity_check()
    return records


def appender(kind: str = "test.event", **fields: Any):  # type: ignore[no-untyped-def]
    async def unit(w: Writer) -> AuditRecord:
        return w.append_audit(event(kind, **fields))

    return unit


async def test_chain_across_many_sequential_writes(store: Store) -> None:
    returned = []
    for i in range(40):
        returned.append(await store.submit(appender(n=i, request_id=f"req-{i}")))
    async with store.write() as w:
        w.append_audit(event("test.direct"))
        w.append_audit(event("test.direct"))
    records = await assert_chain(store, 42)
    assert records[:40] == returned  # what append_audit returned is exactly what was committed
    assert records[0].prev_hash == GENESIS_HASH
    assert records[7].request_id == "req-7" and records[7].kind == "test.event"


async def test_submit_returns_only_after_commit(store: Store) -> None:
    alice = principal("alice")

    async def unit(w: Writer) -> str:
        await w.principals.insert(alice)
        w.append_audit(event("principal.create"))
        return alice.id

    assert await store.submit(unit) == alice.id
    # A different connection sees it at once: the await returned after COMMIT, not before.
    async with store.read() as r:
        assert await r.principals.get(alice.id) == alice


async def test_200_concurrent_submits_make_one_gapless_chain(store: Store) -> None:
    writers: list[Writer] = []

    def unit_for(i: int):  # type: ignore[no-untyped-def]
        async def unit(w: Writer) -> int:
            writers.append(w)
            return w.append_audit(event(n=i)).seq

        return unit

    seqs = await asyncio.gather(*(store.submit(unit_for(i)) for i in range(200)))
    assert sorted(seqs) == list(range(1, 201))
    records = await assert_chain(store, 200)
    # Every caller got the seq of its own event.
    by_seq = {r.seq: r for r in records}
    assert all(f'"n":{i}' in by_seq[seq].event for i, seq in enumerate(seqs))
    assert len(set(writers)) < 200  # units shared transactions: group commit happened


async def test_a_failing_unit_does_not_poison_its_batch(store: Store) -> None:
    class Refused(Exception):
        pass

    good = [principal(f"good{i}") for i in range(3)]
    writers: set[Writer] = set()

    def ok(p):  # type: ignore[no-untyped-def]
        async def unit(w: Writer) -> str:
            writers.add(w)
            await w.principals.insert(p)
            w.append_audit(event("principal.create", name=p.name))
            return p.name

        return unit

    async def raises_after_writing(w: Writer) -> None:
        writers.add(w)
        await w.principals.insert(principal("ghost"))
        w.append_audit(event("principal.create", name="ghost"))
        w.bump_epoch()
        raise Refused

    async def store_conflict(w: Writer) -> None:
        writers.add(w)
        await w.principals.insert(principal("ghost2"))
        w.append_audit(event("principal.create", name="ghost2"))
        await w.principals.insert(principal("good0"))  # name taken by an earlier unit of this batch

    async def swallows_failed_statement(w: Writer) -> str:
        writers.add(w)
        await w.principals.insert(principal("ghost3"))
        try:
            await w.tokens.insert(token("prn_missing"))
        except NotFound:
            pass
        w.append_audit(event("token.issue"))
        return "pretends to be fine"

    async def bad_event(w: Writer) -> None:
        writers.add(w)
        w.append_audit({"kind": "x", "at": T0, "amount": 1.5})

    results = await submit_all(
        store,
        [
            ok(good[0]),
            raises_after_writing,
            ok(good[1]),
            store_conflict,
            swallows_failed_statement,
            bad_event,
            ok(good[2]),
        ],
    )
    assert len(writers) == 1  # all seven ran in one transaction
    assert results[0] == "good0" and results[2] == "good1" and results[6] == "good2"
    assert isinstance(results[1], Refused)
    assert isinstance(results[3], Conflict) and results[3].code == "principal_exists"
    assert isinstance(results[4], SignerError)  # the swallowed failure comes back to its caller
    assert isinstance(results[5], ValueError)
    async with store.read() as r:
        assert [p.name for p in await r.principals.all()] == ["good0", "good1", "good2"]
        assert await r.epoch() == 0  # the failing unit's bump was dropped with it
    records = await assert_chain(store, 3)
    assert ['"name":"good0"' in records[0].event, '"name":"good2"' in records[2].event] == [True, True]


async def test_batches_respect_batch_max(store_url: str) -> None:
    async with fresh_store(store_url, batch_max=3) as store:
        writers: list[Writer] = []

        async def unit(w: Writer) -> None:
            writers.append(w)
            w.append_audit(event())

        results = await submit_all(store, [unit] * 10)
        assert results == [None] * 10
        sizes = [writers.count(x) for x in dict.fromkeys(writers)]
        assert sizes == [3, 3, 3, 1]
        await assert_chain(store, 10)


async def test_many_writing_units_in_one_batch(store: Store) -> None:
    # On PostgreSQL a batch stops after 60 writing units (subtransaction cache); SQLite takes them all.
    writers: list[Writer] = []

    def unit_for(i: int):  # type: ignore[no-untyped-def]
        async def unit(w: Writer) -> None:
            writers.append(w)
            await w.principals.insert(principal(f"p{i:03d}"))
            w.append_audit(event(n=i))

        return unit

    results = await submit_all(store, [unit_for(i) for i in range(130)])
    assert results == [None] * 130
    sizes = [writers.count(x) for x in dict.fromkeys(writers)]
    assert sizes == ([60, 60, 10] if store.backend == "postgresql" else [130])
    records = await assert_chain(store, 130)
    assert all(f'"n":{i}' in records[i].event for i in range(130))  # order of submission kept
    async with store.read() as r:
        assert len(await r.principals.all()) == 130


async def test_two_stores_on_one_database_make_one_chain(store_url: str) -> None:
    async with fresh_store(store_url) as a, fresh_store(store_url) as b:

        def unit_for(tag: str, i: int):  # type: ignore[no-untyped-def]
            async def unit(w: Writer) -> int:
                await w.principals.insert(principal(f"{tag}{i:03d}"))
                return w.append_audit(event(store=tag, n=i)).seq

            return unit

        seqs = await asyncio.gather(
            *(store.submit(unit_for(tag, i)) for i in range(100) for tag, store in (("a", a), ("b", b)))
        )
        assert sorted(seqs) == list(range(1, 201))
        await assert_chain(a, 200)
        async with b.read() as r:
            assert len(await r.principals.all()) == 200


async def test_a_failing_commit_fails_every_unit_and_keeps_nothing(store_url: str) -> None:
    await install_commit_poison(store_url)
    try:
        async with fresh_store(store_url) as store:
            await store.submit(appender("test.before"))

            async def writes(w: Writer) -> None:
                await w.principals.insert(principal("lost"))
                w.append_audit(event("principal.create"))
                w.bump_epoch()

            results = await submit_all(store, [appender(), writes, appender(POISON_KIND), appender()])
            assert all(isinstance(r, AuditUnavailable) for r in results), results
            async with store.read() as r:
                assert await r.principals.all() == []
                assert await r.epoch() == 0
            await assert_chain(store, 1)
            # The store carries on: the next batch (without poison) commits normally.
            await store.submit(appender("test.after"))
            records = await assert_chain(store, 2)
            assert records[1].kind == "test.after"
    finally:
        await remove_commit_poison(store_url)


async def test_a_cancelled_caller_is_dropped_before_its_unit_runs(store: Store) -> None:
    ran: list[str] = []

    def unit_for(name: str):  # type: ignore[no-untyped-def]
        async def unit(w: Writer) -> None:
            ran.append(name)
            w.append_audit(event(name=name))

        return unit

    gate = Gate()
    await gate.hold(store)
    kept = asyncio.create_task(store.submit(unit_for("kept")))
    dropped = asyncio.create_task(store.submit(unit_for("dropped")))
    await queued(store, 2)
    dropped.cancel()
    await gate.release()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert ran == ["kept"]
    await assert_chain(store, 1)


async def test_submit_after_close_is_refused(store_url: str) -> None:
    store = await fresh_store(store_url).__aenter__()
    await store.submit(appender())
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(SignerError) as refused:
        await store.submit(appender())
    assert refused.value.code == "db_unavailable"


async def test_close_finishes_queued_units(store_url: str) -> None:
    store = await fresh_store(store_url).__aenter__()
    try:
        tasks = [asyncio.create_task(store.submit(appender(n=i))) for i in range(20)]
        await queued(store, 20)
    finally:
        await store.close()
    assert sorted(await asyncio.gather(*tasks), key=lambda r: r.seq)[-1].seq == 20


async def test_event_text_roundtrips_through_the_database(store: Store) -> None:
    nasty = 'line1\r\nline2\x1b[31mred\x1b[0m \u2028 \u202e evil "quote" \\ {} \u00e9\U0001f600 \x00'
    record = await store.submit(appender("test.text", label=nasty, big=2**255, neg=-(2**70)))
    (stored,) = await assert_chain(store, 1)
    assert stored == record
    assert "\n" not in stored.event and "\x1b" not in stored.event and stored.event.isascii()
    import json

    body = json.loads(stored.event)
    assert body["label"] == nasty and body["big"] == 2**255 and body["neg"] == -(2**70)
    (line,) = list(export_jsonl([stored]))
    assert line.endswith("\n") and line.count("\n") == 1


async def test_append_audit_validates_the_event(store: Store) -> None:
    bad_events: list[Any] = [
        {"at": T0},  # no kind
        {"kind": "", "at": T0},
        {"kind": "x"},  # no at
        {"kind": "x", "at": "2026-01-01T00:00:00"},  # naive
        {"kind": "x", "at": "2026-01-01T00:00:00+02:00"},  # not UTC
        {"kind": "x", "at": T0, "request_id": 7},
        {"kind": "x", "at": T0, "nan": float("nan")},
        {"kind": "x", "at": T0, 1: "int key"},
        {"kind": "x", "at": T0, "obj": object()},
        ["not", "a", "mapping"],
    ]
    for bad in bad_events:
        async with store.write() as w:
            with pytest.raises(ValueError):
                w.append_audit(bad)
            assert w.head == (0, GENESIS_HASH)
    ok = await store.submit(appender(at="2026-01-02T03:04:05Z"))
    assert ok.at == T0.replace(microsecond=0)
    await assert_chain(store, 1)


async def test_dropped_tail_is_detected(store: Store, store_url: str) -> None:
    for i in range(10):
        await store.submit(appender(n=i))
    async with store.read() as r:
        anchor = await r.audit_head()  # what a checkpoint outside the database would hold
    if store.backend == "sqlite":
        import sqlite3

        from tests.store.store_testkit import sqlite_path

        connection = sqlite3.connect(sqlite_path(store_url))
        with connection:
            connection.execute("DELETE FROM audit_events WHERE seq > 7")
        connection.close()
    else:
        from tests.dbfixtures import pg_execute

        await pg_execute(store_url, "DELETE FROM audit_events WHERE seq > 7")
    records = await all_events(store)
    assert verify_chain(records).ok  # the chain alone cannot see a cut tail...
    result = verify_chain(records, expected_head=anchor)  # ...an anchor can
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 8, "truncated")
    assert not await store.integrity_check()  # and the head no longer matches the table


async def test_a_unit_cannot_submit_and_a_finished_writer_cannot_append(store: Store) -> None:
    async def nested(w: Writer) -> None:
        await store.submit(appender())

    with pytest.raises(RuntimeError):
        await asyncio.wait_for(store.submit(nested), 60)  # an error, not a deadlock

    kept: list[Writer] = []

    async def leaks(w: Writer) -> None:
        kept.append(w)

    await store.submit(leaks)
    async with store.write() as w:
        kept.append(w)
    for writer in kept:
        with pytest.raises(RuntimeError):
            writer.append_audit(event())  # would never be written: refused loudly
        with pytest.raises(RuntimeError):
            writer.bump_epoch()
        with pytest.raises(RuntimeError):
            await writer.principals.get("x")
    await store.submit(appender())
    await assert_chain(store, 1)


async def test_one_pooled_connection_is_clean_after_every_way_a_transaction_ends(store_url: str) -> None:
    # With a single pooled connection every transaction reuses the one the previous left behind: a
    # skipped ROLLBACK or COMMIT that was still needed would leave it inside a transaction, and the
    # next BEGIN, or the next read's snapshot, would show it.
    async with fresh_store(store_url, pool_size=1) as store:

        async def ok(w: Writer) -> int:
            return w.append_audit(event(n=1)).seq

        async def fails(w: Writer) -> None:
            w.append_audit(event(n=99))
            raise Conflict("unit refuses", code="conflict")

        assert await store.submit(ok) == 1
        with pytest.raises(Conflict):
            await store.submit(fails)
        with pytest.raises(RuntimeError):
            async with store.write() as w:
                w.append_audit(event(n=98))
                raise RuntimeError("caller fails")
        async with store.read() as r:
            assert [e.seq for e in await r.audit.events()] == [1]
        assert await store.submit(ok) == 2
        async with store.write() as w:
            w.append_audit(event(n=3))
        async with store.read() as r:
            records = await r.audit.events()
            assert [e.seq for e in records] == [1, 2, 3]
            assert verify_chain(records, expected_head=await r.audit_head()).ok
