"""Connecting: URL handling, the async engine with its pool and per-connection settings, and the one
place where database exceptions become ``signer.errors``.

SQLite connections open the file with ``mode=rw`` (a missing file is an error, never a fresh empty
database) and run with WAL, ``synchronous=FULL``, foreign keys on and a busy timeout; the store emits
``BEGIN IMMEDIATE`` itself for writes so SQLITE_BUSY cannot surface mid-transaction. Each checkout
compares the file's identity with the one the connection opened, so a database file that was removed or
replaced is noticed (a connection to an unlinked file would otherwise keep "working"). PostgreSQL
connections are pre-pinged, have a connect timeout, a lock timeout and a command timeout. Translated
errors carry no SQL, URL or path.

Healing: a connection that met a connection-level fault (``is_connection_fault``: SQLite read-only, I/O
error, full, damaged or unopenable; PostgreSQL connection lost, backend terminated) is discarded by the
store instead of going back to the pool, and ``ConnectionFaults.mark`` makes every connection opened
before the fault be replaced at its next checkout: such faults are usually the file's or the server's,
so the connection's siblings met them too. SQLite opens a file it may not write read-only without a
word, and such a connection would refuse every write after the file is writable again: one opened
while the file could not be written is used once and then replaced. Nothing of a fault outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from signer.errors import (
    AuditUnavailable,
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    SignerError,
    TransactionConflict,
)
from signer.store.internals import run_on_thread

log = logging.getLogger("signer.store")

# Extra pragmas a caller may set (tests use max_page_count to simulate a full disk). Names are checked
# against this list and values must be integers, so nothing can be injected through them.
# SQLite's own WAL checkpoint threshold, in pages (its default is 1,000; see _sqlite_engine).
WAL_AUTOCHECKPOINT_PAGES = 4000
ALLOWED_EXTRA_PRAGMAS = frozenset({"max_page_count", "cache_size", "mmap_size", "wal_autocheckpoint"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where the database is: ``backend`` is "sqlite" or "postgresql"."""

    backend: str
    url: URL
    path: Path | None = None


def parse_url(url: str) -> Target:
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise ConfigurationError("database URL is not valid") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ConfigurationError(
                "SQLite needs a file path (in-memory and URI databases are not supported)"
            )
        path = Path(database).expanduser().resolve()
        return Target("sqlite", parsed.set(drivername="sqlite+aiosqlite", database=str(path)), path)
    if backend in ("postgresql", "postgres"):
        return Target("postgresql", parsed.set(drivername="postgresql+asyncpg"))
    raise ConfigurationError("unsupported database: use sqlite+aiosqlite:///path or postgresql+asyncpg://...")


