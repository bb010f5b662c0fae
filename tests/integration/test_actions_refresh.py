"""The scheduled refresh of corporate actions: once per interval on the database clock, within rate limits."""

from __future__ import annotations

import asyncio
import datetime as dt

from barfill.bootstrap import build
from barfill.config import load_settings
from barfill.domain import sliding_log
from barfill.domain.actions import CorporateAction
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import RateLimit
from barfill.providers.http import on_send
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.actions import refresh_due
from barfill.service.admin import set_enabled
from barfill.service.ensure import ensure
from barfill.service.orchestrator import run_scheduler
from barfill.store.actions import list_actions
from barfill.store.db import Database
from barfill.store.ratelimit import COLD_S, record_send
from barfill.store.symbols import symbol_id
from barfill.testing.clock import SimClock
from tests.e2e.helpers import ts

CAL = get_calendar("XNYS")
T0 = float(ts("2024-12-02T15:00"))


def _app(db: Database, synthetic: SyntheticProvider, clock: SimClock, **settings: object):
    return build(
        load_settings(database_url=db.url, **settings), providers={"synthetic": synthetic}, clock=clock
    )


def test_refresh_once_per_interval_for_enabled_definitions(db: Database) -> None:
    clock = SimClock(T0)
    synthetic = SyntheticProvider(calendar=CAL, now=clock.now)
    app = _app(db, synthetic, clock, actions_refresh_s=3600)
    try:
        report = ensure(app, ["SPLT", "AAPL", "MSFT"], "d1", start="2024-06-03", end="2024-06-14")
        msft = next(r.definition_id for r in report.results if r.symbol == "MSFT")
        set_enabled(app, [msft], False)

        first = asyncio.run(refresh_due(app))
        assert first.fetched == {"synthetic": 2} and first.errors == []
        assert synthetic.action_requests == 2  # SPLT and AAPL; MSFT's definition is disabled
        with db.read() as conn:
            stored = list_actions(conn, symbol_id(conn, "SPLT") or -1)
        assert any(a.kind.value == "split" and a.ratio == 4.0 for a in stored)

        clock.advance(3599)
        assert asyncio.run(refresh_due(app)).fetched == {}  # not due yet on the database clock
        clock.advance(2)
        again = asyncio.run(refresh_due(app))
        assert again.fetched == {"synthetic": 2} and again.changed == 0  # nothing new: ETags stay
        assert synthetic.action_requests == 4
    finally:
        app.close()


def test_refresh_waits_for_the_rate_limit(db: Database) -> None:
    clock = SimClock(T0)
    limit = RateLimit(requests=1, period_s=60.0)
    seen: list[float] = []

    class Timed(SyntheticProvider):
        async def fetch_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
            seen.append(clock.now())
            hooks.append(on_send.get())  # what the HTTP edge calls as this request leaves
            return await super().fetch_actions(symbol, start, end)

    hooks: list[object] = []
    app = _app(db, Timed(calendar=CAL, now=clock.now, rate_limit=limit), clock)
    try:
        ensure(app, ["SPLT", "AAPL", "MSFT"], "d1", start="2024-06-03", end="2024-06-14")
        result = asyncio.run(refresh_due(app))
        assert result.fetched == {"synthetic": 3}
        # One request a minute (plus the limiter's send margin) on the (simulated) database
        # clock: the refresh waited for its slots. As a worker's, the loop's first grant
        # counts as sent COLD_S late (its first connection), and the next ones wait for that.
        step = sliding_log.window_s(limit)
        assert step >= 60
        expected = [0, round(step + COLD_S, 3), round(2 * step + COLD_S, 3)]
        assert [round(t - seen[0], 3) for t in seen] == expected
        # The departure is checked against the grant and recorded, as a worker's request is
        # (without it, a grant sent late let the next one out early: a 429 at a strict 4/s).
        assert hooks == [record_send] * 3
    finally:
        app.close()


def test_the_scheduler_refreshes_after_its_tick(db: Database) -> None:
    clock = SimClock(T0)
    synthetic = SyntheticProvider(calendar=CAL, now=clock.now)
    app = _app(db, synthetic, clock)
    try:
        ensure(app, ["SPLT"], "d1", start="2024-06-03", end="2024-06-14")

        async def once() -> None:
            stop = asyncio.Event()

            def on_tick(_: object) -> None:
                if synthetic.action_requests:  # the background refresh ran
                    stop.set()

            await run_scheduler(app, stop, interval_s=0.01, on_tick=on_tick)

        asyncio.run(once())
        assert synthetic.action_requests == 1
    finally:
        app.close()
