"""``Reader`` and ``Writer``: a connection or a write transaction with every table family bound to it.

This is the one place that knows all the families. Callers reach a table through its family
(``reader.keys.get(key_id)``, ``writer.grants.revoke(grant_id, now)``, ``writer.ledger.reserve(...)``);
the transaction's own operations (``append_audit``, ``bump_epoch``, ``epoch``, ``head``, ``now``) stay
on the writer. A family is built on first use, except the three that hold rows until COMMIT (ledger,
policies' shadow decisions, idempotency records), which the writer builds at once so their rows are
always written in the same order. A reader's families can only read: mypy refuses
``reader.keys.insert``. Adding a table family: a module under ``tables/`` and one property here on each
side.
"""

from __future__ import annotations

from functools import cached_property
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from signer.store.driver import Driver
from signer.store.ledger import Ledger, LedgerCache
from signer.store.tables.anomalies import AnomalyReads, AnomalyWrites
from signer.store.tables.anomaly_baselines import AnomalyBaselineReads, AnomalyBaselineWrites
from signer.store.tables.approvals import ApprovalReads, ApprovalWrites
from signer.store.tables.audit import AuditReads
from signer.store.tables.audit_keys import AuditKeyReads, AuditKeyWrites
from signer.store.tables.audit_retention import RetentionReads, RetentionWrites
from signer.store.tables.audit_sinks import SinkReads, SinkWrites
from signer.store.tables.books import BookReads, BookWrites
from signer.store.tables.checkpoints import CheckpointReads, CheckpointWrites
from signer.store.tables.console_sessions import ConsoleSessionReads, ConsoleSessionWrites
from signer.store.tables.grants import GrantReads, GrantWrites
from signer.store.tables.groups import GroupReads, GroupWrites
from signer.store.tables.idempotency import IdempotencyReads, IdempotencyWrites
from signer.store.tables.kek_rotations import KekRotationReads, KekRotationWrites
from signer.store.tables.keys import KeyReads, KeyWrites
from signer.store.tables.kms_credentials import KmsCredentialReads, KmsCredentialWrites
from signer.store.tables.meta import MetaReads, MetaWrites
from signer.store.tables.policies import PolicyReads, PolicyWrites
from signer.store.tables.principals import PrincipalReads, PrincipalWrites, TokenReads, TokenWrites
from signer.store.tables.secrets import SecretReads, SecretWrites
from signer.store.tables.usage import UsageReads, UsageWrites
from signer.store.tables.webhooks import OutboxReads, OutboxWrites, WebhookReads, WebhookWrites
from signer.store.tx import ReadTx, StoreSide, WriteTx


class WriterStore(StoreSide, Protocol):
    """What a ``Writer`` uses of the ``Store`` that opened it: the transaction's part, and the ledger cache
    (so this module names no ``signer.store.commit``, which imports it)."""

    ledger_cache: LedgerCache


