"""Gap detection and slice planning: hand-checked cases, then properties over random windows.

Times are written in UTC; the New York time is in the comments.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, PageUnit
from barfill.domain.intervals import Interval, intersect, normalize, subtract, union
from barfill.domain.planner import Plan, estimate_units, find_gaps, ideal_requests, plan_slices
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

ALL = frozenset(Timeframe)
DAY = 86_400


def utc(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())


def iv(a: str, b: str) -> Interval:
    return Interval(utc(a), utc(b))


def bars(
    limit: int,
    history_days: dict[Timeframe, int] | None = None,
    max_span_days: dict[Timeframe, int] | None = None,
) -> Capabilities:
    """A provider whose page limit counts bars, regular hours."""
    return Capabilities(
        "bars", ALL, limit, history_days=history_days or {}, max_span_days=max_span_days or {}
    )


def minutes(limit: int) -> Capabilities:
    """A Polygon-like provider: the limit counts the minutes behind the answer, extended hours."""
    return Capabilities("minutes", ALL, limit, PageUnit.base_minutes, extended_hours=True)


def spans(plan: Plan) -> list[tuple[int, int, int]]:
    return [(s.start, s.end, s.est_units) for s in plan.slices]


@pytest.fixture(scope="module")
def xnys() -> TradingCalendar:
    return get_calendar("XNYS")


NOW = utc("2026-11-20 00:00")

# -- find_gaps ------------------------------------------------------------------------------------


def test_gaps_skip_the_weekend_and_juneteenth(xnys: TradingCalendar) -> None:
    window = iv("2024-06-17 04:00", "2024-06-24 04:00")  # Monday to Monday, New York midnights
    covered = [iv("2024-06-17 13:30", "2024-06-17 20:00"), iv("2024-06-18 13:00", "2024-06-18 15:00")]
    assert find_gaps(window, covered, xnys) == [
        iv("2024-06-18 15:00", "2024-06-18 20:00"),
        iv("2024-06-20 13:30", "2024-06-20 20:00"),
        iv("2024-06-21 13:30", "2024-06-21 20:00"),
    ]
    assert find_gaps(window, covered, xnys, extended=True) == [
        iv("2024-06-17 08:00", "2024-06-17 13:30"),  # 04:00-09:30 EDT
        iv("2024-06-17 20:00", "2024-06-18 00:00"),  # 16:00-20:00 EDT
        iv("2024-06-18 08:00", "2024-06-18 13:00"),
        iv("2024-06-18 15:00", "2024-06-19 00:00"),
        iv("2024-06-20 08:00", "2024-06-21 00:00"),
        iv("2024-06-21 08:00", "2024-06-22 00:00"),
    ]


def test_no_gaps_when_covered_or_closed(xnys: TradingCalendar) -> None:
    window = iv("2024-06-17 04:00", "2024-06-18 04:00")
    assert find_gaps(window, [window], xnys) == []
    assert find_gaps(iv("2025-01-09 04:00", "2025-01-10 04:00"), [], xnys) == []  # day of mourning
    assert find_gaps(iv("2024-06-22 04:00", "2024-06-24 04:00"), [], xnys, extended=True) == []  # weekend


# -- plan_slices: alignment -------------------------------------------------------------------------


def test_slices_are_aligned_to_bar_labels(xnys: TradingCalendar) -> None:
    gap = [iv("2024-07-01 13:45", "2024-07-01 14:10")]  # 09:45-10:10 EDT
    assert spans(plan_slices(gap, Timeframe.h1, bars(100), xnys, now=NOW)) == [
        (utc("2024-07-01 13:00"), utc("2024-07-01 15:00"), 2)
    ]
    assert spans(plan_slices(gap, Timeframe.h4, bars(100), xnys, now=NOW)) == [
        (utc("2024-07-01 12:00"), utc("2024-07-01 16:00"), 1)  # 08:00-12:00 EDT
    ]
    assert spans(plan_slices(gap, Timeframe.m15, bars(100), xnys, now=NOW)) == [
        (utc("2024-07-01 13:45"), utc("2024-07-01 14:15"), 2)
    ]
    assert spans(plan_slices(gap, Timeframe.d1, bars(100), xnys, now=NOW)) == [
        (utc("2024-07-01 04:00"), utc("2024-07-02 04:00"), 1)
    ]
    assert spans(plan_slices(gap, Timeframe.w1, bars(100), xnys, now=NOW)) == [
        (utc("2024-07-01 04:00"), utc("2024-07-08 04:00"), 1)
    ]


def test_a_session_over_the_limit_is_split_at_bar_boundaries(xnys: TradingCalendar) -> None:
    gap = [iv("2024-07-01 13:30", "2024-07-01 20:00")]  # 390 minutes
    assert spans(plan_slices(gap, Timeframe.m1, bars(100), xnys, now=NOW)) == [
        (utc("2024-07-01 13:30"), utc("2024-07-01 15:10"), 100),
        (utc("2024-07-01 15:10"), utc("2024-07-01 16:50"), 100),
        (utc("2024-07-01 16:50"), utc("2024-07-01 18:30"), 100),
        (utc("2024-07-01 18:30"), utc("2024-07-01 20:00"), 90),
    ]


def test_covered_time_between_gaps_counts_when_spanned(xnys: TradingCalendar) -> None:
    gaps = [iv("2024-07-01 13:30", "2024-07-01 14:00"), iv("2024-07-01 19:30", "2024-07-01 20:00")]
    assert spans(plan_slices(gaps, Timeframe.m1, bars(1000), xnys, now=NOW)) == [
        (utc("2024-07-01 13:30"), utc("2024-07-01 20:00"), 390)
    ]
    # A page too small for the covered middle: two slices, not one running through it.
    assert spans(plan_slices(gaps, Timeframe.m1, bars(60), xnys, now=NOW)) == [
        (utc("2024-07-01 13:30"), utc("2024-07-01 14:00"), 30),
        (utc("2024-07-01 19:30"), utc("2024-07-01 20:00"), 30),
    ]


def test_whole_sessions_pack_and_half_days_count_less(xnys: TradingCalendar) -> None:
    # July 2024: 22 sessions (July 4 closed), July 3 closes at 13:00 EDT: 21 * 390 + 210 = 8400 m1 bars.
    gaps = find_gaps(iv("2024-07-01 04:00", "2024-08-01 04:00"), [], xnys)
    assert len(gaps) == 22
    plan = plan_slices(gaps, Timeframe.m1, bars(8400), xnys, now=NOW)
    assert spans(plan) == [(utc("2024-07-01 13:30"), utc("2024-07-31 20:00"), 8400)]
    # 25 sessions of 390 fill 97.5 % of 10,000: whole sessions, cut between two days.
    two_months = find_gaps(iv("2024-07-01 04:00", "2024-09-01 04:00"), [], xnys)
    plan = plan_slices(two_months, Timeframe.m1, bars(10_000), xnys, now=NOW)
    assert [s.est_units for s in plan.slices] == [9960, 7020]  # 25 sessions + the half day; the rest
    assert plan.slices[0].end == utc("2024-08-06 20:00")  # July's 22 sessions + August 1, 2, 5, 6
    assert plan.slices[1].start == utc("2024-08-07 13:30")


def test_a_small_page_is_filled_into_the_next_session(xnys: TradingCalendar) -> None:
    gaps = find_gaps(iv("2024-07-08 04:00", "2024-07-13 04:00"), [], xnys)  # one full week: 1950 bars
    plan = plan_slices(gaps, Timeframe.m1, bars(1000), xnys, now=NOW)
    # Two whole sessions would use 78 % of the page; the slice goes on into Wednesday.
    assert spans(plan) == [
        (utc("2024-07-08 13:30"), utc("2024-07-10 17:10"), 1000),
        (utc("2024-07-10 17:10"), utc("2024-07-12 20:00"), 950),
    ]


def test_base_minutes_count_extended_minutes(xnys: TradingCalendar) -> None:
    gaps = find_gaps(iv("2024-07-01 04:00", "2024-07-02 04:00"), [], xnys)  # regular-hours gap
    plan = plan_slices(gaps, Timeframe.h1, minutes(50_000), xnys, now=NOW)
    # Slice 09:00-16:00 EDT; Polygon counts every minute in it, pre-market 09:00-09:30 included.
    assert spans(plan) == [(utc("2024-07-01 13:00"), utc("2024-07-01 20:00"), 420)]
    assert (
        estimate_units(Timeframe.h1, minutes(50_000), xnys, *iv("2024-11-29 04:00", "2024-11-30 04:00"))
        == 780
    )
    assert estimate_units(Timeframe.h1, bars(50_000), xnys, *iv("2024-11-29 04:00", "2024-11-30 04:00")) == 4
    week = iv("2024-06-17 04:00", "2024-06-24 04:00")
    assert estimate_units(Timeframe.d1, minutes(50_000), xnys, *week) == 4  # Juneteenth closed
    assert estimate_units(Timeframe.w1, minutes(50_000), xnys, *week) == 4  # the day bars behind it
    assert estimate_units(Timeframe.w1, bars(50_000), xnys, *week) == 1


def test_polygon_two_years_of_minutes(xnys: TradingCalendar) -> None:
    gaps = find_gaps(iv("2024-11-20 05:00", "2026-11-20 05:00"), [], xnys, extended=True)
    caps = minutes(50_000)
    plan = plan_slices(gaps, Timeframe.m1, caps, xnys, now=NOW)
    assert len(plan.slices) == ideal_requests(gaps, Timeframe.m1, caps, xnys, now=NOW) == 10
    assert all(49_000 <= s.est_units <= 50_000 for s in plan.slices[:-1])
    # Each slice starts at 04:00 and ends at 20:00 New York time (17:00 after an early close).
    for s in plan.slices:
        assert (s.start - 4 * 3600) % 3600 == 0
        assert datetime.fromtimestamp(s.start, UTC).hour in (8, 9)


def test_max_span_days(xnys: TradingCalendar) -> None:
    gaps = find_gaps(iv("2024-07-08 04:00", "2024-07-27 04:00"), [], xnys)  # three weeks, Mon-Fri
    caps = bars(1_000_000, max_span_days={Timeframe.m1: 7})
    assert [(s.start, s.end) for s in plan_slices(gaps, Timeframe.m1, caps, xnys, now=NOW).slices] == [
        (utc("2024-07-08 13:30"), utc("2024-07-12 20:00")),
        (utc("2024-07-15 13:30"), utc("2024-07-19 20:00")),
        (utc("2024-07-22 13:30"), utc("2024-07-26 20:00")),
    ]
    assert ideal_requests(gaps, Timeframe.m1, caps, xnys, now=NOW) == 3


# -- plan_slices: what cannot be filled ---------------------------------------------------------------


def test_history_depth_leaves_old_parts_unfillable(xnys: TradingCalendar) -> None:
    gaps = [iv("2024-07-01 13:30", "2024-07-01 20:00"), iv("2024-07-30 13:30", "2024-07-30 20:00")]
    caps = bars(10_000, history_days={Timeframe.h1: 30})
    now = utc("2024-07-31 16:20")  # reach: 2024-07-01 16:20 UTC, rounded up to the 13:00 EDT bar
    plan = plan_slices(gaps, Timeframe.h1, caps, xnys, now=now)
    assert plan.unfillable == [iv("2024-07-01 13:30", "2024-07-01 17:00")]
    # h1 bars: July 1 from 13:00 EDT (3), July 2 (7), half day July 3 (4), July 5 to 30 (18 sessions).
    assert spans(plan) == [(utc("2024-07-01 17:00"), utc("2024-07-30 20:00"), 3 + 7 + 4 + 18 * 7)]
    # m1 has no limit declared: everything is fillable.
    assert plan_slices(gaps, Timeframe.m1, caps, xnys, now=now).unfillable == []


def test_unsupported_timeframe_is_all_unfillable(xnys: TradingCalendar) -> None:
    gaps = [iv("2024-07-01 13:30", "2024-07-01 20:00")]
    caps = Capabilities("daily-only", frozenset({Timeframe.d1}), 1000)
    assert plan_slices(gaps, Timeframe.m1, caps, xnys, now=NOW) == Plan([], gaps)
    assert ideal_requests(gaps, Timeframe.m1, caps, xnys, now=NOW) == 0


def test_closed_time_in_gaps_is_dropped(xnys: TradingCalendar) -> None:
    weekend = [iv("2024-06-22 04:00", "2024-06-24 04:00")]
    assert plan_slices(weekend, Timeframe.m1, bars(100), xnys, now=NOW) == Plan([], [])
    assert plan_slices([], Timeframe.m1, bars(100), xnys, now=NOW) == Plan([], [])


def test_a_page_smaller_than_one_bar_is_refused(xnys: TradingCalendar) -> None:
    gaps = [iv("2024-07-01 13:30", "2024-07-01 20:00")]
    with pytest.raises(InvalidInput, match="capabilities: expected room for one h4 bar"):
        plan_slices(gaps, Timeframe.h4, minutes(100), xnys, now=NOW)


# -- properties ------------------------------------------------------------------------------------

T0 = utc("2023-01-02 00:00")
GRANULE = {
    PageUnit.bars: {tf: 1 for tf in Timeframe},
    PageUnit.base_minutes: {tf: tf.minutes for tf in Timeframe},
}
GRANULE[PageUnit.base_minutes][Timeframe.d1] = 1
GRANULE[PageUnit.base_minutes][Timeframe.w1] = 7  # a week holds at most seven sessions (24/7)


@st.composite
def capabilities(draw: st.DrawFn, tf: Timeframe, min_pages: int) -> Capabilities:
    unit = draw(st.sampled_from(PageUnit))
    # Polygon-style providers count pre/post-market minutes and serve them: their answers are extended.
    extended = unit == PageUnit.base_minutes or draw(st.booleans())
    pages = int(10 ** draw(st.floats(math.log10(min_pages), 5)))
    span = draw(st.none() | st.integers(8 if tf == Timeframe.w1 else 1, 40))
    history = draw(st.none() | st.integers(1, 400))
    return Capabilities(
        "random",
        ALL,
        GRANULE[unit][tf] * pages,
        unit,
        extended_hours=extended,
        history_days={} if history is None else {tf: history},
        max_span_days={} if span is None else {tf: span},
    )


def coverage_in(window: Interval) -> st.SearchStrategy[list[Interval]]:
    length = window.end - window.start
    piece = st.tuples(st.integers(0, length), st.integers(1, max(1, length // 4)))
    return st.lists(piece, max_size=5).map(
        lambda ps: [Interval(window.start + a, min(window.end, window.start + a + b)) for a, b in ps]
    )


def check_plan(
    plan: Plan, gaps: list[Interval], tf: Timeframe, caps: Capabilities, cal: TradingCalendar
) -> None:
    starts = np.asarray([s.start for s in plan.slices], dtype=np.int64)
    ends = np.asarray([s.end for s in plan.slices], dtype=np.int64)
    units = np.asarray([s.est_units for s in plan.slices], dtype=np.int64)
    assert np.all(starts < ends)
    assert np.all(ends[:-1] <= starts[1:])  # in order, never overlapping
    assert np.all((units > 0) & (units <= caps.page_limit))
    span = caps.max_span_days.get(tf)
    assert span is None or np.all(ends - starts <= span * DAY)
    assert np.array_equal(cal.bucket(tf, starts), starts)  # bounds are bar labels
    assert np.array_equal(cal.bucket(tf, ends), ends)
    # Every slice holds gap time (so never closed-market time only).
    gap_starts = np.asarray([g.start for g in gaps], dtype=np.int64)
    gap_ends = np.asarray([g.end for g in gaps], dtype=np.int64)
    first = np.searchsorted(gap_ends, starts, side="right")
    assert np.all(first < len(gaps))
    assert np.all(gap_starts[np.minimum(first, len(gaps) - 1)] < ends)
    for s in plan.slices[:3] + plan.slices[-3:]:
        assert s.est_units == estimate_units(tf, caps, cal, s.start, s.end)
    slices = normalize([Interval(s.start, s.end) for s in plan.slices])
    planned = intersect(gaps, slices)
    assert intersect(plan.unfillable, slices) == []
    assert union(plan.unfillable, planned) == gaps  # every gap is planned or reported
    assert subtract(gaps, union(plan.unfillable, planned)) == []


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_plans_cover_gaps_within_limits(data: st.DataObject) -> None:
    cal = get_calendar(data.draw(st.sampled_from(["XNYS", "XNYS", "24/7"])))
    tf = data.draw(st.sampled_from(list(Timeframe)))
    start = T0 + data.draw(st.integers(0, 900)) * DAY + data.draw(st.integers(0, 1440)) * 60
    window = Interval(start, start + data.draw(st.integers(1, 60 * 24 * 60)) * 60)
    caps = data.draw(capabilities(tf, 1))
    bound = (
        window.length / (tf.seconds if tf.intraday else DAY) / (caps.page_limit / GRANULE[caps.page_unit][tf])
    )
    assume(bound <= 150)
    covered = normalize(data.draw(coverage_in(window)))
    gaps = find_gaps(window, covered, cal, extended=caps.extended_hours)
    trading = cal.trading_intervals(window.start, window.end, extended=caps.extended_hours)
    assert intersect(gaps, covered) == []
    assert subtract(gaps, trading) == []  # closed-market time is never a gap
    assert union(gaps, intersect(trading, covered)) == trading
    now = window.end + data.draw(st.integers(0, 30 * DAY))
    plan = plan_slices(gaps, tf, caps, cal, now=now)
    check_plan(plan, gaps, tf, caps, cal)
    assert len(plan.slices) >= ideal_requests(gaps, tf, caps, cal, now=now) or len(plan.slices) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_long_windows_need_few_more_slices_than_ideal(data: st.DataObject) -> None:
    cal = get_calendar("XNYS")
    tf = data.draw(st.sampled_from(list(Timeframe)))
    start = T0 + data.draw(st.integers(0, 600)) * DAY
    window = Interval(start, start + data.draw(st.integers(180, 730)) * DAY)
    caps = data.draw(capabilities(tf, 30))
    bound = (
        window.length / (tf.seconds if tf.intraday else DAY) / (caps.page_limit / GRANULE[caps.page_unit][tf])
    )
    assume(bound <= 150)
    # Coverage only at the ends keeps the gaps one run, where the ideal is a true lower bound.
    head, tail = data.draw(st.integers(0, 20)) * DAY, data.draw(st.integers(0, 20)) * DAY
    covered = [Interval(window.start, window.start + head), Interval(window.end - tail, window.end)]
    gaps = find_gaps(window, covered, cal, extended=caps.extended_hours)
    plan = plan_slices(gaps, tf, caps, cal, now=window.end)
    check_plan(plan, gaps, tf, caps, cal)
    ideal = ideal_requests(gaps, tf, caps, cal, now=window.end)
    assert ideal <= len(plan.slices) <= ideal * 1.05 + 1
