"""Sizing slices to a symbol's learned density (pure): Polygon's limit counts the minutes it read.

A symbol that trades only regular hours has 390 base aggregates a full session where the
planner's model counts 960 extended-hours minutes. Once its density is learned, slices
grow to match, and never past the real cap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, PageUnit
from barfill.domain.intervals import Interval
from barfill.domain.planner import (
    DENSITY_MARGIN,
    estimate_units,
    find_gaps,
    observed_ratio,
    plan_slices,
    with_density,
)
from barfill.domain.timeframes import Timeframe
from tests.unit.test_planner import NOW, utc

CAP = 50_000
POLYGON = Capabilities("polygon", frozenset(Timeframe), CAP, PageUnit.base_minutes, extended_hours=True)


@pytest.fixture(scope="module")
def xnys() -> TradingCalendar:
    return get_calendar("XNYS")


def regular_minutes(calendar: TradingCalendar, start: int, end: int) -> int:
    """Base aggregates a regular-hours-only symbol (trading every minute) has in [start, end)."""
    i0, i1 = calendar.session_indices(start, end)
    opens = np.maximum(calendar.opens[i0:i1], start)
    closes = np.minimum(calendar.closes[i0:i1], end)
    return int(np.maximum(closes - opens, 0).sum() // 60)


def test_no_density_or_a_dense_symbol_leaves_the_model_alone() -> None:
    assert with_density(POLYGON, None) is POLYGON
    assert with_density(POLYGON, 1.0) is POLYGON
    assert with_density(POLYGON, 0.99) is POLYGON  # with the margin it would exceed the cap
    bars = Capabilities("bars", frozenset(Timeframe), 10_000)
    assert with_density(bars, 0.4) is bars  # a limit counting rows returned has nothing to learn


def test_a_sparse_symbol_gets_a_page_limit_scaled_to_it() -> None:
    ratio = 390 / 960
    caps = with_density(POLYGON, ratio)
    assert caps.page_limit == int(CAP / (ratio * (1 + DENSITY_MARGIN)))
    # A full page of modeled units reads at most the cap less the margin, in real aggregates.
    assert caps.page_limit * ratio <= CAP / (1 + DENSITY_MARGIN)


def test_observed_ratio_ignores_slivers_and_never_exceeds_one() -> None:
    assert observed_ratio(390, 960) is None  # one session says little
    assert observed_ratio(3_900, 9_600) == pytest.approx(390 / 960)
    assert observed_ratio(20_000, 10_000) == 1.0


@pytest.mark.parametrize(("tf", "years"), [(Timeframe.m1, 2), (Timeframe.m15, 2), (Timeframe.m1, 6)])
def test_regular_hours_symbol_needs_about_the_ideal_and_no_page_reaches_the_cap(
    xnys: TradingCalendar, tf: Timeframe, years: int
) -> None:
    window = Interval(NOW - years * 365 * 86_400, NOW)
    gaps = find_gaps(window, [], xnys, extended=True)
    # Learned from one answer over ten full sessions, as the worker would.
    lo, hi = utc("2026-10-05 08:00"), utc("2026-10-17 00:00")
    ratio = observed_ratio(regular_minutes(xnys, lo, hi), estimate_units(Timeframe.m1, POLYGON, xnys, lo, hi))
    assert ratio is not None and 0.39 < ratio < 0.41

    before = plan_slices(gaps, tf, POLYGON, xnys, now=NOW).slices
    plan = plan_slices(gaps, tf, with_density(POLYGON, ratio), xnys, now=NOW).slices
    real = [regular_minutes(xnys, s.start, s.end) for s in plan]
    total = regular_minutes(xnys, window.start, window.end)
    ideal = math.ceil(total / CAP)
    assert max(real) <= CAP  # never a truncated page
    assert len(plan) <= 1.10 * ideal
    assert len(before) >= 2 * len(plan)  # what the 960-minute model cost (2.5x)
    # The plan still covers every gap.
    assert plan[0].start <= gaps[0].start and plan[-1].end >= gaps[-1].end
