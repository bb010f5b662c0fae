"""Planning by the live-edge rule, per configuration, on a fixed clock (issue 7 items 1, 2, 8, 9).

The providers are the real adapters, built by bootstrap from settings (their
declared capabilities are what is under test); nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from barfill.bootstrap import _auto_order, build_providers
from barfill.config import load_settings
from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe
from barfill.providers.http import LoopClient
from barfill.providers.router import Router
from barfill.service.planning import DefinitionPlan, plan_definition
from barfill.store.coverage import CoverageView
from tests.unit.builders import definition

NY = ZoneInfo("America/New_York")
CAL = get_calendar()
M15, D1 = Timeframe.m15, Timeframe.d1
MON, TUE, WED = "2025-11-24", "2025-11-25", "2025-11-26"

CONFIGS: dict[str, dict[str, Any]] = {
    "polygon": {"polygon_api_key": "k"},
    "polygon+tradier": {"polygon_api_key": "k", "tradier_token": "t"},
    "polygon+alpaca": {"polygon_api_key": "k", "alpaca_key_id": "a", "alpaca_secret_key": "s"},
    "flatfiles+polygon": {
        "polygon_api_key": "k",
        "flatfiles_dir": Path("/nonexistent/flatfiles"),
        "historical_providers": ["flatfiles", "polygon"],
    },
    "yahoo": {"yahoo_enabled": True},
    "alpaca": {"alpaca_key_id": "a", "alpaca_secret_key": "s"},
    "synthetic": {},
}


def ny(day: str, hhmm: str) -> int:
    h, m = (int(x) for x in hhmm.split(":"))
    return int(datetime.combine(date.fromisoformat(day), time(h, m), NY).timestamp())


@pytest.fixture(scope="module")
def routers() -> Iterator[dict[str, Router]]:
    http = LoopClient()
    out: dict[str, Router] = {}
    for name, keys in CONFIGS.items():
        settings = load_settings(database_url="sqlite:///:memory:", **keys)
        built, _ = build_providers(settings, http, CAL)
        out[name] = Router(
            built,
            historical=_auto_order(settings.historical_providers, built),
            realtime=_auto_order(settings.realtime_providers, built),
            calendar=CAL,
        )
    yield out


def plan(router: Router, tf: Timeframe, now: int, coverage: CoverageView | None = None) -> DefinitionPlan:
    """Plan a 10-day window whose sessions before Monday are already stored finally."""
    cov = coverage or CoverageView([Interval(now - 30 * 86_400, ny(MON, "00:00"))], [])
    return plan_definition(definition(tf), cov, CAL, router, now=now, max_attempts=5)


def on(p: DefinitionPlan, day: str) -> list[tuple[str, Layer]]:
    """(provider, layer) of the slices reaching into ``day``'s session."""
    lo, hi = ny(day, "00:00"), ny(day, "23:59")
    return sorted({(s.provider, s.layer) for s in p.slices if s.end > lo and s.start < hi})


def pending_on(p: DefinitionPlan, day: str) -> bool:
    lo, hi = ny(day, "00:00"), ny(day, "23:59")
    return any(x.end > lo and x.start < hi for x in p.pending)


def test_polygon_only_at_16_31_plans_nothing_for_today_and_fails_nothing(routers: dict[str, Router]) -> None:
    """Issue 7 item 1: today went to Polygon, was refused as live and failed for good."""
    p = plan(routers["polygon"], M15, ny(TUE, "16:31"))
    assert on(p, TUE) == []
    assert pending_on(p, TUE) and p.unfillable == []
    assert p.pending == [Interval(ny(TUE, "09:30"), ny(TUE, "16:00"))]
    assert on(p, MON) == [("polygon", Layer.historical)]  # a closed, final session is planned


def test_polygon_only_at_20_30_plans_today_as_final_exactly_once(routers: dict[str, Router]) -> None:
    router = routers["polygon"]
    p = plan(router, M15, ny(TUE, "20:30"))
    today = [s for s in p.slices if s.end > ny(TUE, "00:00")]
    assert [(s.provider, s.layer) for s in today] == [("polygon", Layer.historical)]
    assert p.pending == []
    # Once stored, a later plan (20:45, next morning) asks for nothing again.
    stored = CoverageView([Interval(ny(MON, "00:00") - 30 * 86_400, max(s.end for s in p.slices))], [])
    for later in (ny(TUE, "20:45"), ny(WED, "08:00")):
        again = plan(router, M15, later, stored)
        assert again.slices == [] and again.pending == []


