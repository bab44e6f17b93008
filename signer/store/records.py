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
    "GRANT_RESOURCE_TYPES",
    "KEY_STATES",
    "ROLES",
    "TOKEN_KINDS",
    "VOTE_DECISIONS",
    "ApprovalRequestRecord",
    "ApprovalVoteRecord",
    "ApproverKeyRecord",
    "AuditRecord",
    "GrantRecord",
    "KeyRecord",
    "PrincipalRecord",
    "TokenRecord",
]

# Closed sets checked before a row is written, so a typo never becomes a stored fact. Extending one
# is a code change here, deliberately (a new key state needs its transition rules reviewed).
ROLES = frozenset({"admin", "service", "approver", "auditor"})
TOKEN_KINDS = frozenset({"access", "refresh", "api"})
KEY_STATES = frozenset({"active", "disabled"})
GRANT_RESOURCE_TYPES = frozenset({"key", "scope", "secret"})
APPROVAL_STATES = frozenset({"pending", "approved", "signed", "failed", "rejected", "expired", "cancelled"})
VOTE_DECISIONS = frozenset({"approve", "reject"})
APPROVER_KEY_SCHEMES = frozenset({"ed25519", "secp256k1"})


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


@dataclass(frozen=True, slots=True)
class GrantRecord:
    id: str
    principal_id: str
    resource_type: str
    resource_id: str
    operations: list[str]
    expires_at: datetime | None
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None = None


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
