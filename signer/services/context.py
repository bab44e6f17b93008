"""Who is calling and under which request id: passed explicitly into every service call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from signer import clock
from signer.errors import Forbidden
from signer.identity import Role


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

    def actor(self) -> dict[str, str]:
        return {
            "principal_id": self.caller.principal_id,
            "name": self.caller.name,
            "role": self.caller.role.value,
            "token_id": self.caller.token_id,
        }


# What a service is given to tell the time: the composition root passes ``signer.clock.utcnow``; tests
# pass one they move.
Clock = Callable[[], datetime]


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
