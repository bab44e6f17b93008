"""Request and response bodies of the impact review, usage and checklist routes, for the generated
contract. The reports' inner entries are described in README ("Impact review, usage and the operator
checklist") and kept open here (objects), so a field added to a report does not break older clients."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_ID = r"^[A-Za-z0-9_.-]{1,64}$"


class ImpactBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    action: Literal[
        "revoke_grant",
        "disable_principal",
        "delete_secret",
        "rotate_secret",
        "disable_secret",
        "enable_secret",
    ]
    id: str = Field(pattern=_ID, description="the grant, principal or secret the action is about")
    days: int = Field(default=30, ge=0, le=3660, description="the usage window: the last N days")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ImpactReport(_Open):
    action: str
    target: dict[str, Any]
    as_of: str
    days: int
    dry_run: bool
    resources: list[dict[str, Any]]
    resources_total: int
    unused_after: dict[str, Any]
    summary: dict[str, Any]


class ChecklistItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    what: str
    why: str
    action: str
    count: int = Field(ge=0)
    entries: list[dict[str, Any]]


class Checklist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: str
    thresholds: dict[str, int]
    items: list[ChecklistItem]


class UsageReport(_Open):
    days: int
    never_fetched: dict[str, Any]
    not_fetched_in_days: dict[str, Any]
    grants_never_used: dict[str, Any]


class SecretUsage(_Open):
    secret_id: str
    days: int
    last_fetched: dict[str, Any] | None
    by_principal: list[dict[str, Any]]
    by_day: list[dict[str, Any]]
    grants: list[dict[str, Any]]


class GrantUsage(_Open):
    grant_id: str
    last_used_at: str | None
    uses: int
    by: list[dict[str, Any]]
