"""The store's record types: frozen values handed in and out of ``Reader``/``Writer``; no database code.

Datetimes are timezone-aware UTC, JSON columns come back as plain lists and dicts. ``AuditRecord`` is
defined by ``signer.audit`` (it is the audit log's own format) and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from signer.audit import AuditRecord

__all__ = [
    "APPROVAL_STATES",
    "APPROVER_KEY_SCHEMES",
    "ATTACHMENT_MODES",
    "KEY_STATES",
    "ROLES",
    "SECRET_BACKENDS",
    "SECRET_CATEGORIES",
    "SECRET_ORIGINS",
    "SECRET_OWNER_TYPES",
    "SECRET_STATES",
    "SECRET_VERSION_STATES",
    "TOKEN_KINDS",
    "VOTE_DECISIONS",
    "AddressEntry",
    "ApprovalRequestRecord",
    "ApprovalVoteRecord",
    "ApproverKeyRecord",
    "AttachmentRecord",
    "AuditRecord",
    "ConsoleSessionRecord",
    "FunctionEntry",
    "GrantRecord",
    "IdempotencyRecord",
    "KeyRecord",
    "KmsCredentialRecord",
    "LedgerEntry",
    "OutboxRecord",
    "PolicyVersionRecord",
    "PrincipalRecord",
    "SecretRecord",
    "SecretVersionRecord",
    "TokenEntry",
    "TokenRecord",
    "WebhookRecord",
]

# Closed sets checked before a row is written, so a typo never becomes a stored fact. Extending one
# is a code change here, deliberately (a new key state needs its transition rules reviewed).
ROLES = frozenset({"admin", "service", "approver", "auditor"})
TOKEN_KINDS = frozenset({"access", "refresh", "api", "kms", "cert"})
# The key lifecycle's states (signer.services.key_states holds the graph between them; a test keeps the
# two equal). ``disabled`` is gone: migration 0018 made every disabled key ``suspended``.
KEY_STATES = frozenset(
    {
        "pre_activation",
        "active",
        "suspended",
        "deactivated",
        "compromised",
        "destroyed",
        "destroyed_compromised",
    }
)
SECRET_CATEGORIES = frozenset(
    {"api_key", "oauth_token", "database", "registry", "publication", "infrastructure", "other"}
)
SECRET_OWNER_TYPES = frozenset({"principal", "group"})
SECRET_ORIGINS = frozenset({"provided", "generated"})
SECRET_BACKENDS = frozenset({"sealed", "aws_secrets_manager", "openbao_kv2"})
SECRET_VERSION_STATES = frozenset({"enabled", "staged", "disabled", "destroyed"})
# A whole secret's state, apart from its versions': a disabled secret answers no read of any version.
SECRET_STATES = frozenset({"active", "disabled"})
# "released": an approved request its requester ran itself (a secret read), whose response was never stored.
APPROVAL_STATES = frozenset(
    {"pending", "approved", "signed", "released", "failed", "rejected", "expired", "cancelled"}
)
VOTE_DECISIONS = frozenset({"approve", "reject"})
APPROVER_KEY_SCHEMES = frozenset({"ed25519", "secp256k1"})
ATTACHMENT_MODES = frozenset({"live", "shadow"})


@dataclass(frozen=True, slots=True)
class PrincipalRecord:
    id: str
    name: str
    role: str
    created_at: datetime
    created_by: str | None = None
    disabled_at: datetime | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token: ``digest`` is the HMAC of the secret, never the secret. ``get_token`` fills the
    ``principal_*`` fields from the joined principal; ``insert_token`` ignores them."""

    id: str
    principal_id: str
    kind: str
    digest: bytes = field(repr=False)
    family_id: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    principal_name: str = ""
    principal_role: str = ""
    principal_disabled_at: datetime | None = None

    @property
    def principal_disabled(self) -> bool:
        return self.principal_disabled_at is not None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    label: str
    curve: str
    public_key: str  # hex, no 0x
    address: str | None
    scope: str
    tags: list[str]
    state: str
    hsm_id: str
    attributes: dict[str, Any]
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    # When the key is believed to have been compromised (given with the compromise), if it was said.
    compromised_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """A secret's metadata: never a value. ``folder`` is a scope path (its first segment the
    organisation whose KEK seals it); ``generation`` is the rule a generated secret was made by."""

    id: str
    name: str
    folder: str
    description: str
    tags: list[str]
    category: str
    owner_type: str
    owner: str
    consumers: list[str]
    origin: str
    generation: dict[str, Any] | None
    current_version: int
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None
    last_fetched_at: datetime | None = None
    last_fetched_by: str | None = None
    # Where the value lives: "sealed" (versions in secret_versions) or a backend holding it by
    # ``reference`` (then no sealed versions, and current_version 0: the backend keeps versions).
    backend: str = "sealed"
    reference: str | None = None
    # Versions and rotation (``signer.services.secret_versions``): the ETag's revision, consumer pins
    # (workload -> version), overlap and rotation interval in seconds, when rotation is next due.
    revision: int = 1
    pins: dict[str, int] = field(default_factory=dict)
    overlap_seconds: int | None = None
    rotation_interval_seconds: int | None = None
    rotation_due_at: datetime | None = None
    overdue_notified_at: datetime | None = None
    # The whole secret's state (``active`` or ``disabled``: no version is read while disabled), who
    # changed it last, when and why (``SecretsService.set_state``).
    state: str = "active"
    state_changed_at: datetime | None = None
    state_changed_by: str | None = None
    state_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SecretVersionRecord:
    """One version of a secret's value: the data key wrapped by the KEK ``kek_id`` in the token, and
    each field sealed under that data key (``signer.crypto.envelope``). Never plaintext."""

    secret_id: str
    version: int
    kek_id: str
    wrapped_key: bytes
    sealed_fields: dict[str, bytes]
    created_at: datetime
    created_by: str | None
    # The KEK id the fields' associated data binds, when a KEK rotation has rewrapped the data key under
    # another KEK since they were sealed (None: ``kek_id``).
    bound_kek_id: str | None = None

    @property
    def aad_kek_id(self) -> str:
        return self.bound_kek_id or self.kek_id

    # enabled | staged | disabled | destroyed (a destroyed version keeps no wrapped key or field),
    # why and by whom it was last changed, and when its overlap ends (``disable_at``).
    state: str = "enabled"
    reason: str | None = None
    state_changed_at: datetime | None = None
    state_changed_by: str | None = None
    disable_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """A grant to one principal (``principal_id``) or to every member of a group (``group_name``):
    exactly one of the two is set. ``no_access`` marks an explicit "no access" grant (no operations, no
    limits). ``value_budgets`` maps ``native`` or a token address to a decimal string (wei amounts
    exceed 64 bits)."""

    id: str
    principal_id: str | None
    resource_type: str
    resource_id: str
    operations: list[str]
    expires_at: datetime | None
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None = None
    group_name: str | None = None
    max_uses: int | None = None
    value_budgets: dict[str, str] = field(default_factory=dict)
    # An explicit "no access" to the resource (lists no operations, carries no limits).
    no_access: bool = False

    @property
    def subject(self) -> str:
        return f"group:{self.group_name}" if self.group_name is not None else f"principal:{self.principal_id}"


