"""Window arithmetic: rolling-window and time-of-day boundaries, with no off-by-one at either edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import Effect, PolicyInputError, Reservation, UsageQuery, counts_toward, evaluate, rolling_since
from policy.windows import TimeOfDayWindow, parse_time_of_day
from tests.policy.support import NOW, full_facts, policy_set, request, rule

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
lengths = st.integers(min_value=1, max_value=400 * 86_400 * 10**6).map(lambda us: timedelta(microseconds=us))


@given(instants, lengths)
def test_a_record_counts_until_exactly_one_window_later(recorded_at, length):
    assert counts_toward(recorded_at, recorded_at, length)
    assert counts_toward(recorded_at, recorded_at + length - timedelta(microseconds=1), length)
    assert not counts_toward(recorded_at, recorded_at + length, length)


@given(instants, lengths, st.integers(min_value=1, max_value=10**12))
def test_records_from_the_future_always_count(now, length, ahead_us):
    # A replica whose clock runs ahead must make limits stricter, never looser.
    assert counts_toward(now + timedelta(microseconds=ahead_us), now, length)


@given(instants, lengths, instants)
def test_usage_query_agrees_with_counts_toward(now, length, recorded_at):
    query = UsageQuery("k", rolling_since(now, length))
    row = Reservation("k", 1, recorded_at, None)
    assert query.counts(row) == counts_toward(recorded_at, now, length)


def test_offsets_are_normalised_to_utc():
    paris = timezone(timedelta(hours=1))
    assert rolling_since(datetime(2026, 1, 1, 1, 0, tzinfo=paris), timedelta(hours=1)) == datetime(
        2025, 12, 31, 23, 0, tzinfo=UTC
    )


def test_naive_now_is_refused():
    with pytest.raises(PolicyInputError) as caught:
        evaluate(request(), policy_set(), full_facts(request(), policy_set()), now=datetime(2026, 1, 1))
    assert caught.value.code == "naive_datetime"


@pytest.mark.parametrize(
    ("text", "second"),
    [
        ("00:00", 0),
        ("09:30", 34_200),
        ("23:59:59", 86_399),
        ("24:00", 86_400),
        ("24:01", None),
        ("9:30", None),
        ("09:60", None),
        ("09:30:60", None),
        ("0930", None),
        ("٠٩:٣٠", None),
    ],
)
def test_time_of_day_parsing(text, second):
    assert parse_time_of_day(text) == second


WEEKDAY_9_TO_17 = TimeOfDayWindow(frozenset(range(5)), 9 * 3600, 17 * 3600)
WEDNESDAY = datetime(2026, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (WEDNESDAY + timedelta(hours=9), True),  # start is inside
        (WEDNESDAY + timedelta(hours=9) - timedelta(microseconds=1), False),
        (WEDNESDAY + timedelta(hours=17) - timedelta(microseconds=1), True),
        (WEDNESDAY + timedelta(hours=17), False),  # end is outside
        (WEDNESDAY + timedelta(days=3, hours=10), False),  # Saturday
        (datetime(2026, 3, 4, 9, 30, tzinfo=timezone(timedelta(hours=5))), False),  # 04:30 UTC
    ],
)
def test_time_of_day_boundaries(at, inside):
    assert WEEKDAY_9_TO_17.contains(at) is inside


@given(st.integers(min_value=0, max_value=86_399), st.integers(min_value=1, max_value=86_400), instants)
def test_time_of_day_window_is_half_open(start, span, day):
    end = min(start + span, 86_400)
    window = TimeOfDayWindow(frozenset(range(7)), start, end)
    midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
    assert window.contains(midnight + timedelta(seconds=start))
    assert window.contains(midnight + timedelta(seconds=end) - timedelta(microseconds=1))
    if end < 86_400:
        assert not window.contains(midnight + timedelta(seconds=end))
    if start > 0:
        assert not window.contains(midnight + timedelta(seconds=start) - timedelta(microseconds=1))


def test_end_of_day_window_covers_the_last_microsecond():
    late = TimeOfDayWindow(frozenset({2}), 22 * 3600, 86_400)
    assert late.contains(WEDNESDAY + timedelta(days=1) - timedelta(microseconds=1))
    assert not late.contains(WEDNESDAY + timedelta(days=1))  # Thursday 00:00 belongs to Thursday


def test_time_window_rule_uses_now():
    policies = policy_set(
        rule(
            "hours",
            "time_window",
            windows=[{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}],
        )
    )
    req = request()
    assert evaluate(req, policies, full_facts(req, policies), now=NOW).effect is Effect.ALLOW
    late = NOW.replace(hour=17)
    decision = evaluate(req, policies, full_facts(req, policies, late), now=late)
    assert decision.effect is Effect.DENY
    assert [r.code for r in decision.reasons] == ["outside_time_window"]