class ConnectionFaults:
    """Which pooled connections predate the last connection-level fault (see the module docstring).

    Every connection is stamped with the generation it was opened in; ``mark`` starts a new one, and a
    connection of an older generation is replaced at its next checkout.
    """

    def __init__(self) -> None:
        self.generation = 0

    def mark(self) -> None:
        self.generation += 1

    def watch(self, engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def _stamp(dbapi_connection: Any, record: Any) -> None:
            record.info["signer_generation"] = self.generation

        @event.listens_for(engine.sync_engine, "checkout")
        def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            if record.info.get("signer_generation", -1) < self.generation:
                raise sa_exc.DisconnectionError("connection predates a connection fault")


def build_engine(
    target: Target,
    *,
    pool_size: int,
    pool_timeout: float,
    lock_timeout: float,
    statement_timeout: float,
    sqlite_pragmas: Mapping[str, int] | None = None,
    faults: ConnectionFaults | None = None,
) -> AsyncEngine:
    if target.backend == "sqlite":
        engine = _sqlite_engine(target, pool_size, pool_timeout, lock_timeout, sqlite_pragmas or {})
    else:
        engine = _postgres_engine(target, pool_size, pool_timeout, lock_timeout, statement_timeout)
    if faults is not None:
        faults.watch(engine)
    return engine


def _sqlite_engine(
    target: Target, pool_size: int, pool_timeout: float, lock_timeout: float, extra: Mapping[str, int]
) -> AsyncEngine:
    assert target.path is not None
    path = target.path
    for name, value in extra.items():
        if name not in ALLOWED_EXTRA_PRAGMAS or type(value) is not int:
            raise ValueError(f"SQLite pragma not allowed: {name}")
    uri = "file:" + quote(str(path)) + "?mode=rw"
    make_private(path)

    async def connect() -> aiosqlite.Connection:
        # isolation_level=None: the driver never opens transactions on its own; the begin listener
        # below decides between BEGIN and BEGIN IMMEDIATE.
        connection = _OneHopConnection(
            functools.partial(sqlite3.connect, uri, uri=True, isolation_level=None), iter_chunk_size=64
        )
        # SQLite falls back to read-only, silently, when it may not open the file for writing; this
        # connection is then replaced after one use (see _on_checkout). A file that turns read-only
        # after this check is caught by the first write's error instead (is_connection_fault).
        connection.opened_read_only = not _writable(path)
        # A daemon thread cannot keep the interpreter alive if a connection is leaked.
        connection._thread.daemon = True
        try:
            return await connection
        except BaseException:
            # aiosqlite stops its thread after a failed open but does not wait; the thread then
            # reports to the event loop, which may be gone by then. Wait for it to finish here.
            await asyncio.get_running_loop().run_in_executor(None, connection._thread.join, 10.0)
            raise

    engine = create_async_engine(
        target.url,
        async_creator=connect,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        pool_pre_ping=False,  # a file has no socket to go stale; the identity check below covers it
    )
    busy_ms = max(1, int(lock_timeout * 1000))
    pragmas = [
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA busy_timeout={busy_ms}",
        # SQLite's own checkpoint, run inside the COMMIT that takes the WAL past this many pages, is
        # only the backstop: the store checkpoints beside the commits (Store._wal_after_batch). At the
        # default 1,000 it still fired whenever the WAL had not been restarted (a reader was using it
        # when a writer began), on every COMMIT from then on, each with an fsync of the database
        # under the write gate.
        f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}",
        *(f"PRAGMA {name}={int(value)}" for name, value in extra.items()),
    ]

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()
        record.info["signer_file_id"] = file_id(path)
        record.info["signer_read_only"] = bool(
            getattr(dbapi_connection.driver_connection, "opened_read_only", False)
        )
        record.info["signer_used"] = False

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if file_id(path) != record.info.get("signer_file_id"):
            # Removed, moved away or replaced since this connection opened it: drop the connection;
            # the pool reconnects, and opening fails cleanly while the file is absent.
            raise sa_exc.DisconnectionError("database file changed")
        if record.info.get("signer_read_only"):
            # Opened while the file could not be written: serves this one checkout (reads still work
            # during the fault), then a fresh open sees whether the file is writable again.
            if record.info.get("signer_used"):
                raise sa_exc.DisconnectionError("connection was opened read-only")
            record.info["signer_used"] = True

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A write transaction's BEGIN IMMEDIATE is sent by the store itself, in the same round trip as
        # its first read (signer.store.commit); a read gets a plain BEGIN for one snapshot.
        if not connection.get_execution_options().get("signer_write", False):
            connection.exec_driver_sql("BEGIN")

    return engine


class _OneHopCursor:
    """A cursor that runs execute-and-fetch as ONE job on the connection's thread.

    SQLAlchemy's aiosqlite adapter makes four thread round trips per statement (open cursor, execute,
    fetch, close); on a small VM each round trip costs ~0.1 ms, several times the statement itself. The
    adapter fetches every row right after executing anyway, so doing it in the same job changes nothing
    but the number of hops.
    """

    arraysize = 1

    def __init__(self, connection: _OneHopConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> _OneHopCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, sql: str, parameters: Any = None) -> _OneHopCursor:
        return await self._run(sql, parameters, False)

    async def executemany(self, sql: str, seq_of_parameters: Any) -> _OneHopCursor:
        return await self._run(sql, seq_of_parameters, True)

    async def _run(self, sql: str, parameters: Any, many: bool) -> _OneHopCursor:
        result = await run_on_thread(self._connection, _run_statement, sql, parameters, many)
        self.description, self.rowcount, self.lastrowid, self._rows = result
        return self

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def close(self) -> None:
        self._rows = []

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None


def _run_statement(
    connection: sqlite3.Connection, sql: str, parameters: Any, many: bool
) -> tuple[Any, int, int | None, list[Any]]:
    # Runs on the connection's own thread.
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description is not None else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class _OneHopConnection(aiosqlite.Connection):
    """aiosqlite's connection (its thread, queue, commit, rollback, close) with one-hop cursors.

    ``committed`` is set by the store's driver (signer.store.driver) when its last job ended with a
    COMMIT that left no transaction open: SQLAlchemy's commit() right after it then needs no trip to
    the connection's thread. ``idle`` says the same of a commit() or rollback() that completed: the
    pool's rollback when the connection is returned, right after, has nothing to undo either (a
    write transaction's release cost a fourth trip to the thread for it, ~0.1-0.3 ms of CPU per
    group commit at low load). Any other job clears both before it is queued, so neither can ever
    skip a COMMIT or ROLLBACK that is still needed.
    """

    committed = False
    opened_read_only = False
    idle = False

    def cursor(self) -> _OneHopCursor:  # type: ignore[override]
        return _OneHopCursor(self)

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.committed = False
        self.idle = False
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def commit(self) -> None:
        if self.committed:
            self.committed = False
            self.idle = True
            return
        await super().commit()
        self.idle = True

    async def rollback(self) -> None:
        if self.idle:
            return
        await super().rollback()
        self.idle = True


