"""Stateful limits without state: the ledger's shape, the questions the engine asks of it, the answers.

The service keeps one ledger of reservations, rows of ``(limit_key, amount, window_start)``; spend
limits, request-rate limits and grant budgets all live in it, told apart by the limit key (a string
such as ``spend:key:key_1:native`` or ``rate:principal:prn_7`` or ``grant:grt_2:uses``). Before deciding,
the caller asks the engine which sums it needs (``UsageQuery``: a limit key and an exclusive lower bound
on ``window_start``, None meaning "ever"), answers each from the ledger under its lock, and passes the
answers in as ``Facts``. A sum the engine needs but was not given makes the rule that needed it deny.
``Facts.from_reservations`` is the exact meaning of a query, executable: the service's SQL must agree
with it (``SUM(amount) WHERE limit_key = :key AND window_start > :since``, with no upper bound so rows
written by a replica whose clock runs ahead still count).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from policy.errors import PolicyError, PolicyInputError
from policy.windows import utc

_PLAIN_PART = re.compile(r"[A-Za-z0-9_.\-~/]*")


@functools.lru_cache(maxsize=4096)
def _part(text: str) -> str:
    # ':' separates the parts of a key, so it is escaped inside them; '/' stays readable in scopes.
    # Memoised: the same few principals, keys and scopes come back on every request.
    return text if _PLAIN_PART.fullmatch(text) else quote(text, safe="/")


def spend_key(per: str, subject: str, asset: str) -> str:
    return f"spend:{per}:{_part(subject)}:{asset}"


def rate_key(per: str, subject: str) -> str:
    return f"rate:{per}:{_part(subject)}"


def grant_uses_key(grant_id: str) -> str:
    return f"grant:{_part(grant_id)}:uses"


def grant_spend_key(grant_id: str, asset: str) -> str:
    return f"grant:{_part(grant_id)}:spend:{asset}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A row the caller must record, atomically with the decision, for an allow or approval decision.

    It counts toward a limit for every evaluation at an instant ``t >= window_start`` whose window
    reaches back past ``window_start``; ``window_end`` is when it stops counting toward the longest
    window that asked for it (None for grant budgets, which count forever), so the service may purge
    it after that. A request that fails after reserving must release (delete) its rows.
    """

    limit_key: str
    amount: int
    window_start: datetime
    window_end: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit_key": self.limit_key,
            "amount": str(self.amount),
            "window_start": self.window_start.isoformat(),
            "window_end": None if self.window_end is None else self.window_end.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """The sum of ``amount`` over recorded reservations with this ``limit_key`` and
    ``window_start > since`` (all of them when ``since`` is None)."""

    limit_key: str
    since: datetime | None

    def counts(self, reservation: Reservation) -> bool:
        return reservation.limit_key == self.limit_key and (
            self.since is None or reservation.window_start > self.since
        )

    def as_dict(self) -> dict[str, str | None]:
        return {"limit_key": self.limit_key, "since": None if self.since is None else self.since.isoformat()}


@dataclass(frozen=True, slots=True)
class UsageBound:
    """A usage sum a decision depended on, and the range it may take with the decision unchanged:
    ``low <= used <= high`` (None: unbounded on that side). A limit that passed with room bounds its
    sum from above (more usage would fire it); a grant that was refused for its limits bounds it from
    below (less usage might have chosen it)."""

    query: UsageQuery
    low: int | None = None
    high: int | None = None

    def admits(self, used: int) -> bool:
        return (self.low is None or used >= self.low) and (self.high is None or used <= self.high)


class MissingFactError(PolicyError):
    """The caller did not answer a ``UsageQuery`` the engine needs; the rule that needed it denies."""


@dataclass(frozen=True, slots=True)
class Facts:
    """Answers to usage queries. Empty facts are valid: they fail only the rules that need a sum.

    ``lookup``, when given, answers the queries ``usage`` does not hold, on demand: for a caller that
    can read any sum cheaply (an in-memory ledger) and would rather not ask ``usage_queries`` first.
    Its answers are checked like ``usage``'s."""

    usage: Mapping[UsageQuery, int] = field(default_factory=dict)
    lookup: Callable[[UsageQuery], int] | None = field(default=None, compare=False)
    # The unusual-access signals the service saw for this request (``new_source``, ``burst``,
    # ``off_hours``, ``repeated_denials``; see ``policy.rules.ANOMALY_SIGNALS``). Only ``anomaly``
    # rules read them; none given means none seen.
    anomalies: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for query, used in self.usage.items():
            if isinstance(used, bool) or not isinstance(used, int) or used < 0:
                raise PolicyInputError("invalid_facts", "every usage must be a non-negative integer")
            if query.since is not None:
                utc(query.since, "since")

    def used(self, query: UsageQuery) -> int:
        used = self.usage.get(query)
        if used is not None:
            return used
        if self.lookup is None:
            raise MissingFactError(
                "facts_missing", f"no usage given for {query.limit_key} since {query.since}"
            )
        used = self.lookup(query)
        if isinstance(used, bool) or not isinstance(used, int) or used < 0:
            raise PolicyInputError("invalid_facts", "every usage must be a non-negative integer")
        return used

    @classmethod
    def from_reservations(cls, queries: Iterable[UsageQuery], reservations: Iterable[Reservation]) -> Facts:
        """Answer ``queries`` from an in-memory ledger (what the service does in SQL)."""
        rows = list(reservations)
        return cls({q: sum(r.amount for r in rows if q.counts(r)) for q in set(queries)})
