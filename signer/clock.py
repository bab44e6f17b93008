"""The service's clock: UTC wall time that moves with the monotonic clock once the process has started.

Decisions that depend on time (rolling spend and rate windows, token and grant expiry, approval
deadlines) must not be moved by a wall-clock step: a clock set forward by a day would otherwise empty
every daily spend window and re-enable spending; set back, it would revive expired approvals. So each
process reads the wall clock once, when this module is imported (at start), and from then on adds the
monotonic clock's progress. A clock step after start changes nothing; the process keeps the time it
started with, plus elapsed time (drift against NTP is bounded by the monotonic clock's rate error,
seconds per day at worst). Replicas each anchor at their own start; the ledger's windows tolerate a
replica behind (its records count for longer, never shorter).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    """``now()`` = the wall time at construction plus monotonic time elapsed since."""

    def __init__(self, wall: float | None = None, monotonic: float | None = None) -> None:
        self._wall = time.time() if wall is None else wall
        self._monotonic = time.monotonic() if monotonic is None else monotonic
        self._start = datetime.fromtimestamp(self._wall, UTC)

    def now(self, monotonic: float | None = None) -> datetime:
        elapsed = (time.monotonic() if monotonic is None else monotonic) - self._monotonic
        # timedelta(0, elapsed) is timedelta(seconds=elapsed) without parsing keywords (a third faster;
        # several reads per request).
        return self._start + timedelta(0, elapsed)


_CLOCK = Clock()


def utcnow() -> datetime:
    """The current UTC time, immune to wall-clock steps after the process started."""
    return _CLOCK.now()
