"""Table definitions (SQLAlchemy Core) and the two column types that make both backends agree.

The migrations in ``migrations/versions`` create these tables; a test compares the migrated database
with this metadata so the two cannot drift apart. Timestamps are timezone-aware UTC on the way in and out:
``timestamptz`` on PostgreSQL, a fixed-width UTC text on SQLite (so text order is time order).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "JSONText",
    "UTCDateTime",
    "abi_functions",
    "address_book",
    "approval_requests",
    "approval_votes",
    "approval_webhooks",
    "approver_keys",
    "audit_archives",
    "audit_checkpoints",
    "audit_events",
    "audit_head",
    "audit_keys",
    "audit_sinks",
    "audit_tree_nodes",
    "console_sessions",
    "grants",
    "group_members",
    "idempotency_keys",
    "kek_rotations",
    "keys",
    "kms_credentials",
    "ledger",
    "meta",
    "metadata",
    "policy_attachments",
    "policy_versions",
    "principals",
    "secret_folder_defaults",
    "secret_versions",
    "secrets",
    "shadow_decisions",
    "token_book",
    "tokens",
    "webhook_outbox",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends; a naive datetime is refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite's DATETIME text has no offset: store UTC wall time, re-attach UTC on load.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """JSON kept as text (not JSONB) so both backends store and return exactly the same thing.

    A storage spelling, never hashed or compared (every digest is over ``policy.canonical_json``), so
    it takes whatever JSON can hold and a stored value never depends on the canonical encoder's rules."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


# SQLite turns "INTEGER PRIMARY KEY" into the rowid: no second index, cheaper appends.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

