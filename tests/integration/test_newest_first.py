"""Newest first: the slice with a fresh ensure's most recent bars is claimed before older ones."""

from __future__ import annotations

import asyncio

import pytest

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service import worker as worker_module
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.db import Database
from tests.e2e.helpers import make_app, queue_counts


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


def test_a_newest_screen_takes_no_place_of_the_pages_claimed_with_it(db: Database) -> None:
    # Pages of 8,000 bars: the screen (two sessions of m1) is less than a tenth of one.
    provider = SyntheticProvider(calendar=get_calendar(), page_limit=8_000)
    app = make_app(db, {"synthetic": provider})
    try:
        slices = ensure(app, ["AAPL"], "m1", days=90).results[0].slices_queued
        pages = slices - 1
        assert pages >= 2
        # Room for every page: they start together once the screen has landed, and none of them
        # was claimed only to be given back (and claimed again) right when the screen lands.
        worker = Worker(app, concurrency=pages)
        asyncio.run(worker.run(until_idle=True))
        assert worker.stats.succeeded == slices
        assert worker.stats.released == 0
        assert worker.stats.claimed == slices
        assert provider.requests == slices
    finally:
        app.close()


def test_stopped_while_its_newest_screen_runs_a_worker_gives_the_pages_back_unfetched(db: Database) -> None:
    provider = SyntheticProvider(calendar=get_calendar(), page_limit=8_000, latency_s=0.5)
    app = make_app(db, {"synthetic": provider})
    try:
        slices = ensure(app, ["AAPL"], "m1", days=90).results[0].slices_queued
        pages = slices - 1

        async def run() -> Worker:
            stop = asyncio.Event()
            worker = Worker(app, concurrency=pages)
            task = asyncio.create_task(worker.run(stop))
            while provider.requests == 0:  # the screen's request is out
                await asyncio.sleep(0.01)
            stop.set()
            await task
            return worker

        worker = asyncio.run(run())
        assert provider.requests == 1  # the screen only
        assert worker.stats.succeeded == 1  # it finished within the grace period
        assert worker.stats.released == pages
        assert {k: n for k, n in queue_counts(db).items() if n} == {"queued": pages, "succeeded": 1}
    finally:
        app.close()


def test_the_pages_wait_a_moment_after_their_newest_screen_lands(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's read of the screen goes first (see Worker._start); here the pause is an hour."""
    monkeypatch.setattr(worker_module, "NEWEST_READ_S", 3600.0)
    provider = SyntheticProvider(calendar=get_calendar(), page_limit=8_000)
    app = make_app(db, {"synthetic": provider})
    try:
        pages = ensure(app, ["AAPL"], "m1", days=90).results[0].slices_queued - 1

        async def run() -> Worker:
            stop = asyncio.Event()
            worker = Worker(app, concurrency=pages)
            task = asyncio.create_task(worker.run(stop))
            while worker.stats.succeeded == 0:  # the screen has landed
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # time enough for the pages to start, were they not held
            assert provider.requests == 1
            stop.set()  # ends the pause: the pages go back
            await task
            return worker

        worker = asyncio.run(run())
        assert provider.requests == 1
        assert worker.stats.released == pages
    finally:
        app.close()
