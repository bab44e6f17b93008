"""The ledger cache's per-key structure (seconds with prefix sums, plus the edge second's rows) against
an exact model: every committed row kept, summed by brute force.

The store drives ``_KeyRows`` like this test does: rows arrive in roughly increasing order (sometimes
milliseconds late, sometimes far behind), a window's start asks for its second's rows when it enters a
new second (read from the ledger, here from the model), older rows are merged in when a longer window
is asked for, and seconds no window can reach are trimmed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from signer.store.ledger import _KeyRows, _second_of

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
US = timedelta(microseconds=1)

offsets = st.integers(0, 5_000_000)  # microseconds after T0: five seconds, so seconds are shared
amounts = st.sampled_from([1, 7, 10**18, 2**200])


def model_sum(rows: list[tuple[datetime, int]], since: datetime | None) -> int:
    return sum(a for s, a in rows if since is None or s > since)


def ask(entry: _KeyRows, rows: list[tuple[datetime, int]], since: datetime | None) -> int:
    """What ``Ledger.usage`` does around ``sum_after``: read the edge second when it is needed."""
    edge = entry.edge_needed(since)
    if edge is not None:
        entry.set_edge(edge, [(s, a) for s, a in rows if _second_of(s) == edge])
    return entry.sum_after(since)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), offsets, amounts),
        st.tuples(st.just("late"), offsets, amounts),  # a row far behind the others
        st.tuples(st.just("ask"), offsets),
        st.tuples(st.just("ask_all")),
        st.tuples(st.just("at_least"), offsets),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_sums_after_any_instant_are_exact(ops) -> None:  # type: ignore[no-untyped-def]
    entry = _KeyRows(None)
    rows: list[tuple[datetime, int]] = []
    for op in ops:
        if op[0] in ("add", "late"):
            start = T0 + op[1] * US if op[0] == "add" else T0 - timedelta(seconds=3) + op[1] * US
            rows.append((start, op[2]))
            entry.add(start, op[2])
        elif op[0] == "ask":
            since = T0 + op[1] * US
            assert ask(entry, rows, since) == model_sum(rows, since)
        elif op[0] == "ask_all":
            assert ask(entry, rows, None) == model_sum(rows, None)
        else:
            # The check before signing reads without the ledger: never more than the truth.
            since = T0 + op[1] * US
            assert entry.sum_after(since) <= model_sum(rows, since)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(offsets, amounts), max_size=40), offsets, offsets)
def test_older_rows_merged_in_count_exactly(rows, horizon_at, since_at) -> None:  # type: ignore[no-untyped-def]
    horizon = T0 + horizon_at * US
    committed = [(T0 + o * US, a) for o, a in rows]
    entry = _KeyRows(horizon)
    for start, amount in committed:
        entry.add(start, amount)  # only those after the horizon are kept
    since = T0 + since_at * US
    if since >= horizon:
        assert ask(entry, committed, since) == model_sum(committed, since)
    # A longer window: the rows between the new horizon and the old one come from the ledger.
    earlier = min(since, horizon) - US
    entry.merge_older(earlier, [(s, a) for s, a in committed if earlier < s <= horizon])
    assert entry.covers(since)
    assert ask(entry, committed, since) == model_sum(committed, since)


def test_trimming_keeps_every_window_exact_and_memory_follows_seconds() -> None:
    entry = _KeyRows(None)
    rows: list[tuple[datetime, int]] = []
    window = timedelta(seconds=60)
    entry.longest = window
    now = T0
    for second in range(9_000):
        # Several rows a second, each second's rows in one cached entry.
        for tenth in range(3):
            start = T0 + timedelta(seconds=second, milliseconds=300 * tenth + 7)
            rows.append((start, 1))
            entry.add(start, 1)
        now = T0 + timedelta(seconds=second, milliseconds=950)
        if second % 250 == 0:
            recent = rows[-3 * 120 :]  # the model needs only the rows a 60 s window can reach
            since = now - window
            assert ask(entry, recent, since) == model_sum(recent, since)
        entry.trim(now)
    # Trimmed to the window plus an hour of slack once half the seconds could go: not 27,000 rows.
    assert len(entry.seconds) <= 3_600 + 60 + 9_000 // 2
    since = now - window
    assert entry.covers(since)
    assert ask(entry, rows[-3 * 120 :], since) == model_sum(rows, since) == 180
