"""Faults: the database goes away and comes back (F-06), fills up (F-09), the pool runs dry (L-10)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

from signer.audit import verify_chain
from signer.errors import DatabaseUnavailable, SignerError
from signer.store import Store, Writer, open_store
from tests.dbfixtures import fresh_store, pg_execute, sqlite_url
from tests.store.store_testkit import TcpProxy, event, principal, sqlite_path

R = TypeVar("R")

# A guard against hangs only (generous, never a measurement): every bounded wait here is well under it.
HANG_GUARD = 60


async def unavailable(awaitable: Awaitable[Any]) -> DatabaseUnavailable:
    with pytest.raises(DatabaseUnavailable) as caught:
        await asyncio.wait_for(awaitable, HANG_GUARD)
    return caught.value


async def read_something(store: Store) -> int:
    async with store.read() as r:
        return await r.epoch()


async def append(store: Store, **fields: Any) -> int:
    async def unit(w: Writer) -> int:
        return w.append_audit(event(**fields)).seq

    return await asyncio.wait_for(store.submit(unit), HANG_GUARD)


async def chain_ok(store: Store, count: int) -> None:
    async with store.read() as r:
        records = await r.audit.events(limit=10_000)
        head = await r.audit_head()
    assert [r.seq for r in records] == list(range(1, count + 1))
    assert verify_chain(records, expected_head=head).ok
    assert await store.integrity_check()


def assert_no_leak(error: SignerError, *secrets_: str) -> None:
    text = f"{error} {error.message} {error.extra}"
    for secret in secrets_:
        assert secret not in text


# -- F-06: PostgreSQL ------------------------------------------------------------------------------


async def terminate_store_backends(url: str) -> int:
    rows = await pg_execute(
        url,
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'signer'",
    )
    return int(rows[0]["n"])


async def test_pg_terminated_connections_recover_on_the_next_call(pg_store_url: str) -> None:
    async with fresh_store(pg_store_url) as store:
        await _terminated_recover(store, pg_store_url)


async def _terminated_recover(store: Store, store_url: str) -> None:
    await append(store, n=1)
    async with store.read() as r1, store.read() as r2:  # two pooled connections
        await r1.epoch()
        await r2.epoch()
    assert await terminate_store_backends(store_url) >= 2
    # Pre-ping notices the dead connections on checkout and replaces them: no error reaches anyone.
    await store.ping()
    assert await read_something(store) == 0
    await append(store, n=2)
    await chain_ok(store, 2)


async def test_pg_connection_killed_inside_a_write_keeps_nothing(pg_store_url: str) -> None:
    async with fresh_store(pg_store_url) as store:
        await _killed_inside_write(store, pg_store_url)


async def _killed_inside_write(store: Store, store_url: str) -> None:
    await append(store, n=1)
    with pytest.raises(DatabaseUnavailable):
        async with store.write() as w:
            await w.principals.insert(principal("lost"))
            w.append_audit(event(n=2))
            assert await terminate_store_backends(store_url) == 1
    async with store.read() as r:
        assert await r.principals.all() == []
    await append(store, n=2)
    await chain_ok(store, 2)


async def test_pg_server_down_then_back(pg_store_url: str) -> None:
    target = make_url(pg_store_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    via_proxy = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        async with fresh_store(via_proxy, pool_timeout=2.0) as store:
            await append(store, n=1)
            await proxy.stop()
            for error in (
                await unavailable(store.ping()),
                await unavailable(read_something(store)),
                await unavailable(append(store, n=2)),
            ):
                assert_no_leak(error, str(proxy.port), target.database or "", "127.0.0.1")
            # Nothing was signed while down; once the server is back, the same store just works.
            await proxy.start()
            await store.ping()
            await append(store, n=2)
            await chain_ok(store, 2)
    finally:
        with contextlib.suppress(AssertionError):
            await proxy.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_pg_refused_connection_is_unavailable_without_a_hang() -> None:
    port = closed_port()
    url = f"postgresql+asyncpg://signer:hunter2@127.0.0.1:{port}/signer_secret_db"
    error = await unavailable(open_store(url, pool_timeout=1.0))
    assert_no_leak(error, "hunter2", "signer_secret_db", str(port))
    store = await open_store(url, pool_timeout=1.0, check_schema=False)
    try:
        await unavailable(store.ping())
        await unavailable(append(store))
    finally:
        await store.close()


# -- F-06: SQLite ------------------------------------------------------------------------------------


async def test_sqlite_directory_removed_then_restored(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url) as store:
        await _sqlite_directory_removed_then_restored(store, sqlite_store_url)


async def _sqlite_directory_removed_then_restored(store: Store, store_url: str) -> None:
    db = Path(sqlite_path(store_url))
    await append(store, n=1)
    moved = db.parent.with_name("moved-away")
    db.parent.rename(moved)
    try:
        for error in (
            await unavailable(store.ping()),
            await unavailable(read_something(store)),
            await unavailable(append(store, n=2)),
        ):
            assert_no_leak(error, str(db.parent), db.name)
        assert not db.exists()  # and no empty database was created in its place
    finally:
        moved.rename(db.parent)
    await append(store, n=2)
    await chain_ok(store, 2)


async def test_sqlite_file_replaced_by_a_restored_copy(sqlite_store_url: str, tmp_path: Path) -> None:
    async with fresh_store(sqlite_store_url) as store:
        await _file_replaced(store, sqlite_store_url, tmp_path)


async def _file_replaced(store: Store, store_url: str, tmp_path: Path) -> None:
    db = Path(sqlite_path(store_url))
    await append(store, n=1)
    backup = tmp_path / "backup.db"
    source = sqlite3.connect(db)
    with contextlib.closing(source), contextlib.closing(sqlite3.connect(backup)) as copy:
        source.backup(copy)
    shutil.rmtree(db.parent)
    await unavailable(append(store, n=2))
    db.parent.mkdir()
    shutil.copyfile(backup, db)  # a different file now: pooled connections to the old one are dropped
    await append(store, n=2)
    await chain_ok(store, 2)


async def test_sqlite_read_only_file_refuses_writes_and_serves_reads(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url) as store:
        await _sqlite_read_only_file_refuses_writes_and_serves_reads(store, sqlite_store_url)


async def _sqlite_read_only_file_refuses_writes_and_serves_reads(store: Store, store_url: str) -> None:
    db = Path(sqlite_path(store_url))
    await append(store, n=1)
    mode = db.stat().st_mode
    db.chmod(0o444)
    try:
        error = await unavailable(append(store, n=2))
        assert error.message == "database is read-only"
        with pytest.raises(DatabaseUnavailable):
            async with store.write():
                pass
        assert await read_something(store) == 0  # reads keep working
    finally:
        db.chmod(mode)
    await append(store, n=2)
    await chain_ok(store, 2)


def chattr(flag: str, *paths: Path) -> bool:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


async def test_sqlite_immutable_file_heals_once_writable(sqlite_store_url: str) -> None:
    """``chattr +i`` (binds root too): writes and the write probe fail; reads opened meanwhile get
    connections SQLite silently made read-only; once the file is writable again every write commits."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    async with fresh_store(sqlite_store_url, pool_size=4) as store:
        db = Path(sqlite_path(sqlite_store_url))
        await append(store, n=1)
        files = [db, db.with_name(db.name + "-wal")]
        if not chattr("+i", *files):
            pytest.skip("this filesystem (or user) cannot set the immutable attribute")
        try:
            await unavailable(append(store, n=2))
            await unavailable(store.probe_write())
            held = asyncio.Event()

            async def hold_a_connection() -> None:
                async with store.read() as reader:
                    await reader.epoch()
                    await held.wait()

            readers = [asyncio.create_task(hold_a_connection()) for _ in range(4)]
            while store.pool_status()[0] < 4 and not any(r.done() for r in readers):  # one connection each
                await asyncio.sleep(0)
            held.set()
            await asyncio.gather(*readers)
        finally:
            assert chattr("-i", *files)
        for n in range(3, 12):  # more than the pool: every pooled connection is used for a write
            await append(store, n=n)
        await store.probe_write()
        await chain_ok(store, 10)