principals = Table(
    "principals",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=True),
    Column("disabled_at", UTCDateTime, nullable=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("principal_id", Text, ForeignKey("principals.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("family_id", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index(None, "family_id"),
    Index(None, "principal_id"),
)

keys = Table(
    "keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("label", Text, nullable=False),
    Column("curve", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("address", Text, nullable=True),
    Column("scope", Text, nullable=False),
    Column("tags", JSONText, nullable=False),
    Column("state", Text, nullable=False),
    Column("hsm_id", Text, nullable=False, unique=True),
    Column("attributes", JSONText, nullable=False),
    Column("created_by", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("compromised_at", UTCDateTime, nullable=True),
)

grants = Table(
    "grants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("principal_id", Text, ForeignKey("principals.id"), nullable=True),
    Column("resource_type", Text, nullable=False),
    Column("resource_id", Text, nullable=False),
    Column("operations", JSONText, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("created_by", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("group_name", Text, nullable=True),
    Column("max_uses", BigInteger, nullable=True),
    Column("value_budgets", JSONText, nullable=False, server_default="{}"),
    # An explicit "no access" grant (migration 0005): lists no operations, carries no limits.
    Column("no_access", Boolean, nullable=False, server_default=false()),
    Index("ix_grants_lookup", "principal_id", "resource_type", "resource_id"),
    Index("ix_grants_group_name", "group_name"),
    # The grants about one resource or folder (migration 0008_secret_listing).
    Index("ix_grants_resource", "resource_type", "resource_id"),
    CheckConstraint("(principal_id IS NULL) <> (group_name IS NULL)", name="one_subject"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_name", Text, primary_key=True),
    Column("principal_id", Text, ForeignKey("principals.id"), primary_key=True),
    Column("added_at", UTCDateTime, nullable=False),
    Column("added_by", Text, nullable=True),
    Index("ix_group_members_principal_id", "principal_id"),
)

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("policy_id", Text, primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("document", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("created_by", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

policy_attachments = Table(
    "policy_attachments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("policy_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("scope", Text, nullable=True),
    # A resource by reference (migration 0010: the older key_id column became ('key', key_id)).
    Column("resource_type", Text, nullable=True),
    Column("resource_id", Text, nullable=True),
    Column("mode", Text, nullable=False),
    Column("created_by", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("detached_at", UTCDateTime, nullable=True),
    ForeignKeyConstraint(["policy_id", "version"], ["policy_versions.policy_id", "policy_versions.version"]),
    CheckConstraint("(scope IS NULL) <> (resource_id IS NULL)", name="one_place"),
    CheckConstraint("(resource_type IS NULL) = (resource_id IS NULL)", name="whole_reference"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("limit_key", Text, nullable=False),
    Column("amount", Text, nullable=False),  # decimal string: wei amounts exceed 64 bits
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=True),
    Column("request_id", Text, nullable=True),
    Index("ix_ledger_limit_key_window_start", "limit_key", "window_start"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_digest", Text, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

shadow_decisions = Table(
    "shadow_decisions",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("attachment_id", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("request_id", Text, nullable=True),
    Column("live_effect", Text, nullable=False),
    Column("candidate_effect", Text, nullable=False),
    Column("differs", Boolean, nullable=False),
    Column("candidate", Text, nullable=False),
    Index("ix_shadow_decisions_attachment_id", "attachment_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("request_id", Text, nullable=True),
    Column("kind", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", Text, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# -- audit checkpoints (migration 0009) ----------------------------------------------------
# A signed checkpoint per tree size (the note as signed, the root, and the tree's right edge to resume
# from), and every perfect subtree of the Merkle tree over the events (``signer.audit_tree``), so any
# root or proof up to the newest checkpoint costs O(log^2 n) reads.

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", Text, nullable=False),
    Column("head_hash", Text, nullable=False),
    Column("edge", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

audit_tree_nodes = Table(
    "audit_tree_nodes",
    metadata,
    Column("level", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", Text, nullable=False),
    PrimaryKeyConstraint("level", "idx"),
)

# -- audit keys (migration 0021_audit_keys) ------------------------------------------------
# Every audit key that signs (or signed) checkpoints: its signed-note id, public half and token id, the
# seq of the ``audit.key_rotated`` event that introduced it (none for the first key), the first and last
# checkpoint sizes it signed, and when it was retired and its private half destroyed.

audit_keys = Table(
    "audit_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("hsm_id", Text, nullable=False),
    Column("rotation_seq", BigInteger, nullable=True, unique=True),
    Column("first_size", BigInteger, nullable=True),
    Column("retired_size", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
    Column("destroyed_at", UTCDateTime, nullable=True),
)

# -- audit retention and sinks (migration 0012) ------------------------------------------

audit_archives = Table(
    "audit_archives",
    metadata,
    Column("digest", Text, primary_key=True),  # SHA-256 (hex) of the archive file's bytes
    Column("first_seq", BigInteger, nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=True),
)

audit_sinks = Table(
    "audit_sinks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("delivered_seq", BigInteger, nullable=False),
    Column("lease_owner", Text, nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("failing_since", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
)

meta = Table(
    "meta",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# -- approvals (migration 0003) ---------------------------------------------------------

approval_requests = Table(
    "approval_requests",
    metadata,
    Column("id", Text, primary_key=True),
    # What is being approved ("sign_transaction", ...): the model is generic over the action.
    Column("kind", Text, nullable=False),
    Column("resource_id", Text, nullable=False),
    Column("requester_id", Text, ForeignKey("principals.id"), nullable=False),
    # The canonical body needed to perform the action again, exactly (never a secret value).
    Column("payload", JSONText, nullable=False),
    # sha256 hex of the canonical payload: what approvers approve and what execution must reproduce.
    Column("payload_digest", Text, nullable=False),
    Column("view", JSONText, nullable=False),
    # The requirements as decided at creation (group, quorum, expiry, rule ids) and the rejection limit.
    Column("requirements", JSONText, nullable=False),
    Column("state", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("result", JSONText, nullable=True),
    Column("result_fetched_at", UTCDateTime, nullable=True),
    Index(None, "state", "expires_at"),
    Index(None, "requester_id"),
)

approval_votes = Table(
    "approval_votes",
    metadata,
    Column("request_id", Text, ForeignKey("approval_requests.id"), nullable=False),
    Column("approver_id", Text, ForeignKey("principals.id"), nullable=False),
    # The token the vote was cast with: revoking it voids the vote at once.
    Column("token_id", Text, nullable=False),
    Column("decision", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("signature_scheme", Text, nullable=True),
    Column("signature", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # One identity, one vote per request.
    PrimaryKeyConstraint("request_id", "approver_id"),
)

approver_keys = Table(
    "approver_keys",
    metadata,
    Column("principal_id", Text, ForeignKey("principals.id"), primary_key=True),
    Column("scheme", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

approval_webhooks = Table(
    "approval_webhooks",
    metadata,
    Column("group_name", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=True),
    # The secret is derived from the token key and this salt (nothing secret is stored); NULL is the
    # salt-less derivation of rows made before migration 0004. A rotation keeps the previous salt until
    # ``previous_secret_until`` so that both signatures are sent meanwhile.
    Column("secret_salt", Text, nullable=True),
    Column("previous_secret_salt", Text, nullable=True),
    Column("previous_secret_until", UTCDateTime, nullable=True),
)

# Written in the transaction of the event it announces; delivered later, at least once, by a dispatcher.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", Text, primary_key=True),
    Column("group_name", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("event", JSONText, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Index(None, "delivered_at", "next_attempt_at"),
)

# -- console sessions (migration 0004_console_sessions) --------------------------------------------

# A signed-in approver's browser session: the cookie holds a random secret, the row only its keyed
# digest (HMAC under the token key). Bound to the principal and to the access token used to sign in.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("digest", LargeBinary, nullable=False, unique=True),
    Column("principal_id", Text, ForeignKey("principals.id"), nullable=False),
    Column("token_id", Text, ForeignKey("tokens.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "expires_at"),
    Index(None, "token_id"),
)

# -- secrets (migration 0006_secrets) --------------------------------------------------------------

# A secret's metadata; names are unique per folder. Values live only sealed, in secret_versions.
secrets = Table(
    "secrets",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("folder", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("tags", JSONText, nullable=False),
    Column("category", Text, nullable=False),
    Column("owner_type", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("consumers", JSONText, nullable=False),
    Column("origin", Text, nullable=False),
    Column("generation", JSONText, nullable=True),
    Column("current_version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Text, nullable=True),
    Column("last_fetched_at", UTCDateTime, nullable=True),
    Column("last_fetched_by", Text, nullable=True),
    # (migration 0007_secret_backends) where the value lives: 'sealed' here, or held by reference in
    # 'aws_secrets_manager' / 'openbao_kv2' under ``reference`` (an ARN or name; a KV v2 path).
    Column("backend", Text, nullable=False, server_default="sealed"),
    Column("reference", Text, nullable=True),
    # (migration 0013_secret_versions) versions and rotation: ``revision`` moves with every change of
    # the record or its versions (the ETag, checked by If-Match); ``pins`` maps a consumer (workload)
    # to the version its fetches get; the overlap a previous version stays readable for; the rotation
    # interval and when the next rotation is due; when the owner was last told it is overdue.
    Column("revision", Integer, nullable=False, server_default="1"),
    Column("pins", JSONText, nullable=False, server_default="{}"),
    Column("overlap_seconds", Integer, nullable=True),
    Column("rotation_interval_seconds", Integer, nullable=True),
    Column("rotation_due_at", UTCDateTime, nullable=True),
    Column("overdue_notified_at", UTCDateTime, nullable=True),
    # (migration 0019_secret_disable) the whole secret's state: 'active', or 'disabled' (no version of
    # it is read), who changed it last, when and why.
    Column("state", Text, nullable=False, server_default="active"),
    Column("state_changed_at", UTCDateTime, nullable=True),
    Column("state_changed_by", Text, nullable=True),
    Column("state_reason", Text, nullable=True),
    Index("ix_secrets_folder_name", "folder", "name", unique=True),
    Index("ix_secrets_rotation_due_at", "rotation_due_at"),
    # Listing by granted folder prefixes (migration 0008_secret_listing).
    Index("ix_secrets_folder_id", "folder", "id", postgresql_ops={"folder": "text_pattern_ops"}),
    # Secrets never fetched or not fetched in N days (migration 0015_usage).
    Index("ix_secrets_last_fetched_at", "last_fetched_at"),
)

# One row per version: the data key wrapped in the token by the KEK kek_id, and the sealed fields
# (field name -> base64 of the envelope), never a plaintext value.
# (migration 0013_secret_versions) a folder's defaults for the secrets created in it or below it.
secret_folder_defaults = Table(
    "secret_folder_defaults",
    metadata,
    Column("folder", Text, primary_key=True),
    Column("rotation_interval_seconds", Integer, nullable=True),
    Column("overlap_seconds", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Text, nullable=True),
)
secret_versions = Table(
    "secret_versions",
    metadata,
    Column("secret_id", Text, ForeignKey("secrets.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kek_id", Text, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("sealed_fields", JSONText, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=True),
    # (migration 0011_kek_rotation) the KEK id the fields' associated data binds, when a KEK rotation
    # rewrapped the data key under another KEK since (NULL: the same as kek_id).
    Column("bound_kek_id", Text, nullable=True),
    # (migration 0013_secret_versions) enabled | staged | disabled | destroyed, who moved it there, when
    # and why; ``disable_at``: the end of a previous version's overlap (the service disables it then).
    Column("state", Text, nullable=False, server_default="enabled"),
    Column("reason", Text, nullable=True),
    Column("state_changed_at", UTCDateTime, nullable=True),
    Column("state_changed_by", Text, nullable=True),
    Column("disable_at", UTCDateTime, nullable=True),
    PrimaryKeyConstraint("secret_id", "version"),
    Index("ix_secret_versions_disable_at", "disable_at"),
)

# (migration 0011_kek_rotation) One row per KEK rotation of a scope: the KEK it replaces and the new
# one, its state (switching -> rewrapping -> finished), the versions it rewrapped out of how many, and
# the old KEK's fate (kept until an operator destroys it). At most one unfinished rotation per scope.
kek_rotations = Table(
    "kek_rotations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("scope", Text, nullable=False),
    Column("old_kek_id", Text, nullable=False),
    Column("new_kek_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("total", Integer, nullable=False),
    Column("rewrapped", Integer, nullable=False),
    Column("retired", JSONText, nullable=False),
    Column("destroyed", JSONText, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("started_by", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_kek_rotations_scope", "scope", "started_at"),
)

# -- KMS credentials (migration 0014_kms_credentials) ----------------------------------------------

# The sealed secret of a SigV4 credential; the credential's principal, expiry and revocation live in
# its ``tokens`` row (kind ``kms``, same id: the access key id).
kms_credentials = Table(
    "kms_credentials",
    metadata,
    Column("id", Text, ForeignKey("tokens.id"), primary_key=True),
    Column("kek_id", Text, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("sealed_secret", LargeBinary, nullable=False),
)

# Usage (migration 0015_usage): aggregates of allowed uses, written in batches off the request path by
# ``signer.services.usage``; the audit log keeps every single event. ``day`` is days since 1970-01-01 UTC;
# ``workload`` is '' when the fetch named none.
secret_usage = Table(
    "secret_usage",
    metadata,
    Column("secret_id", Text, nullable=False),
    Column("day", Integer, nullable=False),
    Column("principal_id", Text, nullable=False),
    Column("workload", Text, nullable=False),
    Column("fetches", BigInteger, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("last_version", Integer, nullable=True),
    PrimaryKeyConstraint("secret_id", "day", "principal_id", "workload"),
    Index("ix_secret_usage_day", "day"),
)

# Per grant, per principal using it, per resource it was used on: how often and when; the versions of
# a secret fetched through it (None for keys and for secrets held by reference).
grant_usage = Table(
    "grant_usage",
    metadata,
    Column("grant_id", Text, nullable=False),
    Column("principal_id", Text, nullable=False),
    Column("resource_type", Text, nullable=False),
    Column("resource_id", Text, nullable=False),
    Column("uses", BigInteger, nullable=False),
    Column("first_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("min_version", Integer, nullable=True),
    Column("max_version", Integer, nullable=True),
    PrimaryKeyConstraint("grant_id", "principal_id", "resource_id"),
    Index("ix_grant_usage_principal_id", "principal_id"),
    Index("ix_grant_usage_resource_id", "resource_id"),
)

# The references (as spelled, with the workspace a name alone was looked up from; '' for none) that
# resolved to a secret through ``/v1/secrets/resolve``.
secret_reference_usage = Table(
    "secret_reference_usage",
    metadata,
    Column("secret_id", Text, nullable=False),
    Column("principal_id", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("workspace", Text, nullable=False),
    Column("uses", BigInteger, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("secret_id", "principal_id", "reference", "workspace"),
)

# Anomalies (migration 0016_anomalies): the source addresses each principal has been seen using, so a
# restart or another worker does not flag the same address as new again (``signer.services.anomalies``).
anomaly_sources = Table(
    "anomaly_sources",
    metadata,
    Column("principal_id", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("first_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("principal_id", "source"),
)

# Anomaly baselines (migration 0020_anomaly_baselines): what each principal did, counted per slot of
# time, shared by every worker and kept across restarts. ``kind`` is ``burst`` (requests per burst
# window; ``width`` is the window's length, so a changed setting starts new rows), ``hour`` (requests
# per UTC hour: the usual hours and the history) or ``denial`` (refusals per second); ``start`` is
# the slot's start in seconds since 1970. Added to in batches off the request path, pruned by age.
anomaly_baselines = Table(
    "anomaly_baselines",
    metadata,
    Column("principal_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("width", Integer, nullable=False),
    Column("start", BigInteger, nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("principal_id", "kind", "width", "start"),
    Index("ix_anomaly_baselines_kind_start", "kind", "start"),
)


# -- The console's books (migration 0017_console_books) --------------------------------------------

# Operator-maintained names for what a request shows: an address's label and note (addresses lowercase
# hex), a token contract's symbol and decimals per chain, a function's signature per 4-byte selector
# (``contract`` '' for every contract, else the lowercase address an ABI was registered for).
address_book = Table(
    "address_book",
    metadata,
    Column("address", Text, primary_key=True),
    Column("label", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Text, nullable=False),
)

token_book = Table(
    "token_book",
    metadata,
    Column("chain_id", BigInteger, nullable=False),
    Column("contract", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("decimals", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Text, nullable=False),
    PrimaryKeyConstraint("chain_id", "contract"),
)

abi_functions = Table(
    "abi_functions",
    metadata,
    Column("contract", Text, nullable=False),
    Column("selector", Text, nullable=False),
    Column("signature", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Text, nullable=False),
    PrimaryKeyConstraint("contract", "selector"),
)
