"""A multi-day backlog drained under Polygon's free-tier limit (5 requests a minute), in simulated time.

A client asks for two years of h1 bars of two symbols on a Saturday (no bar
closes while the backlog drains, so the ideal plan cannot grow). A worker runs
continuously while a scheduler ticks every 30 simulated seconds, as
``barfill worker`` and the scheduler would. Rate-limit waits and idle polls
pass on the :class:`SimClock`, so minutes of market time take a second or two.
Ideal: the provider serves exactly the slices the first plan made.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date

from barfill.bootstrap import App, build
from barfill.config import load_settings
from barfill.domain.timeframes import Timeframe
from barfill.service.ensure import ensure
from barfill.service.orchestrator import tick
from barfill.service.worker import Worker
from barfill.store.bar_reads import read_bars
from barfill.store.symbols import symbol_id
from barfill.testing.clock import SimClock
from tests.integration.providers.servers import FakeServer
from tests.replay.harness import CAL, _compare, ny
from tests.replay.market import Market, RequestLog, TimedPolygonWire

SYMBOLS = ("AAPL", "MSFT")
TICK_S = 30.0
MAX_SIM_S = 4 * 3600.0  # the plan needs a few minutes at 5/min; anything near this is a runaway


@dataclass
class BacklogOutcome:
    planned: int  # slices in the first plan: the ideal number of requests
    requests: int  # first-page requests Polygon served
    ticks: int
    duplicates: list[str] = field(default_factory=list)  # sessions served more than once
    stored_missing: list[str] = field(default_factory=list)  # differences from the final truth


async def run_backlog(db_url: str) -> BacklogOutcome:
    start = ny(date(2025, 11, 29), 11, 0)  # a Saturday
    clock = SimClock(start)
    market = Market(CAL, clock.now)
    log = RequestLog()
    with FakeServer(TimedPolygonWire(market, log)) as server:
        settings = load_settings(
            database_url=db_url,
            polygon_api_key="pk",
            polygon_base_url=server.url,
            polygon_rate_limit="5/60",
            derivations=[],
            lease_s=3_600.0,
            reverify_after_sessions=0,  # requests == the plan: no re-verification (test_reverify)
        )
        app = build(settings, clock=clock)  # the real wiring; adapters read the (simulated) database clock
        try:
            report = await asyncio.to_thread(ensure, app, list(SYMBOLS), "h1", days=730)
            planned = sum(r.slices_queued for r in report.results)
            windows = {r.symbol: (r.window_start, r.window_end) for r in report.results}
            ticks = await _drain_with_ticks(app, clock)
            problems: list[str] = []
            with app.db.read() as conn:
                for symbol, (lo, hi) in windows.items():
                    sid = symbol_id(conn, symbol)
                    got = read_bars(conn, sid if sid is not None else -1, Timeframe.h1, lo, hi)
                    want = market.final_bars(symbol, Timeframe.h1, lo, hi)
                    problems += _compare(f"backlog {symbol} h1", want, got)
        finally:
            await app.aclose()
            app.close()
    counts = log.final_counts()
    duplicates = [f"{s} {tf.value} {d}: {n} requests" for (s, tf, d), n in sorted(counts.items()) if n > 1]
    return BacklogOutcome(planned, log.calls["polygon"], ticks, duplicates, problems)


async def _drain_with_ticks(app: App, clock: SimClock) -> int:
    """Run a worker and a 30 s scheduler tick until the queue is empty and a tick plans nothing."""
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(app, concurrency=2, poll_s=4.0).run(stop))
    ticks = 0
    next_tick = clock.now() + TICK_S
    deadline = clock.now() + MAX_SIM_S
    try:
        while clock.now() < deadline:
            await asyncio.sleep(0.005)  # real time: let the worker claim and fetch
            if clock.now() < next_tick:
                continue
            created = (await asyncio.to_thread(tick, app)).slices_created
            ticks += 1
            next_tick = clock.now() + TICK_S
            counts = await asyncio.to_thread(app.queue.counts)
            if created == 0 and counts["queued"] == 0 and counts["running"] == 0:
                break
    finally:
        stop.set()
        await worker
    return ticks
