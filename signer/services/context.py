"""Who is calling and under which request id: passed explicitly into every service call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from signer import clock
from signer.audit import AuditDraft, AuditEvent, ErrorRef, EventTarget, Outcome
from signer.errors import Forbidden
from signer.identity import Role

# What every service takes for the time (``signer.clock.utcnow`` in the service; a fixed or stepped
# clock in tests): services never read a global clock themselves.
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Caller:
    principal_id: str
    name: str
    role: Role
    token_id: str


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    caller: Caller
    # The epoch of the facts the caller was authenticated with (see FactsCache).
    epoch: int
    # The address the request came from (signing and fetches; None in process), for the anomaly
    # detector (``signer.services.anomalies``).
    source: str | None = None

    def audit_event(
        self,
        kind: str,
        at: datetime,
        *,
        outcome: Outcome = Outcome.ALLOWED,
        resource: EventTarget | None = None,
        error: ErrorRef | None = None,
        **fields: Any,
    ) -> AuditEvent:
        """An audit event by this caller under this request id (``signer.audit.AuditEvent.of``)."""
        return AuditEvent.of(
            kind,
            at=at,
            outcome=outcome,
            actor=self.actor(),
            request_id=self.request_id,
            resource=resource,
            error=error,
            **fields,
        )

    def audit_draft(
        self, kind: str, at: datetime, *, resource: EventTarget | None = None, **fields: Any
    ) -> AuditDraft:
        """An event by this caller whose outcome each path fills in (``AuditDraft.event``)."""
        return AuditDraft(kind, at, self.actor(), self.request_id, resource, fields)

    def actor(self) -> dict[str, str]:
        return {
            "principal_id": self.caller.principal_id,
            "name": self.caller.name,
            "role": self.caller.role.value,
            "token_id": self.caller.token_id,
        }


def utcnow() -> datetime:
    return clock.utcnow()


def require_role(ctx: RequestContext, *roles: Role) -> None:
    if ctx.caller.role not in roles:
        raise Forbidden(
            "this operation needs one of the roles: " + ", ".join(r.value for r in roles),
            code="role_required",
        )


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
