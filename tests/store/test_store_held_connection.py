"""The batcher's held SQLite connection: clean after every way a batch ends, replaced when it must be.

With a pool of at least three connections the batcher keeps its write connection between batches and
drives BEGIN IMMEDIATE and COMMIT itself (signer.store.commit). A batch that ends any way at all must
leave that connection outside any transaction, whether or not a unit went through SQLAlchemy (which then
begins its own transaction on top), and a connection that met a fault, or whose database file was
replaced, must not be used again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from signer.audit import verify_chain
from signer.errors import Conflict, DatabaseUnavailable, SignerError
from signer.store import Store, Writer
from signer.store.internals import run_on_thread
from tests.dbfixtures import fresh_store
from tests.store.store_testkit import event, sqlite_path


def _in_transaction(connection: sqlite3.Connection) -> bool:
    return connection.in_transaction


async def _seqs(store: Store) -> list[int]:
    async with store.read() as r:
        records = await r.audit.events()
        assert verify_chain(records, expected_head=await r.audit_head()).ok
    return [e.seq for e in records]


async def test_held_connection_is_clean_after_every_way_a_batch_ends(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url, pool_size=3) as store:

        async def ok(w: Writer) -> int:
            return w.append_audit(event(n=1)).seq

        async def through_sqlalchemy(w: Writer) -> int:
            assert await w.principals.get("nobody") is None  # a statement through SQLAlchemy
            return w.append_audit(event(n=2)).seq

        async def fails_after_sqlalchemy(w: Writer) -> None:
            await w.principals.get("nobody")
            w.append_audit(event(n=99))
            raise Conflict("unit refuses", code="conflict")

        async def fails(w: Writer) -> None:
            w.append_audit(event(n=98))
            raise Conflict("unit refuses", code="conflict")

        assert await store.submit(ok) == 1
        held = store._held
        assert held is not None
        assert await store.submit(through_sqlalchemy) == 2
        with pytest.raises(Conflict):
            await store.submit(fails_after_sqlalchemy)
        with pytest.raises(Conflict):
            await store.submit(fails)
        assert await store.submit(ok) == 3
        assert await store.submit(through_sqlalchemy) == 4
        # The same connection served every batch, and it is outside any transaction between them.
        assert store._held is held
        assert not held[0].in_transaction()
        assert not await run_on_thread(held[1]._connection, _in_transaction)
        assert await _seqs(store) == [1, 2, 3, 4]
        async with store.write() as w:  # write() uses the pool, beside the held connection
            w.append_audit(event(n=5))
        assert await store.submit(ok) == 6
        assert await _seqs(store) == [1, 2, 3, 4, 5, 6]


async def test_small_pool_is_never_held(sqlite_store_url: str) -> None:
    async with fresh_store(sqlite_store_url, pool_size=2) as store:

        async def ok(w: Writer) -> int:
            return w.append_audit(event(n=1)).seq

        assert await store.submit(ok) == 1
        assert store._held is None
        assert store.pool_status()[0] == 0


async def test_replaced_database_file_is_not_written_through_the_held_connection(
    sqlite_store_url: str, tmp_path: Path
) -> None:
    async with fresh_store(sqlite_store_url, pool_size=3) as store:

        async def ok(w: Writer) -> int:
            return w.append_audit(event(n=1)).seq

        db = Path(sqlite_path(sqlite_store_url))
        assert await store.submit(ok) == 1
        assert store._held is not None
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)  # without the -wal: what was committed only there is not in it
        with contextlib.closing(sqlite3.connect(copy)) as raw:
            (copied_seq,) = raw.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
        os.replace(copy, db)  # a new file (new inode) at the same path, with the same content
        for name in (db.name + "-wal", db.name + "-shm"):
            (db.parent / name).unlink(missing_ok=True)
        try:
            seq = await store.submit(ok)
        except SignerError as exc:  # the replaced file may not be usable at once; never the old one
            assert isinstance(exc, DatabaseUnavailable)
        else:
            # Written to the new file: its chain continues from what that file holds.
            assert seq == copied_seq + 1
        assert store._held is None or store._held[0].sync_connection.info["signer_file_id"] == (
            db.stat().st_dev,
            db.stat().st_ino,
        )
