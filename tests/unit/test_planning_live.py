"""Planning around the live session: forming bars are never planned; today's part is provisional.

Updated for the live-edge rule (domain/finality.py): the live part is an
``intraday``-layer slice until the session's extended close (20:00 New York),
not only until the 16:00 close; the window's end is a bar label.
"""

from __future__ import annotations

from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.finality import last_complete_end
from barfill.domain.timeframes import Timeframe
from barfill.providers.router import Router
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.planning import plan_definition, window_of
from tests.e2e.helpers import ts
from tests.unit.builders import definition

CAL = get_calendar()
# Wednesday 2024-03-13, 11:17 New York (EDT, UTC-4) = 15:17 UTC: the market is open.
NOW = ts("2024-03-13T15:17")


def test_window_ends_at_the_last_complete_bar() -> None:
    assert last_complete_end(CAL, Timeframe.h1, NOW) == ts("2024-03-13T15:00")  # 11:00 NY: forming
    assert last_complete_end(CAL, Timeframe.m15, NOW) == ts("2024-03-13T15:15")
    assert last_complete_end(CAL, Timeframe.d1, NOW) == ts("2024-03-13T04:00")  # today's d1 is forming
    after_close = ts("2024-03-13T20:05")  # 16:05 NY: the d1 bar is complete; its end is the next label
    assert last_complete_end(CAL, Timeframe.d1, after_close) == ts("2024-03-14T04:00")
    w = window_of(definition(Timeframe.h1), CAL, NOW)
    assert w is not None and w.end == ts("2024-03-13T15:00")


def test_live_session_part_goes_to_its_own_slice() -> None:
    syn = SyntheticProvider(calendar=CAL)
    router = Router({"synthetic": syn}, historical=["synthetic"], realtime=["synthetic"], calendar=CAL)
    plan = plan_definition(definition(Timeframe.m15), [], CAL, router, now=NOW, max_attempts=5)
    today_open = ts("2024-03-13T13:30")
    live = [s for s in plan.slices if s.end > today_open]
    past = [s for s in plan.slices if s.end <= today_open]
    assert len(live) == 1 and past
    assert live[0].start == today_open and live[0].end == ts("2024-03-13T15:15")
    assert live[0].layer is Layer.intraday
    assert all(s.layer is Layer.historical for s in past)
    # At 16:05 New York the session is still provisional; after 20:00 (extended close) final.
    at_1605 = plan_definition(
        definition(Timeframe.m15), [], CAL, router, now=ts("2024-03-13T20:05"), max_attempts=5
    )
    assert [s.layer for s in at_1605.slices if s.end > today_open] == [Layer.intraday]
    final = plan_definition(
        definition(Timeframe.m15), [], CAL, router, now=ts("2024-03-14T00:01"), max_attempts=5
    )
    assert all(s.layer is Layer.historical for s in final.slices)
    assert max(s.end for s in final.slices) == ts("2024-03-13T20:00")


def test_weekend_now_plans_nothing_live() -> None:
    syn = SyntheticProvider(calendar=CAL)
    router = Router({"synthetic": syn}, historical=["synthetic"], realtime=["synthetic"], calendar=CAL)
    saturday = ts("2024-03-16T15:00")
    plan = plan_definition(definition(Timeframe.h1), [], CAL, router, now=saturday, max_attempts=5)
    assert plan.slices and all(s.layer is Layer.historical for s in plan.slices)
    assert max(s.end for s in plan.slices) <= ts("2024-03-15T20:00")
    assert plan.pending == []
