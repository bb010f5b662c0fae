"""Several requesters per (symbol, timeframe): each keeps its window and pinned provider.

The user's story: a scheduler keeps AAPL d1 rolling over 365 days, pinned to a
provider; a notebook then ensures a fixed 2015 backfill of AAPL d1. Before,
the last ``ensure`` won: the rolling window and its pin were gone and AAPL d1
stopped being kept current.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from barfill.bootstrap import App
from barfill.domain import intervals as iv
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.orchestrator import plan_tick, tick
from barfill.service.worker import Worker
from barfill.store.coverage import coverage_views
from barfill.store.db import Database
from barfill.store.definitions import list_definitions
from barfill.store.queue_reports import open_work
from tests.e2e.helpers import make_app, ts
from tests.integration.providers.servers import ny

CAL = get_calendar()
DAY = 86_400


@pytest.fixture
def providers() -> dict[str, SyntheticProvider]:
    return {
        "main": SyntheticProvider(calendar=CAL, name="main"),
        "backup": SyntheticProvider(calendar=CAL, name="backup"),
    }


@pytest.fixture
def app(db: Database, providers: dict[str, SyntheticProvider]) -> Iterator[App]:
    built = make_app(db, providers, historical_providers=["main", "backup"], derivations=[])
    yield built
    built.close()


def test_a_notebook_backfill_leaves_the_schedulers_rolling_window_and_pin(
    app: App, providers: dict[str, SyntheticProvider]
) -> None:
    (sched,) = ensure(app, ["AAPL"], "d1", days=365, provider="backup", requester="scheduler").results
    (note,) = ensure(app, ["AAPL"], "d1", start="2015-01-01", end="2016-01-01", requester="notebook").results
    assert sched.created and note.created and sched.definition_id != note.definition_id
    assert (sched.requester, note.requester) == ("scheduler", "notebook")
    assert note.window_start == ny(2015, 1, 1) and sched.window_end > ts("2024-01-01")
    # A third requester's window lies inside the scheduler's queued slice: nothing new is queued.
    (research,) = ensure(app, ["AAPL"], "d1", days=30, requester="research").results
    assert (research.slices_queued, research.slices_pending) == (0, sched.slices_queued)
    # The scheduler asking again changes only its own definition.
    (again,) = ensure(app, ["AAPL"], "d1", days=365, provider="backup", requester="scheduler").results
    assert again.definition_id == sched.definition_id and not again.created
    with app.db.read() as conn:
        defs = {d.requester: d for d in list_definitions(conn)}
    assert set(defs) == {"scheduler", "notebook", "research"}
    assert (defs["scheduler"].window_days, defs["scheduler"].provider) == (365, "backup")
    assert (defs["notebook"].start, defs["notebook"].end, defs["notebook"].provider) == (
        ny(2015, 1, 1),
        ny(2016, 1, 2),  # a date-only end is inclusive, in exchange time
        None,
    )
    # Each definition's slices went to its own provider; nothing was fetched twice.
    stats = asyncio.run(Worker(app, poll_s=0.05).run(drain=True))
    assert stats.failed == 0
    backup = [(s, e) for _, _, s, e in providers["backup"].request_log]
    other = [(s, e) for _, _, s, e in providers["main"].request_log]
    assert backup and all(s >= ts("2020-01-01") for s, _ in backup)
    assert other and all(e <= ny(2016, 1, 2) for _, e in other)
    assert tick(app).slices_created == 0
    # The next days' tick still plans the new sessions for the rolling window, on its pin.
    _next_days_plan_only_the_rolling_window(app)


def _next_days_plan_only_the_rolling_window(app: App) -> None:
    """The tick's planning at a later ``now`` (the queue's clock is the database's; see plan_tick)."""
    later = int(app.db.now()) + 4 * DAY  # whatever the weekday, at least one new session has closed
    with app.db.read() as conn:
        defs = list_definitions(conn, enabled=True)
        work = open_work(conn, now=float(later), cooldown_s=3600, cooldown_max_s=86_400)
        coverage = coverage_views(conn)
    planned, errors = plan_tick(
        defs, coverage, work, {d.symbol_id: CAL for d in defs}, app.router, now=later, max_attempts=5
    )
    assert errors == []
    owners = {d.id: d.requester for d in defs}
    # Research's rolling 30 days lie inside the scheduler's 365: the scheduler (first) takes them.
    assert planned and {(owners[s.definition_id], s.provider) for s in planned} == {("scheduler", "backup")}
    stored = coverage[(defs[0].symbol_id, Timeframe.d1)].final
    new_sessions = CAL.bar_opens(Timeframe.d1, stored[-1].end, later - DAY)
    assert len(new_sessions) >= 1
    spans = iv.normalize((s.start, s.end) for s in planned)
    assert spans[0].start >= stored[-1].end
    assert all(iv.contains(spans, int(label)) for label in new_sessions)


def test_requester_names_are_checked(app: App) -> None:
    with pytest.raises(InvalidInput, match="requester"):
        ensure(app, ["AAPL"], "d1", days=5, requester="")
    with pytest.raises(InvalidInput, match="requester"):
        ensure(app, ["AAPL"], "d1", days=5, requester="a notebook; drop")
    with pytest.raises(InvalidInput, match="requester"):
        ensure(app, ["AAPL"], "d1", days=5, requester="x" * 65)
