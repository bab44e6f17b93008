"""Decisions as values: an effect plus the reasons behind it, ready for a 403 body and the audit log."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a decision came out as it did: which rule or grant, a stable code and a human message."""

    rule_id: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"rule_id": self.rule_id, "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    reasons: tuple[Reason, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    def reasons_as_dicts(self) -> list[dict[str, str]]:
        return [reason.as_dict() for reason in self.reasons]
