"""The tick leaves out definitions whose window one final coverage row holds, and nothing else.

:func:`definitions_to_plan` decides in SQL which definitions a tick must plan,
so that a tick over many covered definitions costs little. Leaving one out
must never change what the tick plans: every left-out definition's plan is
empty, and planning only the kept ones gives exactly the slices and errors of
planning them all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.domain.finality import last_complete_end
from barfill.domain.slices import CoverageSpan, NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.orchestrator import plan_tick
from barfill.store.coverage import add_coverage, coverage_views
from barfill.store.db import Database
from barfill.store.definitions import (
    Definition,
    definitions_to_plan,
    enabled_by_calendar,
    list_definitions,
    set_enabled,
    upsert_definition,
)
from barfill.store.queue_reports import open_work
from barfill.store.symbols import ensure_symbols
from tests.e2e.helpers import make_app
from tests.integration.providers.servers import ny

CAL = get_calendar()
DAY = 86_400
NOW = ny(2024, 3, 13, 11)  # a Wednesday, the h1 bar of 11:00 forming
MIDNIGHT = ny(2024, 3, 13)
FAR = 2**40  # provisional coverage that never expires in this test


@pytest.fixture
def app(db: Database) -> Iterator[App]:
    built = make_app(db, {"main": SyntheticProvider(calendar=CAL, name="main")}, derivations=[])
    yield built
    built.close()


# ticker: (timeframe, window, coverage spans, pinned provider, left out?)
# A window is (start, end) or the number of days of a rolling window.
CASES: dict[str, tuple[Timeframe, tuple[int, int] | int, list[CoverageSpan], str | None, bool]] = {
    "HELD": (
        Timeframe.h1,
        (ny(2023, 1, 3), ny(2023, 6, 1)),
        [CoverageSpan(ny(2022, 12, 1), ny(2023, 7, 1))],
        None,
        True,
    ),
    # Two rows with a weekend between: nothing to fetch, but no single row proves it.
    "TWO": (
        Timeframe.h1,
        (ny(2023, 1, 3), ny(2023, 6, 1)),
        [CoverageSpan(ny(2022, 12, 1), ny(2023, 3, 4)), CoverageSpan(ny(2023, 3, 6), ny(2023, 7, 1))],
        None,
        False,
    ),
    # A rolling d1 window ends at today's midnight while today's bar forms.
    "ROLL": (Timeframe.d1, 30, [CoverageSpan(NOW - 40 * DAY, MIDNIGHT)], None, True),
    # A rolling h1 window reaches 11:00 today: today's morning is not covered.
    "EDGE": (Timeframe.h1, 30, [CoverageSpan(NOW - 40 * DAY, MIDNIGHT)], None, False),
    "PIN": (
        Timeframe.h1,
        (ny(2023, 1, 3), ny(2023, 6, 1)),
        [CoverageSpan(ny(2022, 12, 1), ny(2023, 7, 1))],
        "nope",
        False,
    ),
    "PROV": (
        Timeframe.h1,
        (ny(2023, 1, 3), ny(2023, 6, 1)),
        [CoverageSpan(ny(2022, 12, 1), ny(2023, 7, 1), FAR)],
        None,
        False,
    ),
    # Before the calendar's first session: the window starts there.
    "EARLY": (
        Timeframe.d1,
        (ny(1999, 1, 4), ny(2000, 6, 1)),
        [CoverageSpan(CAL.first, ny(2000, 7, 1))],
        None,
        True,
    ),
    # A fixed window reaching past now ends at the last complete bar.
    "FUTURE": (
        Timeframe.h1,
        (ny(2024, 1, 2), ny(2024, 6, 1)),
        [CoverageSpan(ny(2023, 12, 1), last_complete_end(CAL, Timeframe.h1, NOW))],
        None,
        True,
    ),
    "PART": (
        Timeframe.h1,
        (ny(2023, 1, 3), ny(2023, 6, 1)),
        [CoverageSpan(ny(2023, 2, 1), ny(2023, 7, 1))],
        None,
        False,
    ),
    "NONE": (Timeframe.m15, (ny(2023, 1, 3), ny(2023, 2, 1)), [], None, False),
}


def test_only_definitions_held_by_one_final_row_are_left_out(app: App) -> None:
    with app.db.write() as conn:
        ids = ensure_symbols(conn, [*CASES, "OFF"])
        for ticker, (tf, window, spans, provider, _) in CASES.items():
            if isinstance(window, int):
                upsert_definition(conn, ids[ticker], tf, window_days=window, provider=provider)
            else:
                upsert_definition(conn, ids[ticker], tf, start=window[0], end=window[1], provider=provider)
            add_coverage(conn, ids[ticker], tf, spans)
        off, _ = upsert_definition(conn, ids["OFF"], Timeframe.h1, start=ny(2023, 1, 3), end=ny(2023, 2, 1))
        set_enabled(conn, [off], False)
    with app.db.read() as conn:
        assert enabled_by_calendar(conn) == {"XNYS": len(CASES)}
        everything = list_definitions(conn, enabled=True)
        kept = definitions_to_plan(
            conn,
            now=NOW,
            first={"XNYS": CAL.first},
            window_ends={("XNYS", tf): last_complete_end(CAL, tf, NOW) for tf in Timeframe},
            providers=app.router.providers,
        )
        work = open_work(conn, now=NOW, cooldown_s=3600, cooldown_max_s=86_400)
        coverage = coverage_views(conn)
    assert {d.symbol for d in kept} == {t for t, case in CASES.items() if not case[-1]}
    assert [d.id for d in kept] == [d.id for d in everything if d in kept]  # same order

    def plan(defs: list[Definition]) -> tuple[list[NewSlice], list[str]]:
        calendars = {d.symbol_id: CAL for d in defs}
        return plan_tick(defs, coverage, work, calendars, app.router, now=NOW, max_attempts=5)

    slices, errors = plan(kept)
    assert (slices, errors) == plan(everything)
    # The cases are not vacuous: some kept definitions plan slices, the pinned one fails.
    assert {s.symbol_id for s in slices} >= {ids["PROV"], ids["PART"], ids["NONE"]}
    assert len(errors) == 1 and "nope" in errors[0]
    # Without the calendar's bounds only a window held as stored (unclipped) is left out.
    with app.db.read() as conn:
        unbounded = definitions_to_plan(conn, now=NOW, first={}, window_ends={}, providers=["main"])
    assert {d.symbol for d in everything} - {d.symbol for d in unbounded} == {"HELD"}
