"""Decisions as values: an effect, the reasons behind it and what the caller must do next.

A ``Decision`` is what the engine returns and what the service puts in a 403 body and in the audit
event (``as_dict``): the effect, the reasons that produced it (rule or grant id, stable code, message,
and the policy document the rule came from), every policy document consulted (id, version, digest),
the reservations to record atomically with the decision, and for ``require_approval`` who must approve
and by when. Effects are ordered: deny beats require_approval beats allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from policy.facts import Facts, Reservation, UsageBound


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Effect.ALLOW: 0, Effect.REQUIRE_APPROVAL: 1, Effect.DENY: 2}


def strongest(effects: Iterable[Effect]) -> Effect | None:
    """The effect that wins among ``effects`` (deny > require_approval > allow), None if there are none."""
    return max(effects, key=lambda effect: effect.severity, default=None)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a decision came out as it did: which rule or grant, a stable code and a human message.
    ``policy`` names the document a rule came from (``id@version``), None for grants and defaults."""

    rule_id: str
    code: str
    message: str
    policy: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"rule_id": self.rule_id, "code": self.code, "message": self.message}
        if self.policy is not None:
            out["policy"] = self.policy
        return out


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """``quorum`` distinct members of ``group`` (never the requester) must approve before
    ``expires_at``; ``rule_ids`` are the rules that asked for it; ``rejections`` rejections end the
    request; ``signed`` demands approvals signed with each approver's registered key."""

    group: str
    quorum: int
    expires_at: datetime
    rule_ids: tuple[str, ...]
    rejections: int = 1
    signed: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": self.group,
            "quorum": self.quorum,
            "expires_at": self.expires_at.isoformat(),
            "rule_ids": list(self.rule_ids),
        }
        if self.rejections != 1:
            out["rejections"] = self.rejections
        if self.signed:
            out["signed"] = True
        return out


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """A policy document consulted by a decision, and where it was attached (``scope:a/b``, ``key:k``)."""

    policy_id: str
    version: int
    digest: str
    attached_to: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "version": self.version,
            "digest": self.digest,
            "attached_to": self.attached_to,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    reasons: tuple[Reason, ...] = field(default=())
    policies: tuple[PolicyRef, ...] = field(default=())
    reservations: tuple[Reservation, ...] = field(default=())
    approvals: tuple[ApprovalRequirement, ...] = field(default=())
    # The usage sums an allow depended on and how far each may move with the decision unchanged; None
    # when that is not known (every other effect: their reasons quote the sums). Not part of the value.
    bounds: tuple[UsageBound, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def needs_approval(self) -> bool:
        return self.effect is Effect.REQUIRE_APPROVAL

    @property
    def policy_digests(self) -> tuple[str, ...]:
        return tuple(ref.digest for ref in self.policies)

    def reasons_as_dicts(self) -> list[dict[str, str]]:
        return [reason.as_dict() for reason in self.reasons]

    def holds_under(self, facts: Facts) -> bool:
        """Whether ``evaluate`` of the same request, policy set and instant would return this very
        decision (effect, reasons, reservations) from ``facts`` instead of the facts it was made from.

        Only rules that read usage (spend and rate limits, limited grants) can tell the two apart, and
        each of them recorded in ``bounds`` the range its sum may take with its outcome unchanged. So a
        caller that judged a request before signing, on a lower bound of the usage, and reads the exact
        usage under its lock afterwards, may keep the first decision instead of evaluating again when
        this is true. False whenever it is not known (any effect but allow)."""
        if self.bounds is None:
            return False
        usage = facts.usage
        for bound in self.bounds:
            used = usage.get(bound.query)
            if used is None or not bound.admits(used):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (amounts as decimal strings, instants ISO 8601) for the audit event and a 403."""
        return {
            "effect": self.effect.value,
            "reasons": self.reasons_as_dicts(),
            "policies": [ref.as_dict() for ref in self.policies],
            "reservations": [r.as_dict() for r in self.reservations],
            "approvals": [a.as_dict() for a in self.approvals],
        }


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """The live decision, which counts, beside a candidate policy's would-be decision, which does not:
    the caller records only ``live``'s reservations and reports ``candidate``."""

    live: Decision
    candidate: Decision

    @property
    def differs(self) -> bool:
        return self.live.effect is not self.candidate.effect or {
            (r.rule_id, r.code) for r in self.live.reasons
        } != {(r.rule_id, r.code) for r in self.candidate.reasons}

    def as_dict(self) -> dict[str, Any]:
        return {"live": self.live.as_dict(), "candidate": self.candidate.as_dict(), "differs": self.differs}
