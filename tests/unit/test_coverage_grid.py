"""The coverage map's cell rule: one day of one symbol, classified."""

from __future__ import annotations

from barfill.domain.coverage_grid import Cell, classify_day, classify_days
from barfill.domain.intervals import Interval

SESSION = Interval(1_000, 2_000)
WINDOW = Interval(0, 10_000)


def test_no_session_is_closed_whatever_the_coverage() -> None:
    assert classify_day(None, WINDOW, [Interval(0, 10_000)], [], []) == Cell.closed


def test_a_session_outside_the_window_is_outside() -> None:
    assert classify_day(SESSION, Interval(5_000, 6_000), [], [], []) == Cell.outside
    assert classify_day(SESSION, None, [], [], []) == Cell.outside


def test_fully_final_is_covered_even_if_coverage_is_wider() -> None:
    assert classify_day(SESSION, WINDOW, [Interval(900, 2_100)], [], []) == Cell.covered


def test_only_the_wanted_part_of_a_session_counts() -> None:
    # The window starts mid-session: the morning before it is not wanted.
    assert classify_day(SESSION, Interval(1_500, 10_000), [Interval(1_500, 2_000)], [], []) == Cell.covered


def test_partly_provisional_is_provisional() -> None:
    cell = classify_day(SESSION, WINDOW, [Interval(1_000, 1_600)], [Interval(1_600, 2_000)], [])
    assert cell == Cell.provisional


def test_any_uncovered_minute_is_a_gap() -> None:
    assert classify_day(SESSION, WINDOW, [Interval(1_000, 1_999)], [], []) == Cell.gap
    assert classify_day(SESSION, WINDOW, [], [], []) == Cell.gap


def test_a_gap_under_a_failed_slice_is_unfillable() -> None:
    assert classify_day(SESSION, WINDOW, [Interval(1_000, 1_500)], [], [Interval(1_400, 1_700)]) == (
        Cell.unfillable
    )
    # A failed range that is covered by now does not taint the day.
    assert classify_day(SESSION, WINDOW, [Interval(1_000, 2_000)], [], [Interval(1_400, 1_700)]) == (
        Cell.covered
    )


def test_a_row_classifies_each_day() -> None:
    days = [SESSION, None, Interval(3_000, 4_000)]
    assert classify_days(days, WINDOW, [Interval(1_000, 2_000)], [], []) == [
        Cell.covered,
        Cell.closed,
        Cell.gap,
    ]