@dataclass(frozen=True, slots=True)
class PolicyVersionRecord:
    """One immutable version of a policy document: its canonical JSON and sha256 digest."""

    policy_id: str
    version: int
    document: str
    digest: str
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """A policy version in force (``live``) or evaluated beside it (``shadow``) at a scope or on one
    resource by reference (``resource_type``: ``key`` or ``secret``, ``resource_id``); exactly one of the
    two places is set (migration 0010 turned the older ``key_id`` column into key references)."""

    id: str
    policy_id: str
    version: int
    scope: str | None
    resource_type: str | None
    resource_id: str | None
    mode: str
    created_by: str | None
    created_at: datetime
    detached_at: datetime | None = None

    @property
    def key_id(self) -> str | None:
        """The key it is attached to (the older clients' field), or None."""
        return self.resource_id if self.resource_type == "key" else None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A reservation to record: ``amount`` counts toward ``limit_key`` for windows reaching back past
    ``window_start``."""

    limit_key: str
    amount: int
    window_start: datetime
    window_end: datetime | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A caller's ``Idempotency-Key``: the stored response, or (``claim`` set, ``response`` empty) a
    reservation taken before the HSM is asked, by the request holding the claim token; ``created_at``
    is when it was claimed, so a claimant that died lets it go stale."""

    principal_id: str
    key: str
    request_digest: str
    response: dict[str, Any]
    created_at: datetime
    claim: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequestRecord:
    """A request waiting for (or past) M-of-N approval. ``payload`` is the canonical body that performs
    the action again, ``payload_digest`` its sha256 hex; ``requirements`` is the snapshot taken at
    creation: {"approvals": [{group, quorum, expires_at, rule_ids}], "reject_quorum": n, ...}."""

    id: str
    kind: str
    resource_id: str
    requester_id: str
    payload: dict[str, Any]
    payload_digest: str
    view: dict[str, Any]
    requirements: dict[str, Any]
    state: str
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    result: dict[str, Any] | None = None
    result_fetched_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApprovalVoteRecord:
    """One identity's vote on a request. ``Reader.approval_votes`` fills the ``principal_*`` and
    ``token_*`` fields from the voter's principal and the token it voted with, as they are now."""

    request_id: str
    approver_id: str
    token_id: str
    decision: str
    digest: str
    created_at: datetime
    signature_scheme: str | None = None
    signature: str | None = None
    principal_name: str = ""
    principal_role: str = ""
    principal_disabled_at: datetime | None = None
    token_revoked_at: datetime | None = None
    token_found: bool = True


