"""Record factories and batch-control helpers for the store tests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from signer.store import GrantRecord, KeyRecord, PrincipalRecord, Store, TokenRecord, Writer

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def uid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def principal(name: str | None = None, role: str = "service", **kw: Any) -> PrincipalRecord:
    return PrincipalRecord(
        id=kw.pop("id", uid("prn")),
        name=uid("name") if name is None else name,
        role=role,
        created_at=kw.pop("created_at", T0),
        created_by=kw.pop("created_by", "bootstrap"),
        disabled_at=kw.pop("disabled_at", None),
    )


def token(principal_id: str, **kw: Any) -> TokenRecord:
    return TokenRecord(
        id=kw.pop("id", uid("tok")),
        principal_id=principal_id,
        kind=kw.pop("kind", "access"),
        digest=kw.pop("digest", secrets.token_bytes(32)),
        family_id=kw.pop("family_id", uid("fam")),
        created_at=kw.pop("created_at", T0),
        expires_at=kw.pop("expires_at", T0 + timedelta(hours=1)),
        revoked_at=kw.pop("revoked_at", None),
    )


def key(**kw: Any) -> KeyRecord:
    return KeyRecord(
        id=kw.pop("id", uid("key")),
        label=kw.pop("label", "hot wallet"),
        curve=kw.pop("curve", "secp256k1"),
        public_key=kw.pop("public_key", "04" + secrets.token_hex(64)),
        address=kw.pop("address", "0x" + secrets.token_hex(20)),
        scope=kw.pop("scope", "acme/payments"),
        tags=kw.pop("tags", ["hot", "evm"]),
        state=kw.pop("state", "active"),
        hsm_id=kw.pop("hsm_id", secrets.token_hex(16)),
        attributes=kw.pop("attributes", {"always_sensitive": True, "never_extractable": True}),
        created_by=kw.pop("created_by", "prn_admin"),
        created_at=kw.pop("created_at", T0),
        updated_at=kw.pop("updated_at", T0),
    )


def grant(principal_id: str, resource_id: str, **kw: Any) -> GrantRecord:
    return GrantRecord(
        id=kw.pop("id", uid("grt")),
        principal_id=principal_id,
        resource_type=kw.pop("resource_type", "key"),
        resource_id=resource_id,
        operations=kw.pop("operations", ["sign_transaction"]),
        expires_at=kw.pop("expires_at", None),
        created_by=kw.pop("created_by", "prn_admin"),
        created_at=kw.pop("created_at", T0),
        revoked_at=kw.pop("revoked_at", None),
    )


def event(kind: str = "test.event", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "at": fields.pop("at", T0), "request_id": fields.pop("request_id", None), **fields}


class Gate:
    """Holds the batcher inside a unit so that what is submitted meanwhile forms the next batch.

    ``await gate.hold(store)`` returns once the gate unit runs inside a batch; every unit submitted
    after that lands in a later batch; ``await gate.release()`` lets the gate's batch commit.
    """

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self._open = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None

    async def _unit(self, writer: Writer) -> None:
        self.entered.set()
        await self._open.wait()

    async def hold(self, store: Store) -> None:
        self.task = asyncio.create_task(store.submit(self._unit))
        await self.entered.wait()

    async def release(self) -> None:
        self._open.set()
        assert self.task is not None
        await self.task


async def submit_all(store: Store, units: list[Callable[[Writer], Awaitable[Any]]]) -> list[Any]:
    """Submit all units while the batcher is held, so they run in one batch; returns results/exceptions."""
    gate = Gate()
    await gate.hold(store)
    tasks = [asyncio.create_task(store.submit(u)) for u in units]
    await queued(store, len(units))
    await gate.release()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def queued(store: Store, count: int) -> None:
    """Yield to the loop until ``count`` units wait in the store's queue (a condition, not a delay)."""
    for _ in range(10_000):
        if len(store._queue) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {len(store._queue)} of {count} units were queued")


POISON_KIND = "test.poison_at_commit"


def sqlite_path(url: str) -> str:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    assert database
    return database


async def install_commit_poison(url: str) -> None:
    """Make COMMIT itself fail for any transaction that wrote an audit event of kind POISON_KIND.

    SQLite: a trigger adds a row violating a DEFERRED foreign key, checked only at COMMIT.
    PostgreSQL: a DEFERRABLE INITIALLY DEFERRED constraint trigger that raises at COMMIT.
    """
    if url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(sqlite_path(url))
        try:
            connection.executescript(
                f"""
                CREATE TABLE poison_parent (id INTEGER PRIMARY KEY);
                CREATE TABLE poison_child (
                    parent INTEGER REFERENCES poison_parent(id) DEFERRABLE INITIALLY DEFERRED);
                CREATE TRIGGER poison AFTER INSERT ON audit_events WHEN NEW.kind = '{POISON_KIND}'
                BEGIN INSERT INTO poison_child (parent) VALUES (42); END;
                """
            )
        finally:
            connection.close()
        return
    from tests.dbfixtures import pg_execute

    await pg_execute(
        url,
        f"""
        CREATE FUNCTION poison_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.kind = '{POISON_KIND}' THEN RAISE EXCEPTION 'poisoned at commit'; END IF;
            RETURN NULL;
        END $$
        """,
        "CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON audit_events "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION poison_check()",
    )


async def remove_commit_poison(url: str) -> None:
    if url.startswith("sqlite"):
        return  # the file belongs to this test alone
    from tests.dbfixtures import pg_execute

    await pg_execute(
        url, "DROP TRIGGER IF EXISTS poison ON audit_events", "DROP FUNCTION IF EXISTS poison_check()"
    )


class TcpProxy:
    """A loopback TCP proxy that can be taken down and brought back on the same port (a stand-in for a
    database server going away: while down, connects are refused and live connections are reset)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        for source, sink in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            sink.transport.abort()
