"""Storage: the only package that imports sqlalchemy, alembic, aiosqlite and asyncpg.

It owns the database: the schema and its migrations, connections and their settings, transactions and
the write lock, group commit, and the translation of every database failure into ``signer.errors``
(``DatabaseUnavailable``, ``AuditUnavailable``, ``Conflict``...) whose messages carry no SQL, URL or
path. It must never hold or log a secret: tokens are stored as HMAC digests computed by the caller, and
audit events arrive already free of secrets. It makes no decisions: callers read facts, decide, and
write the outcome with its audit event through a ``Writer``.

Where things live: ``commit`` (``Store``, the group commit), ``tx`` (the write transaction: lock, units,
savepoints, audit chain buffer), ``tables/`` (one module per table family), ``ledger`` (usage sums and
reservations), ``reader_writer`` (the families bound to a reader or writer), ``internals`` (the two
private library internals the commit path uses), ``driver`` / ``engine`` / ``gate`` (statements on the
driver connection, connections, the SQLite write gate).

    store = await open_store("sqlite+aiosqlite:////var/lib/signer/signer.db")
    async with store.read() as reader:
        key = await reader.keys.get(key_id)
    record = await store.submit(unit)          # unit: async (writer) -> result, group-committed
    await store.close()
"""

from __future__ import annotations

from collections.abc import Mapping

from signer.errors import ConfigurationError
from signer.store.commit import Store
from signer.store.engine import ConnectionFaults, build_engine, parse_url
from signer.store.migrate import head_revision, migrate
from signer.store.reader_writer import Reader, Writer
from signer.store.records import (
    AddressEntry,
    ApprovalRequestRecord,
    ApprovalVoteRecord,
    ApproverKeyRecord,
    AttachmentRecord,
    AuditRecord,
    ConsoleSessionRecord,
    FunctionEntry,
    GrantRecord,
    IdempotencyRecord,
    KeyRecord,
    KmsCredentialRecord,
    LedgerEntry,
    OutboxRecord,
    PolicyVersionRecord,
    PrincipalRecord,
    SecretRecord,
    SecretVersionRecord,
    TokenEntry,
    TokenRecord,
    WebhookRecord,
)
from signer.store.tables.anomaly_baselines import BaselineCount
from signer.store.tables.usage import FetchCount, GrantUse, ReferenceUse, SecretFacts
from signer.store.tables.webhooks import GIVEN_UP_AFTER

__all__ = [
    "GIVEN_UP_AFTER",
    "AddressEntry",
    "ApprovalRequestRecord",
    "ApprovalVoteRecord",
    "ApproverKeyRecord",
    "AttachmentRecord",
    "AuditRecord",
    "BaselineCount",
    "ConsoleSessionRecord",
    "FetchCount",
    "FunctionEntry",
    "GrantRecord",
    "GrantUse",
    "IdempotencyRecord",
    "KeyRecord",
    "KmsCredentialRecord",
    "LedgerEntry",
    "OutboxRecord",
    "PolicyVersionRecord",
    "PrincipalRecord",
    "Reader",
    "ReferenceUse",
    "SecretFacts",
    "SecretRecord",
    "SecretVersionRecord",
    "Store",
    "TokenEntry",
    "TokenRecord",
    "WebhookRecord",
    "Writer",
    "migrate",
    "open_store",
]


async def open_store(
    url: str,
    *,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    batch_max: int = 256,
    lock_timeout: float = 5.0,
    statement_timeout: float = 30.0,
    check_schema: bool = True,
    sqlite_pragmas: Mapping[str, int] | None = None,
) -> Store:
    """Open the database at ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``).

    ``pool_timeout`` bounds the wait for a pooled connection (and a PostgreSQL connect);
    ``lock_timeout`` bounds the wait for the write lock (SQLite busy_timeout, PostgreSQL lock_timeout);
    ``statement_timeout`` bounds any PostgreSQL round trip. With ``check_schema`` the database must be
    migrated to this build's newest revision, else ``ConfigurationError``; an unreachable database
    raises ``DatabaseUnavailable``. ``sqlite_pragmas`` adds integer pragmas from a short allow-list.
    """
    if pool_size < 1 or batch_max < 1 or pool_timeout <= 0 or lock_timeout <= 0 or statement_timeout <= 0:
        raise ValueError("pool_size, batch_max and the timeouts must be positive")
    target = parse_url(url)
    faults = ConnectionFaults()
    engine = build_engine(
        target,
        pool_size=pool_size,
        pool_timeout=pool_timeout,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        sqlite_pragmas=sqlite_pragmas,
        faults=faults,
    )
    store = Store(engine, target, batch_max=batch_max, lock_timeout=lock_timeout, faults=faults)
    if check_schema:
        try:
            revision = await store.schema_revision()
        except BaseException:
            await store.close()
            raise
        if revision != head_revision():
            await store.close()
            raise ConfigurationError(
                f"database schema is at revision {revision or 'none'}, this build needs "
                f"{head_revision()}: run `signer init` (or signer.store.migrate) first"
            )
    return store