@pytest.mark.parametrize(
    ("config", "realtime"), [("polygon+alpaca", "alpaca"), ("polygon+tradier", "tradier")]
)
def test_16_30_is_provisional_on_the_realtime_provider_and_20_30_final_on_polygon(
    routers: dict[str, Router], config: str, realtime: str
) -> None:
    """Issue 7 item 2: a closed but not final session was stored as final from IEX/Tradier."""
    router = routers[config]
    for tf in (M15, D1):
        p = plan(router, tf, ny(TUE, "16:30"))
        assert on(p, TUE) == [(realtime, Layer.intraday)], tf
        assert on(p, MON) == [("polygon", Layer.historical)], tf
        # At 20:30 today is final: to Polygon, even though it is covered provisionally.
        covered = CoverageView(
            [Interval(ny(MON, "00:00") - 30 * 86_400, ny(TUE, "00:00"))],
            [Interval(ny(TUE, "00:00"), ny(WED, "00:00"))],
        )
        final = plan(router, tf, ny(TUE, "20:30"), covered)
        assert on(final, TUE) == [("polygon", Layer.historical)], tf
        assert final.pending == []


def test_provisional_coverage_counts_as_covered_for_provisional_planning(routers: dict[str, Router]) -> None:
    router = routers["polygon+alpaca"]
    now = ny(TUE, "16:30")
    covered = CoverageView(
        [Interval(ny(MON, "00:00") - 30 * 86_400, ny(TUE, "00:00"))],
        [Interval(ny(TUE, "00:00"), ny(TUE, "16:30"))],
    )
    p = plan(router, M15, now, covered)
    assert p.slices == [] and p.pending == [] and p.gaps == []


def test_flat_files_are_waited_for_until_published_not_routed_to_polygon(routers: dict[str, Router]) -> None:
    """Issue 7 item 3's flat-file case: a file not published yet failed for good."""
    router = routers["flatfiles+polygon"]
    for now in (ny(TUE, "20:30"), ny(WED, "06:59")):
        p = plan(router, D1, now)
        assert on(p, TUE) == [] and pending_on(p, TUE), now
    p = plan(router, D1, ny(WED, "07:00"))
    assert on(p, TUE) == [("flatfiles", Layer.historical)]
    # Flat files have no m15: Polygon serves it, final at 20:00.
    assert on(plan(router, M15, ny(TUE, "20:30")), TUE) == [("polygon", Layer.historical)]


def test_alpaca_only_before_2016_is_unfillable_with_a_reason(routers: dict[str, Router]) -> None:
    """Issue 7 item 9: a 2010 range went to Alpaca, came back empty and was covered."""
    window = definition(D1, days=None, start=ny("2010-01-04", "00:00"), end=ny("2010-02-01", "00:00"))
    p = plan_definition(window, CoverageView(), CAL, routers["alpaca"], now=ny(TUE, "11:00"), max_attempts=5)
    assert p.slices == []
    assert p.unfillable == [Interval(ny("2010-01-04", "09:30"), ny("2010-01-29", "16:00"))]
    assert p.unfillable_reasons == [
        "before the history of every provider serving d1 (alpaca: d1 history starts 2016-01-01)"
    ]
    # With Polygon configured too, the same range goes to Polygon.
    both = plan_definition(
        window, CoverageView(), CAL, routers["polygon+alpaca"], now=ny(TUE, "11:00"), max_attempts=5
    )
    assert {s.provider for s in both.slices} == {"polygon"} and both.unfillable == []


def test_a_timeframe_nobody_serves_is_unfillable_with_a_reason(routers: dict[str, Router]) -> None:
    p = plan(routers["yahoo"], Timeframe.h1, ny(TUE, "11:00"))
    assert p.slices == [] and p.unfillable
    assert p.unfillable_reasons[0] == "no configured provider serves h1 bars (yahoo)"


@pytest.mark.parametrize("config", ["polygon", "yahoo"])
def test_without_a_realtime_provider_today_waits_for_20_00(routers: dict[str, Router], config: str) -> None:
    for hhmm in ("11:00", "16:30", "19:59"):
        p = plan(routers[config], M15, ny(TUE, hhmm))
        assert on(p, TUE) == [] and pending_on(p, TUE)
    assert on(plan(routers[config], M15, ny(TUE, "20:00")), TUE) == [(config, Layer.historical)]


def test_synthetic_alone_is_both_historical_and_realtime(routers: dict[str, Router]) -> None:
    router = routers["synthetic"]
    assert on(plan(router, M15, ny(TUE, "11:00")), TUE) == [("synthetic", Layer.intraday)]
    assert on(plan(router, M15, ny(TUE, "20:30")), TUE) == [("synthetic", Layer.historical)]


def test_early_close_and_holiday(routers: dict[str, Router]) -> None:
    router = routers["polygon"]
    # Friday 2025-11-28 closes at 13:00: final at 17:00; Thanksgiving has nothing to plan.
    cov = CoverageView([Interval(ny("2025-11-01", "00:00"), ny(WED, "00:00"))], [])
    before = plan(router, D1, ny("2025-11-28", "16:59"), cov)
    assert on(before, "2025-11-27") == [] and on(before, "2025-11-28") == []
    assert on(before, WED) == [("polygon", Layer.historical)]
    after = plan(router, D1, ny("2025-11-28", "17:00"), cov)
    assert on(after, "2025-11-28") == [("polygon", Layer.historical)] and after.pending == []