class Reader(ReadTx):
    """Reads on a pooled connection; holds no write lock (see ``ReadTx``)."""

    @cached_property
    def principals(self) -> PrincipalReads:
        return PrincipalReads(self)

    @cached_property
    def tokens(self) -> TokenReads:
        return TokenReads(self)

    @cached_property
    def keys(self) -> KeyReads:
        return KeyReads(self)

    @cached_property
    def grants(self) -> GrantReads:
        return GrantReads(self)

    @cached_property
    def groups(self) -> GroupReads:
        return GroupReads(self)

    @cached_property
    def approvals(self) -> ApprovalReads:
        return ApprovalReads(self)

    @cached_property
    def webhooks(self) -> WebhookReads:
        return WebhookReads(self)

    @cached_property
    def outbox(self) -> OutboxReads:
        return OutboxReads(self)

    @cached_property
    def meta(self) -> MetaReads:
        return MetaReads(self)

    @cached_property
    def audit(self) -> AuditReads:
        return AuditReads(self)

    @cached_property
    def checkpoints(self) -> CheckpointReads:
        return CheckpointReads(self)

    @cached_property
    def audit_keys(self) -> AuditKeyReads:
        return AuditKeyReads(self)

    @cached_property
    def retention(self) -> RetentionReads:
        return RetentionReads(self)

    @cached_property
    def sinks(self) -> SinkReads:
        return SinkReads(self)

    @cached_property
    def policies(self) -> PolicyReads:
        return PolicyReads(self)

    @cached_property
    def idempotency(self) -> IdempotencyReads:
        return IdempotencyReads(self)

    @cached_property
    def console_sessions(self) -> ConsoleSessionReads:
        return ConsoleSessionReads(self)

    @cached_property
    def secrets(self) -> SecretReads:
        return SecretReads(self)

    @cached_property
    def kek_rotations(self) -> KekRotationReads:
        return KekRotationReads(self)

    @cached_property
    def kms_credentials(self) -> KmsCredentialReads:
        return KmsCredentialReads(self)

    @cached_property
    def books(self) -> BookReads:
        return BookReads(self)

    @cached_property
    def usage(self) -> UsageReads:
        return UsageReads(self)

    @cached_property
    def anomalies(self) -> AnomalyReads:
        return AnomalyReads(self)

    @cached_property
    def baselines(self) -> AnomalyBaselineReads:
        return AnomalyBaselineReads(self)


class Writer(WriteTx):
    """One write transaction holding the write lock (see ``WriteTx``), with every table family."""

    def __init__(
        self,
        store: WriterStore,
        conn: AsyncConnection,
        driver: Driver,
        seq: int,
        head_hash: str,
        epoch: int,
    ) -> None:
        super().__init__(store, conn, driver, seq, head_hash, epoch)
        self.ledger = Ledger(self, store.ledger_cache)
        self.policies = PolicyWrites(self)
        self.idempotency = IdempotencyWrites(self)

    @cached_property
    def principals(self) -> PrincipalWrites:
        return PrincipalWrites(self)

    @cached_property
    def tokens(self) -> TokenWrites:
        return TokenWrites(self)

    @cached_property
    def keys(self) -> KeyWrites:
        return KeyWrites(self)

    @cached_property
    def grants(self) -> GrantWrites:
        return GrantWrites(self)

    @cached_property
    def groups(self) -> GroupWrites:
        return GroupWrites(self)

    @cached_property
    def approvals(self) -> ApprovalWrites:
        return ApprovalWrites(self)

    @cached_property
    def webhooks(self) -> WebhookWrites:
        return WebhookWrites(self)

    @cached_property
    def outbox(self) -> OutboxWrites:
        return OutboxWrites(self)

    @cached_property
    def meta(self) -> MetaWrites:
        return MetaWrites(self)

    @cached_property
    def audit(self) -> AuditReads:
        return AuditReads(self)

    @cached_property
    def checkpoints(self) -> CheckpointWrites:
        return CheckpointWrites(self)

    @cached_property
    def audit_keys(self) -> AuditKeyWrites:
        return AuditKeyWrites(self)

    @cached_property
    def retention(self) -> RetentionWrites:
        return RetentionWrites(self)

    @cached_property
    def sinks(self) -> SinkWrites:
        return SinkWrites(self)

    @cached_property
    def console_sessions(self) -> ConsoleSessionWrites:
        return ConsoleSessionWrites(self)

    @cached_property
    def secrets(self) -> SecretWrites:
        return SecretWrites(self)

    @cached_property
    def kek_rotations(self) -> KekRotationWrites:
        return KekRotationWrites(self)

    @cached_property
    def kms_credentials(self) -> KmsCredentialWrites:
        return KmsCredentialWrites(self)

    @cached_property
    def books(self) -> BookWrites:
        return BookWrites(self)

    @cached_property
    def usage(self) -> UsageWrites:
        return UsageWrites(self)

    @cached_property
    def anomalies(self) -> AnomalyWrites:
        return AnomalyWrites(self)

    @cached_property
    def baselines(self) -> AnomalyBaselineWrites:
        return AnomalyBaselineWrites(self)


__all__ = ["Reader", "Writer"]