async def test_sqlite_missing_file_is_never_created(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "nowhere" / "signer.db")
    error = await unavailable(open_store(url))
    assert_no_leak(error, str(tmp_path), "signer.db")
    assert not (tmp_path / "nowhere").exists()


# -- F-09: disk full ---------------------------------------------------------------------------------


async def fill_until_full(store: Store) -> tuple[int, DatabaseUnavailable]:
    committed = 0
    for i in range(2000):
        try:
            await append(store, n=i, padding="x" * 6000)
        except DatabaseUnavailable as exc:
            return committed, exc
        committed += 1
    raise AssertionError("the database never filled up")


async def test_sqlite_full_database_fails_closed_and_stays_intact(sqlite_store_url: str) -> None:
    store_url = sqlite_store_url
    path = sqlite_path(store_url)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    async with fresh_store(store_url, sqlite_pragmas={"max_page_count": pages + 12}) as store:
        committed, error = await fill_until_full(store)
        assert committed >= 1 and error.message == "database storage is full"
        await chain_ok(store, committed)  # integrity_check ok; nothing half-written
        assert await read_something(store) == 0
    async with fresh_store(store_url) as store:  # space again: the chain continues where it stopped
        await append(store, n=-1)
        await chain_ok(store, committed + 1)


@contextlib.asynccontextmanager
async def tiny_filesystem(where: Path) -> AsyncIterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_sqlite_real_enospc(sqlite_store_url: str, tmp_path: Path) -> None:
    store_url = sqlite_store_url
    async with tiny_filesystem(tmp_path / "small") as small:
        db = small / "signer.db"
        shutil.copyfile(sqlite_path(store_url), db)
        async with fresh_store(sqlite_url(db)) as store:
            committed, error = await fill_until_full(store)
            assert committed >= 1
            assert error.code == "db_unavailable"
            await chain_ok(store, committed)
        os.remove(db)


