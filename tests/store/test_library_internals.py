"""The private library internals of signer/store/internals.py still behave as the commit path needs.

Each failure names the installed library version and the one these internals were checked against:
upgrading SQLAlchemy or aiosqlite past a change to them must fail here, loudly, not as a wrong
parameter order or a hang on the commit path.
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
from typing import Any

import aiosqlite
import pytest
import sqlalchemy
from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from signer.store import schema as t
from signer.store.driver import Prepared
from signer.store.engine import _OneHopConnection
from signer.store.internals import CHECKED_AIOSQLITE, CHECKED_SQLALCHEMY, positional_binds, run_on_thread


def _sqlalchemy_changed(what: str) -> str:
    return (
        f"SQLAlchemy {sqlalchemy.__version__} (checked against {CHECKED_SQLALCHEMY}): {what}; "
        "signer/store/internals.py positional_binds relies on it"
    )


def _aiosqlite_changed(what: str) -> str:
    return (
        f"aiosqlite {aiosqlite.__version__} (checked against {CHECKED_AIOSQLITE}): {what}; "
        "signer/store/internals.py run_on_thread and engine._OneHopConnection rely on it"
    )


@pytest.mark.parametrize("dialect", [sqlite.dialect(paramstyle="qmark"), postgresql.asyncpg.dialect()])
def test_compiled_statements_still_expose_positional_binds(dialect: Any) -> None:
    statement = (
        select(t.ledger.c.id)
        .where(t.ledger.c.limit_key == bindparam("key"), t.ledger.c.id > bindparam("after"))
        .where(t.ledger.c.amount != "0")
    )
    compiled = statement.compile(dialect=dialect)
    if not hasattr(compiled, "positiontup") or not hasattr(compiled, "binds"):
        pytest.fail(_sqlalchemy_changed("a compiled statement has no positiontup or binds"))
    names, binds = positional_binds(compiled)
    if names[:2] != ("key", "after") or len(names) != 3:
        pytest.fail(_sqlalchemy_changed(f"positiontup is {names!r}, not the parameters in SQL order"))
    if not all(isinstance(b, sqlalchemy.BindParameter) for b in binds) or binds[2].value != "0":
        pytest.fail(_sqlalchemy_changed("binds no longer maps names to their BindParameter"))
    # What Prepared builds from them: the literal keeps its value, the others must be given.
    prepared = Prepared(statement, dialect)
    with pytest.raises(TypeError):
        prepared.params({"key": "k"})
    assert prepared.params({"key": "k", "after": 5}) == ("k", 5, "0")


def test_aiosqlite_still_queues_jobs_through_execute() -> None:
    execute = getattr(aiosqlite.Connection, "_execute", None)
    if execute is None or not inspect.iscoroutinefunction(execute):
        pytest.fail(_aiosqlite_changed("Connection._execute is gone or no longer a coroutine"))
    parameters = list(inspect.signature(execute).parameters.values())
    kinds = [p.kind for p in parameters[1:]]
    if kinds[:2] != [inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL]:
        pytest.fail(_aiosqlite_changed(f"Connection._execute{inspect.signature(execute)} is not (fn, *args)"))
    if not isinstance(inspect.getattr_static(aiosqlite.Connection, "_conn", None), property):
        pytest.fail(_aiosqlite_changed("Connection._conn (the sqlite3 connection) is gone"))


async def test_run_on_thread_runs_on_the_connections_thread_and_every_job_passes_execute() -> None:
    jobs: list[str] = []

    class Counting(_OneHopConnection):
        async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            jobs.append(getattr(fn, "__name__", type(fn).__name__))
            return await super()._execute(fn, *args, **kwargs)

    connection = Counting(lambda: sqlite3.connect(":memory:", check_same_thread=False), iter_chunk_size=64)
    await connection
    try:

        def probe(conn: sqlite3.Connection, value: int) -> tuple[int, int]:
            return threading.get_ident(), conn.execute("SELECT ?", (value,)).fetchone()[0]

        jobs.clear()
        thread, value = await run_on_thread(connection, probe, 7)
        if value != 7 or thread == threading.get_ident():
            pytest.fail(_aiosqlite_changed("_execute(fn, conn, *args) no longer runs fn on its own thread"))
        connection.committed = connection.idle = True
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
        await connection.commit()
        await connection.rollback()
        # The one-hop flags are cleared by any job that passes _execute, so a job that did not would
        # let the store skip a COMMIT or ROLLBACK that is still needed.
        if len(jobs) < 3 or "probe" not in jobs:
            pytest.fail(_aiosqlite_changed(f"not every job is queued through _execute (saw {jobs!r})"))
    finally:
        await connection.close()
