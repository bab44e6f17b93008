"""Time arithmetic for policy: instants in UTC, rolling windows and time-of-day windows.

Every instant the engine sees must be timezone-aware; it is converted to UTC and a naive one is refused
(a naive ``now`` would silently mean the server's local zone). Boundaries, stated once:

- A rolling window of length L evaluated at ``now`` covers the half-open interval ``(now - L, now]``
  plus anything recorded after ``now``: a reservation recorded at instant ``a`` counts toward every
  evaluation at ``t`` with ``t < a + L``. At ``a + L`` exactly it no longer counts. Records "from the
  future" (another replica's clock running ahead) count too, so clock skew can only make a limit
  stricter, never re-enable spending.
- A time-of-day window ``start``-``end`` on given weekdays contains ``t`` when ``t``'s UTC weekday is
  listed and ``start <= time-of-day(t) < end``; ``end`` may be ``24:00``. Overnight windows are written
  as two windows (``22:00``-``24:00`` and ``00:00``-``06:00`` on the next day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from policy.errors import PolicyInputError

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SECONDS_PER_DAY: Final = 86_400


def utc(instant: datetime, name: str = "now") -> datetime:
    """``instant`` in UTC; raises ``PolicyInputError`` (``naive_datetime``) if it carries no zone."""
    if type(instant) is datetime and instant.tzinfo is UTC:
        return instant  # already what is asked for (the common case: the engine passes it on)
    if not isinstance(instant, datetime):
        raise PolicyInputError("invalid_datetime", f"{name} must be a datetime")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise PolicyInputError("naive_datetime", f"{name} must be timezone-aware")
    return instant.astimezone(UTC)


def rolling_since(now: datetime, length: timedelta) -> datetime:
    """The exclusive lower bound of the rolling window of ``length`` ending at ``now``."""
    return utc(now) - length


def counts_toward(recorded_at: datetime, now: datetime, length: timedelta) -> bool:
    """Whether a record made at ``recorded_at`` counts in the window of ``length`` evaluated at ``now``."""
    return utc(recorded_at, "recorded_at") > rolling_since(now, length)


@dataclass(frozen=True, slots=True)
class TimeOfDayWindow:
    """Weekdays (0 = Monday) and a ``[start, end)`` span in seconds after UTC midnight."""

    weekdays: frozenset[int]
    start_second: int
    end_second: int

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= frozenset(range(7)):
            raise PolicyInputError("invalid_window", "weekdays must be a non-empty subset of 0..6")
        if not 0 <= self.start_second < self.end_second <= SECONDS_PER_DAY:
            raise PolicyInputError("invalid_window", "a window needs 0 <= start < end <= 24:00")

    def contains(self, instant: datetime) -> bool:
        at = utc(instant)
        if at.weekday() not in self.weekdays:
            return False
        # Whole microseconds since midnight: exact, like the timedelta arithmetic it replaces.
        since_midnight = ((at.hour * 60 + at.minute) * 60 + at.second) * 1_000_000 + at.microsecond
        return self.start_second * 1_000_000 <= since_midnight < self.end_second * 1_000_000

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[d] for d in sorted(self.weekdays))
        return f"{days} {format_time_of_day(self.start_second)}-{format_time_of_day(self.end_second)} UTC"


def parse_time_of_day(text: str) -> int | None:
    """Seconds after midnight for ``HH:MM`` or ``HH:MM:SS`` (``24:00`` allowed); None if malformed."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(len(p) == 2 and p.isascii() and p.isdigit() for p in parts):
        return None
    hours, minutes = int(parts[0]), int(parts[1])
    seconds = int(parts[2]) if len(parts) == 3 else 0
    if minutes > 59 or seconds > 59 or hours > 24 or (hours == 24 and (minutes or seconds)):
        return None
    return hours * 3600 + minutes * 60 + seconds


def format_time_of_day(second: int) -> str:
    hours, rest = divmod(second, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
