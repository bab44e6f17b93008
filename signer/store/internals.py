"""The two private library internals the store's commit path relies on, each behind one function.

``positional_binds``: SQLAlchemy's compiled statement, its ``positiontup`` (the order of positional
parameters: documented on ``SQLCompiler``) and ``binds`` (name -> ``BindParameter``: not documented).
``Prepared`` (``signer.store.driver``) needs both to run a Core statement on the driver connection with
SQLAlchemy's own SQL text, parameter order and type conversions. ``run_on_thread``: aiosqlite's private
``Connection._execute(fn, *args)``, which queues ``fn`` for the connection's thread, and its ``_conn``
(the ``sqlite3.Connection`` that thread owns); the store runs a whole batch of statements as one job
there (one thread round trip instead of four per statement). ``engine._OneHopConnection`` also overrides
``_execute``, relying on every aiosqlite job (cursor, commit, rollback, close) being queued through it.

Nothing else in the package touches these names. ``tests/store/test_library_internals.py`` fails with
the library's version in its message when either changes; the versions checked are below. The public
alternatives cost a round trip per statement (aiosqlite) or SQLAlchemy's per-statement machinery (about
120 us of CPU each), which is what the commit path exists to avoid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CHECKED_SQLALCHEMY = "2.1.9"
CHECKED_AIOSQLITE = "0.22.1"


def positional_binds(compiled: Any) -> tuple[tuple[str, ...], list[Any]]:
    """The positional parameter names of a compiled statement, in order, and their ``BindParameter``s."""
    names = tuple(compiled.positiontup or ())
    return names, [compiled.binds[name] for name in names]


async def run_on_thread(connection: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(sqlite3_connection, *args)`` on an aiosqlite connection's own thread; its result."""
    return await connection._execute(fn, connection._conn, *args)
