"""A simulated clock drives the database clock, the queue, the rate limiter and the worker's waits.

Every rule that depends on time runs in SQL on the database clock; with a
:class:`~barfill.testing.clock.SimClock` injected into the :class:`Database`,
that clock must be the simulated one on both databases, including in the
statements the queue builds once and caches.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from barfill.bootstrap import App, build
from barfill.clock import SystemClock
from barfill.config import load_settings
from barfill.domain import sliding_log
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import RateLimit
from barfill.domain.slices import NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.ports import Clock
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.worker import Worker
from barfill.store.db import Database, db_now
from barfill.store.definitions import upsert_definition
from barfill.store.queue import SqlQueue
from barfill.store.ratelimit import COLD_S, SqlRateLimiter, acquire
from barfill.store.symbols import ensure_symbols
from barfill.testing.clock import SimClock

T0 = 1_764_000_000.0  # 2025-11-24 16:00 UTC
HOUR = 3_600


def _slices(db: Database, n: int, *, max_attempts: int = 5) -> list[NewSlice]:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        did, _ = upsert_definition(conn, sid, "h1", window_days=30)
    t = 1_700_000_400
    return [
        NewSlice(did, sid, Timeframe.h1, t + i * HOUR, t + (i + 1) * HOUR, "synthetic", 0, max_attempts)
        for i in range(n)
    ]


def test_both_clocks_fit_the_port() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(SimClock(0), Clock)


def test_database_clock_follows_the_simulated_clock(simdb: Database, sim: SimClock) -> None:
    assert simdb.now() == pytest.approx(T0, abs=1e-6)
    sim.advance(86_400 * 3 + 0.25)
    assert simdb.now() == pytest.approx(T0 + 86_400 * 3 + 0.25, abs=1e-6)
    sim.set(T0 - 100)  # back, too: a test may
    assert simdb.now() == pytest.approx(T0 - 100, abs=1e-6)


def test_without_a_clock_the_sql_is_the_servers_clock(db: Database, simdb: Database) -> None:
    plain = str(db_now(db).compile())
    assert plain == str(db_now(db.dialect).compile())
    assert "barfill" not in plain  # unchanged SQL: the server's own clock
    with db.read() as conn:
        assert str(db_now(conn).compile()) == plain
    clocked = str(db_now(simdb).compile())
    assert "barfill" in clocked
    with simdb.read() as conn:
        assert str(db_now(conn).compile()) == clocked
    # The real clock is years after the simulated one.
    assert db.now() > simdb.now() + 86_400 * 300


def test_lease_expires_when_the_simulated_clock_passes_it(simdb: Database, sim: SimClock) -> None:
    queue = SqlQueue(simdb)
    queue.enqueue(_slices(simdb, 1))
    (claimed,) = queue.claim("w1", 1, lease_s=60.0)
    sim.advance(59)
    assert queue.reap() == 0
    queue.heartbeat(claimed, 60.0)  # lease until T0 + 119
    sim.advance(59)
    assert queue.reap() == 0
    sim.advance(2)
    assert queue.reap() == 1
    assert queue.counts()["queued"] == 1


def test_backoff_and_retry_after_follow_the_simulated_clock(simdb: Database, sim: SimClock) -> None:
    # The claim statement is built once and cached: it must read the clock at each execution.
    queue = SqlQueue(simdb, backoff_base_s=30.0, backoff_cap_s=30.0, rng=random.Random(1))
    queue.enqueue(_slices(simdb, 2))
    first, second = queue.claim("w1", 2, lease_s=60.0)
    assert queue.fail(first, "http_503", "busy", retryable=True, retry_after_s=300.0) == "queued"
    assert queue.fail(second, "timeout", "slow", retryable=True) == "queued"  # jitter in [0, 30]
    assert queue.runnable() == {}
    assert queue.claim("w1", 2, lease_s=60.0) == []
    sim.advance(31)
    again = queue.claim("w1", 2, lease_s=60.0)
    assert [s.id for s in again] == [second.id]
    sim.advance(300 - 31 - 1)
    assert queue.runnable() == {}
    sim.advance(2)
    assert queue.runnable() == {"synthetic": 1}
    assert [s.id for s in queue.claim("w1", 2, lease_s=60.0)] == [first.id]


def test_rate_limiter_follows_the_simulated_clock(simdb: Database, sim: SimClock) -> None:
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=5, period_s=60.0)
    window, g = sliding_log.window_s(limit), sliding_log.stagger_s(limit)  # 61.8 s; 0.25 s
    for _ in range(5):  # 5 a stagger apart
        assert limiter.try_acquire("polygon", limit) == 0.0
        sim.advance(g)
    assert limiter.try_acquire("polygon", limit) == pytest.approx(window - 5 * g, abs=1e-6)
    sim.advance(window - 5 * g - 0.5)
    assert limiter.try_acquire("polygon", limit) == pytest.approx(0.5, abs=1e-6)
    sim.advance(0.5 + 1e-6)  # past the float rounding of the sums above
    assert limiter.try_acquire("polygon", limit) == 0.0
    assert limiter.peek("polygon", limit) == pytest.approx(g, abs=1e-5)


def test_acquire_sleeps_on_the_simulated_clock(simdb: Database, sim: SimClock) -> None:
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=5, period_s=60.0)

    async def take(n: int) -> float:
        return sum(
            [await acquire(limiter, "polygon", limit, sleep=sim.sleep, clock=sim.now) for _ in range(n)]
        )

    waited = asyncio.run(take(6))
    # Five at once, the sixth a window after the first, which counts as sent COLD_S late.
    assert waited == pytest.approx(sliding_log.window_s(limit) + COLD_S, abs=1e-6)
    assert sim.now() == pytest.approx(T0 + waited, abs=1e-6)


def test_concurrent_simulated_sleeps_share_the_time_that_passes() -> None:
    sim = SimClock(100.0)

    async def main() -> None:
        await asyncio.gather(sim.sleep(12), sim.sleep(12), sim.sleep(5))

    asyncio.run(main())
    assert sim.now() == 112.0
    assert sim.slept == 29.0
    with pytest.raises(ValueError):
        sim.advance(-1)


def _worker_app(db: Database, sim: SimClock, limit: RateLimit) -> tuple[App, SyntheticProvider]:
    synthetic = SyntheticProvider(calendar=get_calendar(), rate_limit=limit, now=sim.now)
    settings = load_settings(database_url=db.url, derivations=[], lease_s=3_600.0)
    return build(settings, providers={"synthetic": synthetic}, clock=sim), synthetic


def _daily_slices(app: App, n: int) -> list[NewSlice]:
    with app.db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        did, _ = upsert_definition(conn, sid, "h1", window_days=30)
    monday = 1_709_510_400  # 2024-03-04 00:00 UTC
    days = [monday + k * 86_400 for k in (0, 1, 2, 3, 4, 7, 8, 9)][:n]
    return [NewSlice(did, sid, Timeframe.h1, d, d + 86_400, "synthetic", 0, 5) for d in days]


def test_worker_until_idle_waits_out_rate_limits_in_simulated_time(db: Database, sim: SimClock) -> None:
    limit = RateLimit(requests=5, period_s=60.0)
    app, synthetic = _worker_app(db, sim, limit)
    try:
        app.queue.enqueue(_daily_slices(app, 6))
        stats = asyncio.run(Worker(app, concurrency=2, poll_s=30.0).run(until_idle=True))
        assert stats.succeeded == 6 and stats.failed == 0
        assert synthetic.requests == 6
        assert app.queue.counts()["succeeded"] == 6
        # Six requests at 5/min: five at once, the sixth a window (and the first's cold start) later.
        assert sim.now() == pytest.approx(T0 + sliding_log.window_s(limit) + COLD_S, abs=1e-3)
        assert app.db.now() == pytest.approx(sim.now(), abs=1e-3)
    finally:
        app.close()


def test_worker_until_idle_returns_while_slices_back_off(db: Database, sim: SimClock) -> None:
    app, synthetic = _worker_app(db, sim, RateLimit(requests=100, period_s=1.0))
    try:
        app.queue.enqueue(_daily_slices(app, 3))
        (held,) = app.queue.claim("test", 1, lease_s=60.0)
        app.queue.fail(held, "http_503", "busy", retryable=True, retry_after_s=300.0)
        stats = asyncio.run(Worker(app, concurrency=2, poll_s=30.0).run(until_idle=True))
        assert stats.succeeded == 2
        assert app.queue.counts()["queued"] == 1  # backing off: not claimable now, so idle
        assert sim.now() < T0 + 300
        sim.advance(301)
        stats = asyncio.run(Worker(app, concurrency=2, poll_s=30.0).run(until_idle=True))
        assert stats.succeeded == 1
        assert app.queue.counts()["succeeded"] == 3 and synthetic.requests == 3
    finally:
        app.close()
