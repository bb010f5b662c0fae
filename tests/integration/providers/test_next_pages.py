"""Every page of a chain takes its own grant of the shared limit: zero 429s from a strict provider.

Polygon follows ``next_url`` and Alpaca ``next_page_token`` inside one fetch;
a strict provider counts each page as a request. Here the local wire server
answers in pages of a few dozen bars (or two actions) and throttles, on the
test's simulated clock, every arrival beyond N in any window. barfill is told
the server's exact limit. The server, not barfill, records what arrived.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from barfill.bootstrap import App, build
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers import AlpacaProvider, PolygonProvider
from barfill.providers.http import next_grant
from barfill.service.actions import refresh_due
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store import web_reports
from barfill.store.bar_reads import read_bars
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols, symbol_id
from barfill.testing.clock import SimClock

from .servers import AlpacaWire, FakeServer, PolygonWire, StrictWindow, Truth, Wire, ny

CAL = get_calendar("XNYS")
KEY, SECRET = "pk-next", "sk-next"
N = 3  # requests in any 1 s: the server's limit, and what barfill is told
START, END = ny(2024, 3, 4), ny(2024, 3, 9)  # Mon..Fri, extended hours: ~300 m15 bars


@pytest.fixture
def sim() -> SimClock:
    return SimClock(ny(2024, 3, 9, 12, 0))  # Saturday noon: the week is final


def _wire(name: str) -> Wire:
    truth = Truth(CAL)
    wire: Wire = PolygonWire(truth, KEY) if name == "polygon" else AlpacaWire(truth, KEY, SECRET)
    wire.page_size = 60  # several pages per slice
    return wire


@pytest.fixture(params=["polygon", "alpaca"])
def served(request: pytest.FixtureRequest, sim: SimClock) -> Iterator[tuple[str, FakeServer, StrictWindow]]:
    window = StrictWindow(N, 1.0, sim.now)
    with FakeServer(_wire(request.param), window=window) as server:
        yield request.param, server, window
    assert not server.errors, server.errors


def _app(db: Database, name: str, url: str, sim: SimClock, rate: str) -> App:
    keys: dict[str, object] = (
        {"polygon_api_key": KEY, "polygon_base_url": url, "polygon_rate_limit": rate}
        if name == "polygon"
        else {
            "alpaca_key_id": KEY,
            "alpaca_secret_key": SECRET,
            "alpaca_base_url": url,
            "alpaca_rate_limit": rate,
        }
    )
    settings = load_settings(
        database_url=db.url,
        historical_providers=[name],
        realtime_providers=[name],
        derivations=[],
        lease_s=3_600.0,  # simulated rate-limit waits must not outlast a lease
        **keys,
    )
    return build(settings, clock=sim)


def _requests_counted(app: App, name: str) -> int:
    """Grants the shared limiter counted for ``name`` (slots granted and not dropped unsent)."""
    with app.db.read() as conn:
        return web_reports.provider_counts(conn)[name]["requests"]


def test_each_page_of_a_fetch_takes_a_grant(
    db: Database, sim: SimClock, served: tuple[str, FakeServer, StrictWindow]
) -> None:
    name, server, window = served
    app = _app(db, name, server.url, sim, f"{N}/1")
    try:
        report = ensure(app, ["AAPL"], "m15", start=START, end=END)
        slices = report.results[0].slices_queued
        # One slice at a time: a request in flight is stamped on the simulated clock that
        # only this slice's own rate-limit waits move.
        stats = app.run(Worker(app, concurrency=1, poll_s=0.05, lease_s=3_600.0).run(until_idle=True))

        statuses = [status for _, status in window.arrivals]
        assert statuses.count(429) == 0
        assert len(statuses) > slices + 2  # chains of pages were followed
        assert stats.failed == 0 and stats.succeeded == slices
        assert app.queue.counts()["succeeded"] == slices
        # Every request the server saw was granted by the shared limiter, and counted once.
        assert stats.requests == len(statuses) == _requests_counted(app, name)
        assert window.most_in_any_window() == N  # the budget was used, never exceeded
        with app.db.read() as conn:
            stored = read_bars(conn, symbol_id(conn, "AAPL") or -1, Timeframe.m15, START, END, provider=name)
        truth = Truth(CAL).bars("AAPL", Timeframe.m15, START, END)
        assert stored.ts.tolist() == truth.ts.tolist()
    finally:
        app.close()


def test_each_page_of_an_actions_refresh_takes_a_grant(
    db: Database, sim: SimClock, served: tuple[str, FakeServer, StrictWindow]
) -> None:
    """SPLT has one split and four dividends, served two a page: Polygon sends three requests
    (a splits chain, a dividends chain of two pages), Alpaca three pages."""
    name, server, window = served
    window.requests = 1  # one request in any second
    app = _app(db, name, server.url, sim, "1/1")
    try:
        with app.db.write() as conn:
            ensure_symbols(conn, ["SPLT"])
        result = asyncio.run(refresh_due(app, tickers=["SPLT"], force=True))
        assert result.errors == [] and result.fetched == {name: 1}
        statuses = [status for _, status in window.arrivals]
        assert statuses == [200, 200, 200]
        assert _requests_counted(app, name) == 3
        assert window.most_in_any_window() == 1
    finally:
        app.close()


async def test_an_adapter_awaits_the_hook_before_every_request_but_the_first(
    sim: SimClock, served: tuple[str, FakeServer, StrictWindow]
) -> None:
    """Without a database: the hook is what the worker's slot-taking plugs into."""
    name, server, window = served
    window.requests = 10_000  # this test counts, it does not throttle
    hooked: list[int] = []

    async def hook() -> None:
        hooked.append(len(server.seen))  # requests sent before this one

    async with httpx.AsyncClient(timeout=10.0) as client:
        provider = (
            PolygonProvider(client, api_key=KEY, base_url=server.url, calendar=CAL)
            if name == "polygon"
            else AlpacaProvider(client, key_id=KEY, secret_key=SECRET, base_url=server.url, calendar=CAL)
        )
        next_grant.set(hook)
        await provider.fetch(["AAPL"], Timeframe.m15, START, END)
        bars_requests = len(server.seen)
        await provider.fetch_actions("SPLT", dt.date(2000, 1, 1), dt.date(2026, 12, 31))
    assert bars_requests > 2
    # One hook per request after each call's first; each awaited before its request left.
    assert hooked == [*range(1, bars_requests), *range(bars_requests + 1, len(server.seen))]