@dataclass(frozen=True, slots=True)
class ApproverKeyRecord:
    principal_id: str
    scheme: str
    public_key: str  # hex, no 0x
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A webhook call to make: ``event`` is the JSON body; delivered at least once (receivers dedupe on
    ``id``), retried with back-off until ``delivered_at`` is set."""

    id: str
    group_name: str
    url: str
    event: dict[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """An approver group's webhook: where it goes and the salts its signing secrets derive from (a salt
    is not a secret: the secret needs the token key, which never enters the database)."""

    group_name: str
    url: str
    created_at: datetime
    created_by: str | None
    secret_salt: str | None
    previous_secret_salt: str | None = None
    previous_secret_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsoleSessionRecord:
    """A console session: ``digest`` is the keyed hash of the cookie's secret (never the secret)."""

    id: str
    digest: bytes
    principal_id: str
    token_id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:
        return f"ConsoleSessionRecord(id={self.id!r}, principal_id={self.principal_id!r})"


@dataclass(frozen=True, slots=True)
class KmsCredentialRecord:
    """The sealed secret of a KMS (SigV4) credential. Its id is the access key id and the id of the
    ``tokens`` row (kind ``kms``) that carries its principal, expiry and revocation; ``sealed_secret``
    is the secret access key under a data key wrapped by the token's KEK (never the secret itself)."""

    id: str
    kek_id: str
    wrapped_key: bytes = field(repr=False)
    sealed_secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AddressEntry:
    """An address book entry: ``address`` lowercase 0x-hex, its label and a note ('' for none)."""

    address: str
    label: str
    note: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """A token book entry: the ERC-20 contract (lowercase 0x-hex) on ``chain_id``, its symbol and
    decimals (amounts are shown as ``base units / 10**decimals``)."""

    chain_id: int
    contract: str
    symbol: str
    decimals: int
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class FunctionEntry:
    """A registered function: its 4-byte ``selector`` (0x + 8 hex) and canonical ``signature`` such as
    ``transfer(address,uint256)``; ``contract`` '' for every contract, else the ABI's contract."""

    contract: str
    selector: str
    signature: str
    updated_at: datetime
    updated_by: str