def _writable(path: Path) -> bool:
    # Asked, not tried: opening and closing the database file here would drop every POSIX lock this
    # process's SQLite connections hold on it (close() releases them all). The kernel's answer covers
    # mode bits for the effective user, the immutable attribute and a read-only mount.
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK, effective_ids=effective)


SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def make_private(path: Path) -> None:
    """The SQLite file and its side files readable by their owner only, like the rest of the data dir.

    SQLite gives the side files it creates the main file's mode, so a 0600 database stays private;
    files left more open (an older release, a copy, a restore) are narrowed here at every start.
    """
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            mode = side.stat().st_mode & 0o777
            if mode & 0o077:
                side.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning("database file is not ours to restrict", extra={"file": side.name})


def create_private(path: Path) -> None:
    """Create an empty (new) SQLite database file with mode 0600 before SQLite creates it by umask."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _postgres_engine(
    target: Target, pool_size: int, pool_timeout: float, lock_timeout: float, statement_timeout: float
) -> AsyncEngine:
    return create_async_engine(
        target.url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        # Reads run in autocommit (under READ COMMITTED a transaction adds no consistency, only two
        # round trips, and the pre-ping stays a single round trip); writes switch to READ COMMITTED.
        isolation_level="AUTOCOMMIT",
        connect_args={
            "timeout": pool_timeout,
            "command_timeout": statement_timeout,
            "server_settings": {
                "lock_timeout": str(max(1, int(lock_timeout * 1000))),
                "application_name": "signer",
            },
        },
    )


# -- error translation ------------------------------------------------------------------------------

# SQLite primary result codes that mean "the database cannot serve us right now".
_SQLITE_UNAVAILABLE = {
    5: "database is busy",  # SQLITE_BUSY (busy_timeout expired)
    6: "database is locked",  # SQLITE_LOCKED
    7: "database is out of memory",  # SQLITE_NOMEM
    8: "database is read-only",  # SQLITE_READONLY
    10: "database I/O error",  # SQLITE_IOERR
    11: "database file is damaged",  # SQLITE_CORRUPT
    13: "database storage is full",  # SQLITE_FULL
    14: "database file cannot be opened",  # SQLITE_CANTOPEN
    15: "database is locked",  # SQLITE_PROTOCOL
    26: "database file is damaged",  # SQLITE_NOTADB
}

# PostgreSQL SQLSTATE classes and codes that mean the same.
_PG_UNAVAILABLE_CLASSES = {
    "08": "database connection failed",
    "53": "database is out of resources",
    "57": "database is shutting down or cancelled the statement",
    "58": "database system error",
    "28": "database refused the credentials",
    "3D": "database does not exist",
}
_PG_UNAVAILABLE_CODES = {
    "55P03": "database lock wait timed out",
    "25006": "database is read-only",
    "40001": "database transaction conflict",
    "40P01": "database transaction conflict",
    "57014": "database statement timed out",
    # "database is not currently accepting connections" (ALLOW_CONNECTIONS false, shutting down).
    "55000": "database is not accepting connections",
    "57P01": "database connection terminated",
    "57P02": "database connection terminated",
    "57P03": "database is starting up or shutting down",
}


# SQLite primary result codes after which the connection is not trusted again (the file's state changed
# under it: permissions, the disk, the file itself). BUSY and LOCKED are ordinary contention.
_SQLITE_CONNECTION_FAULTS = frozenset({7, 8, 10, 11, 13, 14, 15, 26})
_PG_CONNECTION_FAULT_CODES = frozenset({"57P01", "57P02", "57P03", "55000"})


def is_connection_fault(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver or SQLAlchemy exception) means the connection it came from must not be
    used again: the connection itself, or the file or server behind it, failed, not the statement."""
    if isinstance(exc, sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig: BaseException | None = exc.orig
    else:
        orig = exc
    if orig is None:
        return False
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return (sqlite_code & 0xFF) in _SQLITE_CONNECTION_FAULTS
    sqlstate = _sqlstate(orig)
    if sqlstate:
        return sqlstate[:2] == "08" or sqlstate in _PG_CONNECTION_FAULT_CODES
    return _is_connection_error(orig)


def translate(exc: BaseException) -> SignerError | None:
    """The ``signer.errors`` value for a database-layer exception, or None if ``exc`` is not one."""
    if isinstance(exc, SignerError):
        return exc
    if isinstance(exc, sa_exc.TimeoutError):
        return DatabaseUnavailable("timed out waiting for a database connection")
    if isinstance(exc, sa_exc.DBAPIError):
        return _translate_dbapi(exc)
    if isinstance(exc, sa_exc.DisconnectionError):
        return DatabaseUnavailable("database connection lost")
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        # asyncpg raises plain OSError / TimeoutError while connecting (refused, unreachable).
        return DatabaseUnavailable("database unreachable")
    if isinstance(exc, sqlite3.Error):
        return _classify(exc, None)
    if type(exc).__module__.startswith("asyncpg"):
        return _classify(exc, None)
    return None


def _translate_dbapi(exc: sa_exc.DBAPIError) -> SignerError:
    if exc.connection_invalidated:
        return _logged(exc, DatabaseUnavailable("database connection lost"))
    return _classify(exc.orig, exc)


def _classify(orig: BaseException | None, wrapper: sa_exc.DBAPIError | None) -> SignerError:
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        primary = sqlite_code & 0xFF
        if primary in _SQLITE_UNAVAILABLE:
            return _logged(orig, DatabaseUnavailable(_SQLITE_UNAVAILABLE[primary]))
        if primary == 19:  # SQLITE_CONSTRAINT
            return _logged(orig, Conflict("the change conflicts with stored data", code="conflict"))
        return _logged(orig, SignerError("database error", code="db_error"))
    sqlstate = _sqlstate(orig)
    if sqlstate:
        if sqlstate in ("40001", "40P01"):
            return _logged(orig, TransactionConflict("database transaction conflict"))
        if sqlstate in _PG_UNAVAILABLE_CODES:
            return _logged(orig, DatabaseUnavailable(_PG_UNAVAILABLE_CODES[sqlstate]))
        if sqlstate[:2] in _PG_UNAVAILABLE_CLASSES:
            return _logged(orig, DatabaseUnavailable(_PG_UNAVAILABLE_CLASSES[sqlstate[:2]]))
        if sqlstate.startswith("23"):
            return _logged(orig, Conflict("the change conflicts with stored data", code="conflict"))
        return _logged(orig, SignerError("database error", code="db_error"))
    if isinstance(wrapper, sa_exc.OperationalError | sa_exc.InterfaceError) or _is_connection_error(orig):
        return _logged(orig, DatabaseUnavailable("database connection lost"))
    if isinstance(wrapper, sa_exc.IntegrityError):
        return _logged(orig, Conflict("the change conflicts with stored data", code="conflict"))
    return _logged(orig, SignerError("database error", code="db_error"))


def _sqlstate(orig: BaseException | None) -> str | None:
    for candidate in (orig, getattr(orig, "__cause__", None)):
        for attr in ("sqlstate", "pgcode"):
            value = getattr(candidate, attr, None)
            if isinstance(value, str) and len(value) == 5:
                return value
    return None


def _is_connection_error(orig: BaseException | None) -> bool:
    if orig is None:
        return False
    if isinstance(orig, OSError | ConnectionError | TimeoutError):
        return True
    cause = orig.__cause__
    names = {type(orig).__name__, type(cause).__name__ if cause is not None else ""}
    # asyncpg's client-side connection errors have no SQLSTATE.
    return bool(
        names
        & {
            "ConnectionDoesNotExistError",
            "InterfaceError",
            "InternalClientError",
            "ConnectionFailureError",
            "ConnectionResetError",
        }
    )


def _logged(orig: BaseException | None, error: SignerError) -> SignerError:
    # The driver's own message can hold SQL, parameters or a path: log its type and code only.
    log.warning(
        "database error",
        extra={
            "error_code": error.code,
            "driver_error": type(orig).__name__ if orig is not None else None,
            "sqlstate": _sqlstate(orig),
            "sqlite_code": getattr(orig, "sqlite_errorcode", None),
        },
    )
    return error


def as_audit_failure(error: SignerError) -> SignerError:
    """A failure to begin or commit the transaction that carries audit events: the database being
    unavailable stays ``DatabaseUnavailable``; anything else means the events could not be recorded."""
    if isinstance(error, DatabaseUnavailable | AuditUnavailable):
        return error
    return AuditUnavailable("the audit log could not be written")
