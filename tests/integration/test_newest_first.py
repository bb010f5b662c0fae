"""Newest first: the slice with a fresh ensure's most recent bars is claimed before older ones."""

from __future__ import annotations

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.store.db import Database
from tests.e2e.helpers import make_app


def test_newest_slice_is_claimed_first(db: Database) -> None:
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    try:
        # Low-priority older work queued first must not get ahead of it either.
        ensure(app, ["MSFT"], "m1", days=365, priority=-5)
        report = ensure(app, ["AAPL", "NVDA"], "m1", days=730)
        assert all(r.slices_queued >= 2 for r in report.results)  # several slices each, or the test is moot
        order = []
        while claimed := app.queue.claim("w", 1, 60.0):
            order.append(claimed[0])
        fresh = [s for s in order if s.symbol in ("AAPL", "NVDA")]
        assert {s.symbol for s in order[:2]} == {"AAPL", "NVDA"}
        newest_end = max(s.end for s in fresh)
        assert order[0].end == newest_end and order[1].end == newest_end
        for symbol in ("AAPL", "NVDA", "MSFT"):
            ends = [s.end for s in order if s.symbol == symbol]
            assert ends == sorted(ends, reverse=True), symbol
        assert order[-1].symbol == "MSFT"
    finally:
        app.close()


def test_fresh_ensure_fetches_its_newest_screen_on_its_own(db: Database) -> None:
    from barfill.domain.timeframes import Timeframe
    from barfill.service.planning import NEWEST_SCREEN_BARS

    cal = get_calendar()
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=cal)})
    try:
        ensure(app, ["AAPL"], "m1", days=730)
        order = []
        while claimed := app.queue.claim("w", 1, 60.0):
            order.append(claimed[0])
        first, rest = order[0], order[1:]
        # The first slice holds the newest bars, a screen of them (whole sessions), not a full page.
        bars = len(cal.bar_opens(Timeframe.m1, first.start, first.end))
        assert NEWEST_SCREEN_BARS <= bars < NEWEST_SCREEN_BARS + 2 * 390
        assert all(s.end <= first.start for s in rest)
        # Nothing lost or fetched twice: the slices still tile the window.
        spans = sorted((s.start, s.end) for s in order)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert spans[-1][1] == first.end and (first.start, first.end) in spans
    finally:
        app.close()


def test_ensure_tells_a_worker_once_its_slices_are_queued(db: Database) -> None:
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    try:
        queued_when_told: list[int] = []

        def told() -> None:  # the slices are committed: a claim right now finds them
            queued_when_told.append(app.queue.counts().get("queued", 0))

        report = ensure(app, ["AAPL"], "m1", days=30, on_enqueued=told)
        assert report.results[0].slices_queued > 0
        assert queued_when_told == [report.results[0].slices_queued]
        ensure(app, ["AAPL"], "m1", days=30, on_enqueued=told)  # nothing new queued: nobody woken
        assert len(queued_when_told) == 1
    finally:
        app.close()
