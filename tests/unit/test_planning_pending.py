"""The tick plans gaps minus pending work: as the clock moves, no new slice overlaps a live one."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain import intervals as iv
from barfill.domain.calendar import get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.slices import NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.providers.router import Router
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.planning import plan_definition
from tests.e2e.helpers import ts
from tests.unit.builders import definition

CAL = get_calendar()
# Wednesday 2024-03-13, 11:17 New York: the market is open.
NOW = ts("2024-03-13T15:17")


def _router(page_limit: int) -> Router:
    """A small page, so a window is many slices whose bounds move with the clock."""
    syn = SyntheticProvider(calendar=CAL, page_limit=page_limit)
    return Router({"synthetic": syn}, historical=["synthetic"], realtime=["synthetic"], calendar=CAL)


ROUTER = _router(2_000)


def _spans(slices: list[NewSlice]) -> list[Interval]:
    return [Interval(s.start, s.end) for s in slices]


def _overlapping(a: list[Interval], b: list[Interval]) -> list[tuple[Interval, Interval]]:
    return [(x, y) for x in a for y in b if x.start < y.end and y.start < x.end]


def _replan(tf: Timeframe, days: int, later_s: int, page_limit: int) -> None:
    defn = definition(tf, days=days)
    router = _router(page_limit)
    first = plan_definition(defn, [], CAL, router, now=NOW, max_attempts=5)
    pending = _spans(first.slices)
    assert len(pending) > 2
    later = NOW + later_s
    # Without the pending ranges, the moved bounds overlap queued slices (the bug)...
    naive = plan_definition(defn, [], CAL, router, now=later, max_attempts=5)
    assert _overlapping(_spans(naive.slices), pending)
    # ...with them, only the new sliver since the first plan is planned.
    plan = plan_definition(defn, [], CAL, router, now=later, max_attempts=5, pending=pending)
    new = _spans(plan.slices)
    assert new and _overlapping(new, pending) == []
    sliver = Interval(max(p.end for p in pending), plan.window.end)
    assert iv.normalize(new) == iv.intersect(iv.normalize(plan.gaps), [sliver])
    # Gaps still report everything missing: pending work is not coverage.
    assert plan.bars_missing == naive.bars_missing > 0


def test_h1_two_years_planned_an_hour_later_adds_only_the_new_hour() -> None:
    _replan(Timeframe.h1, 730, 3_600, page_limit=2_000)


def test_m15_thirty_days_planned_half_an_hour_later_adds_only_the_new_half_hour() -> None:
    _replan(Timeframe.m15, 30, 1_800, page_limit=200)


@settings(max_examples=30, deadline=None)
@given(
    tf=st.sampled_from([Timeframe.m15, Timeframe.h1, Timeframe.d1]),
    page_limit=st.sampled_from([40, 300, 5_000]),
    earlier=st.integers(0, 3 * 86_400),
    later=st.integers(0, 3 * 86_400),
    seed=st.integers(0, 2**32 - 1),
)
def test_planned_slices_never_meet_pending_work(
    tf: Timeframe, page_limit: int, earlier: int, later: int, seed: int
) -> None:
    """Plan at some earlier time; some of those slices are still pending, some done, some lost; plan again."""
    defn = definition(tf, days=30)
    first = plan_definition(defn, [], CAL, _router(page_limit), now=NOW - earlier, max_attempts=5)
    spans = _spans(first.slices)
    fate = random.Random(seed).choices(["pending", "covered", "lost"], k=len(spans))
    pending = [s for s, f in zip(spans, fate, strict=True) if f == "pending"]
    covered = iv.normalize(s for s, f in zip(spans, fate, strict=True) if f == "covered")
    plan = plan_definition(defn, covered, CAL, ROUTER, now=NOW + later, max_attempts=5, pending=pending)
    planned = iv.normalize(_spans(plan.slices))
    assert iv.intersect(planned, iv.normalize(pending)) == []
    # Nothing fillable is dropped: every gap is planned, pending or unfillable.
    accounted = iv.union(iv.union(planned, iv.normalize(pending)), plan.unfillable)
    assert iv.subtract(iv.normalize(plan.gaps), accounted) == []
