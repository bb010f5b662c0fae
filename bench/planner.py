"""Planner speed and quality: two years of m1, m15 and h1 for 500 symbols, nothing covered yet.

Each symbol is planned on its own, as the orchestrator does (gap detection
plus slice planning), against two capability profiles: a provider whose page
limit counts bars (10,000 a page, regular hours) and one whose limit counts
the base minutes behind its answer (50,000 a page, extended hours, as
Polygon does). Quality is the slice count against :func:`ideal_requests`,
the fewest requests any bar-aligned plan within the provider's limits could
make, computed in the same run; the target is at most 5 % more.
"""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import Capabilities, PageUnit
from barfill.domain.intervals import Interval
from barfill.domain.planner import find_gaps, ideal_requests, plan_slices
from barfill.domain.timeframes import Timeframe
from bench.common import Result

SYMBOLS = 500
TIMEFRAMES = (Timeframe.m1, Timeframe.m15, Timeframe.h1)
END = int(datetime(2026, 11, 20, tzinfo=ZoneInfo("America/New_York")).timestamp())
WINDOW = Interval(END - 730 * 86_400, END)
PROFILES = (
    Capabilities("bars-page", frozenset(Timeframe), page_limit=10_000),
    Capabilities(
        "base-minutes",
        frozenset(Timeframe),
        page_limit=50_000,
        page_unit=PageUnit.base_minutes,
        extended_hours=True,
    ),
)
TARGET_RATIO = 1.05


def run() -> list[Result]:
    calendar = get_calendar("XNYS")
    results: list[Result] = []
    for caps in PROFILES:
        # Warm-up outside the timer (first calls build numpy/pandas caches).
        plan_slices(find_gaps(WINDOW, [], calendar), Timeframe.h1, caps, calendar, now=END)
        slices = dict.fromkeys(TIMEFRAMES, 0)
        started = time.perf_counter()
        for _ in range(SYMBOLS):
            for tf in TIMEFRAMES:
                gaps = find_gaps(WINDOW, [], calendar, extended=caps.extended_hours)
                slices[tf] += len(plan_slices(gaps, tf, caps, calendar, now=END).slices)
        seconds = time.perf_counter() - started
        plans = SYMBOLS * len(TIMEFRAMES)
        results.append(
            Result(
                suite="planner",
                name=f"{caps.name}: plan 2y m1+m15+h1 x {SYMBOLS} symbols",
                value=seconds,
                unit="s",
                target="reference",
                extra={"plans": plans, "ms_per_plan": 1000 * seconds / plans},
            )
        )
        gaps = find_gaps(WINDOW, [], calendar, extended=caps.extended_hours)
        for tf in TIMEFRAMES:
            ideal = ideal_requests(gaps, tf, caps, calendar, now=END) * SYMBOLS
            results.append(
                Result(
                    suite="planner",
                    name=f"{caps.name}: {tf.value} slices vs ideal",
                    value=float(slices[tf]),
                    unit="slices",
                    baseline=float(ideal),
                    ratio=slices[tf] / ideal,
                    target=f"<= {TARGET_RATIO}",
                    extra={"per_symbol": slices[tf] // SYMBOLS, "ideal_per_symbol": ideal // SYMBOLS},
                )
            )
    return results
