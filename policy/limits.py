"""The stateful guards: rolling spend limits and request-rate limits, read from and charged to the ledger.

A limit counts per key, per principal or per scope (the scope its document is attached to; for a
document attached to a key, the key's own scope). Before deciding, the engine asks for the ledger sum
of its limit key over the rolling window ``(now - window, now]`` plus anything recorded later (see
``policy.windows``); a request fires the limit when that sum plus its own amount is over the maximum.
A request that is not denied must record the ``Reservation`` the limit names, atomically with the
decision, so requests decided one after another under the caller's lock can never overshoot.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Final

from policy.canonical import NATIVE
from policy.facts import Reservation, UsageBound, UsageQuery, rate_key, spend_key
from policy.rules import Hit, Rule, RuleContext, amount_of, asset_name, describe_window, uncounted_hit

LIMIT_SUBJECTS: Final = ("key", "principal", "scope")


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitRule(Rule):
    """A stateful guard: a sum over a rolling window, counted per key, principal or scope."""

    window: timedelta
    per: str

    def subject(self, ctx: RuleContext) -> str:
        per = self.per
        if per == "key":
            return ctx.request.resource_id
        if per == "principal":
            return ctx.request.principal_id
        if per == "scope":
            return ctx.scope
        raise KeyError(per)  # the parser admits only the three

    @abstractmethod
    def limit_key(self, ctx: RuleContext) -> str | None:
        """The ledger key this request reads and charges, None when the limit does not concern it."""

    @abstractmethod
    def amount(self, ctx: RuleContext) -> int:
        """How much this request adds to the sum."""

    @abstractmethod
    def room(self, amount: int) -> int:
        """The largest sum of earlier usage with which a request adding ``amount`` still passes."""

    @abstractmethod
    def exceeded(self, used: int, amount: int) -> Hit:
        """Why a request adding ``amount`` to ``used`` is over the limit."""

    def judge(self, ctx: RuleContext) -> tuple[Hit | None, Reservation | None, UsageBound | None]:
        """The whole check in one pass: the hit (None when within the limit), the reservation to
        record, and for a request that passes the range its sum may take with the outcome unchanged."""
        key = self.limit_key(ctx)
        if key is None:
            return None, None, None
        amount = self.amount(ctx)
        query = UsageQuery(key, ctx.now - self.window)
        used = ctx.facts.used(query)
        room = self.room(amount)
        reservation = Reservation(key, amount, ctx.now, ctx.now + self.window)
        if used > room:
            return self.exceeded(used, amount), reservation, None
        return None, reservation, UsageBound(query, high=room)

    def check(self, ctx: RuleContext) -> Hit | None:
        return self.judge(ctx)[0]

    def usage_query(self, ctx: RuleContext) -> UsageQuery | None:
        key = self.limit_key(ctx)
        return None if key is None else UsageQuery(key, ctx.now - self.window)

    def reservation(self, ctx: RuleContext) -> Reservation | None:
        key = self.limit_key(ctx)
        return None if key is None else Reservation(key, self.amount(ctx), ctx.now, ctx.now + self.window)

    def params(self) -> dict[str, Any]:
        return {"window_seconds": int(self.window.total_seconds()), "per": self.per}


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendLimit(LimitRule):
    """At most ``max_value`` of ``asset`` per rolling ``window`` per key, principal or scope, counting
    this request. Token amounts are the counted amounts of decoded token calls and permits; a call to
    the token that decodes to no amount fires the limit (``uncounted_hit``)."""

    kind: ClassVar[str] = "spend_limit"
    max_value: int
    asset: str = NATIVE

    def amount(self, ctx: RuleContext) -> int:
        return amount_of(ctx.request, self.asset)

    def judge(self, ctx: RuleContext) -> tuple[Hit | None, Reservation | None, UsageBound | None]:
        # A call to the token that the signer cannot count is refused, not counted as nothing.
        uncounted = uncounted_hit(ctx.request, self.asset)
        if uncounted is not None:
            return uncounted, None, None
        return LimitRule.judge(self, ctx)

    def room(self, amount: int) -> int:
        return self.max_value - amount

    def limit_key(self, ctx: RuleContext) -> str | None:
        # A request that moves none of the asset neither reads nor charges the ledger.
        if self.amount(ctx) == 0:
            return None
        return spend_key(self.per, self.subject(ctx), self.asset)

    def exceeded(self, used: int, amount: int) -> Hit:
        return Hit(
            "spend_limit_exceeded",
            f"{amount} {asset_name(self.asset)} would bring this {self.per}'s spend in the last "
            f"{describe_window(self.window)} to {used + amount}, over the limit of {self.max_value}",
        )

    def params(self) -> dict[str, Any]:
        return {"max_value": str(self.max_value), "asset": self.asset, **LimitRule.params(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit(LimitRule):
    """At most ``max_requests`` allowed or approval-pending requests per rolling ``window`` per key,
    principal or scope, counting this one. Denied requests reserve nothing, so they do not count."""

    kind: ClassVar[str] = "rate_limit"
    max_requests: int

    def amount(self, ctx: RuleContext) -> int:
        return 1

    def room(self, amount: int) -> int:
        return self.max_requests - amount

    def limit_key(self, ctx: RuleContext) -> str | None:
        return rate_key(self.per, self.subject(ctx))

    def exceeded(self, used: int, amount: int) -> Hit:
        return Hit(
            "rate_limit_exceeded",
            f"this {self.per} has made {used} requests in the last {describe_window(self.window)}; "
            f"the limit is {self.max_requests}",
        )

    def params(self) -> dict[str, Any]:
        return {"max_requests": self.max_requests, **LimitRule.params(self)}