# -- L-10: pool and lock exhaustion ------------------------------------------------------------------


async def test_exhausted_pool_is_a_bounded_wait_and_the_loop_stays_responsive(store_url: str) -> None:
    async with fresh_store(store_url, pool_size=1, pool_timeout=0.3) as store:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        try:
            async with store.write() as w:  # holds the only connection
                w.append_audit(event(n=1))
                errors = await asyncio.gather(
                    unavailable(read_something(store)),
                    unavailable(append(store, n=2)),
                    unavailable(store.ping()),
                )
            assert {e.message for e in errors} == {"timed out waiting for a database connection"}
            assert ticks > 0  # other coroutines ran while the callers waited
        finally:
            stop.set()
            await ticking
        await append(store, n=2)
        await chain_ok(store, 2)


async def test_a_held_write_lock_is_a_bounded_wait_for_other_writers(store_url: str) -> None:
    async with fresh_store(store_url) as holder, fresh_store(store_url, lock_timeout=0.3) as other:
        async with holder.write() as w:
            w.append_audit(event(n=1))
            error = await unavailable(append(other, n=2))
            assert error.message in {"database is busy", "database lock wait timed out"}
            assert await read_something(other) == 0  # readers are not blocked by the writer
        await append(other, n=2)
        await chain_ok(other, 2)


async def test_an_idle_batcher_still_waits_for_the_write_gate_held_elsewhere(sqlite_store_url: str) -> None:
    # Another process's batcher holding the write gate is an open file description of its own; an
    # idle batcher (which first tries the lock without blocking) must queue behind it, bounded by its
    # lock timeout, and take it once it is let go, then give it back after its batch.

    gate_file = sqlite_path(sqlite_store_url) + ".write-lock"
    async with fresh_store(sqlite_store_url, lock_timeout=0.3) as store:
        await append(store, n=1)  # the batcher has run and gone idle
        fd = os.open(gate_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            error = await unavailable(append(store, n=2))
            assert error.message == "database is busy"
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert await append(store, n=2) == 2
            # Let go after the batch: another holder gets it at once.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        await chain_ok(store, 2)
