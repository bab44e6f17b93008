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
    "GRANT_RESOURCE_TYPES",
    "KEY_STATES",
    "ROLES",
    "TOKEN_KINDS",
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
