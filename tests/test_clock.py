"""F-15: a wall-clock step after start does not move the service's time (so it cannot empty a spend
window or revive an expired approval); elapsed time still does."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from signer import clock
from signer.clock import Clock


def test_now_is_the_start_wall_time_plus_monotonic_elapsed() -> None:
    c = Clock(wall=1_700_000_000.0, monotonic=500.0)
    assert c.now(monotonic=500.0) == datetime.fromtimestamp(1_700_000_000, UTC)
    assert c.now(monotonic=560.5) == datetime.fromtimestamp(1_700_000_000, UTC) + timedelta(seconds=60.5)


@pytest.mark.parametrize("step", [86_400.0, -86_400.0])
def test_a_wall_clock_step_after_start_changes_nothing(monkeypatch: pytest.MonkeyPatch, step: float) -> None:
    c = Clock()
    before = c.now()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + step)
    after = c.now()
    assert timedelta(0) <= after - before < timedelta(seconds=5)
    # The process-wide clock the services and the store use behaves the same.
    assert abs(clock.utcnow() - datetime.fromtimestamp(real_time(), UTC)) < timedelta(seconds=60)
