"""The write transaction on both backends: timestamps, validation before writing, rollback, what a writer
and a reader see, a swallowed failed statement, and the facts epoch shared through the database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from signer.audit import format_at, parse_at
from signer.errors import Conflict, NotFound
from signer.store import Store, Writer
from tests.store.store_testkit import event, grant, key, principal, token


async def test_timestamps_are_aware_utc_and_exact(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=plus_two)
    alice = principal("alice", created_at=local)
    async with store.write() as w:
        await w.principals.insert(alice)
    async with store.read() as r:
        got = await r.principals.get(alice.id)
    assert got is not None
    assert got.created_at == local and got.created_at.tzinfo == UTC
    assert got.created_at.hour == 10 and got.created_at.microsecond == 999999


@pytest.mark.parametrize(
    "bad",
    [
        lambda w: w.principals.insert(principal(created_at=datetime(2026, 1, 1))),  # naive
        lambda w: w.principals.insert(principal(role="root")),
        lambda w: w.principals.insert(principal(name="")),
        lambda w: w.tokens.insert(token("prn_x", digest=b"short")),
        lambda w: w.tokens.insert(token("prn_x", kind="session")),
        lambda w: w.keys.insert(key(state="lost")),
        lambda w: w.grants.insert(grant("prn_x", "k", resource_type="")),
        lambda w: w.grants.insert(grant("prn_x", "k", operations="sign")),
        lambda w: w.tokens.revoke("tok", datetime(2026, 1, 1)),
        lambda w: w.grants.active("p", "key", "k", datetime(2026, 1, 1)),
    ],
)
async def test_validation_refuses_before_writing(store: Store, bad) -> None:  # type: ignore[no-untyped-def]
    async with store.write() as w:
        with pytest.raises(ValueError):
            await bad(w)
        # A refused call did not reach the database: the transaction is still fine.
        await w.principals.insert(principal("after"))
    async with store.read() as r:
        assert [p.name for p in await r.principals.all()] == ["after"]


async def test_write_rolls_back_on_exception(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.write() as w:
            await w.principals.insert(principal("ghost"))
            w.append_audit(event())
            w.bump_epoch()
            raise Boom
    async with store.read() as r:
        assert await r.principals.all() == []
        assert await r.audit_head() == (0, "0" * 64)
        assert await r.epoch() == 0
        assert await r.audit.events() == []


async def test_writer_sees_its_own_writes_and_readers_do_not(store: Store) -> None:
    alice = principal("alice")
    async with store.write() as w:
        await w.principals.insert(alice)
        assert await w.principals.get(alice.id) == alice
        record = w.append_audit(event())
        assert w.head == (1, record.hash)
        assert await w.audit_head() == (1, record.hash)
        async with store.read() as r:
            assert await r.principals.get(alice.id) is None
            assert await r.audit_head() == (0, "0" * 64)
    async with store.read() as r:
        assert await r.principals.get(alice.id) == alice
        assert await r.audit_head() == (1, record.hash)


async def test_an_event_at_is_its_written_text_read_back(store: Store) -> None:
    # append_audit computes the record's instant instead of parsing format_at's text back: the two agree
    # for any zone, a leap day, microseconds and the edges of the years format_at writes in full; a year
    # before 1000 (strftime's text, unpadded on glibc) is accepted or refused as that parse decides.
    instants = [
        datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2))),
        datetime(2028, 2, 29, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-11, minutes=-30))),
        datetime(1000, 1, 1, 0, 0, 0, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    ]
    async with store.write() as w:
        for at in instants:
            record = w.append_audit(event(at=at))
            assert record.at == parse_at(format_at(at)) == at and record.at.tzinfo == UTC
            assert json.loads(record.event)["at"] == format_at(at)
        early = datetime(999, 12, 31, 23, 0, tzinfo=UTC)
        try:
            expected = parse_at(format_at(early))
        except ValueError:
            with pytest.raises(ValueError):
                w.append_audit(event(at=early))
        else:
            assert w.append_audit(event(at=early)).at == expected
        with pytest.raises(ValueError):
            w.append_audit(event(at=datetime(2026, 1, 1)))  # naive


async def test_writer_with_a_swallowed_failed_statement_refuses_to_commit(store: Store) -> None:
    with pytest.raises(Conflict):
        async with store.write() as w:
            await w.principals.insert(principal("alice"))
            try:
                await w.tokens.insert(token("prn_missing"))
            except NotFound:
                pass  # swallowed: the writer must still refuse to commit
    async with store.read() as r:
        assert await r.principals.all() == []


async def test_epoch_is_shared_through_the_database(store_url: str) -> None:
    from tests.dbfixtures import fresh_store

    async with fresh_store(store_url) as a, fresh_store(store_url) as b:

        async def bump(w: Writer) -> int:
            return w.bump_epoch()

        assert await a.submit(bump) == 1
        assert await b.submit(bump) == 2
        async with a.read() as r:
            assert await r.epoch() == 2
