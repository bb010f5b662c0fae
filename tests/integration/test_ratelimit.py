"""The shared rate limiter on both databases, down to real processes hitting a real server.

The multi-process test is the one that matters: four OS processes, each with
its own engine, send requests through :func:`acquire` to a local HTTP server
that throttles (429) above N requests in any one-second window. The server,
not the clients, records what arrived and when.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barfill.bootstrap import build
from barfill.config import load_settings
from barfill.domain import sliding_log
from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.ports import RateLimiter
from barfill.providers.http import get_ok, on_send, warm_http_stack
from barfill.providers.synthetic import SyntheticProvider
from barfill.service import dashboard
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store import migrate, web_reports
from barfill.store.db import Database
from barfill.store.ratelimit import COLD_S, SqlRateLimiter, acquire, record_send
from barfill.testing.clock import SimClock
from tests.e2e.helpers import make_app
from tests.integration.providers.servers import StrictWindow, most_in_any_window, steady_gc

SERVER_LIMIT = 20  # requests the server accepts in any 1-second window
# Headroom under the server's limit, as a cautious operator would configure it.
CLIENT_LIMIT = RateLimit(requests=16, period_s=1.0)
PROCESSES = 4
REQUESTS_EACH = 25
T0 = 1_764_000_000.0


def _greedy(
    limiter: SqlRateLimiter, sim: SimClock, provider: str, limit: RateLimit, count: int
) -> list[float]:
    """Instants (simulated) of ``count`` grants, each asked for as soon as the limiter allows."""
    grants: list[float] = []
    while len(grants) < count:
        wait = limiter.try_acquire(provider, limit)
        if wait == 0.0:
            grants.append(sim.now())
        else:
            sim.advance(wait)
    return grants


def test_fits_the_rate_limiter_port(db: Database) -> None:
    assert isinstance(SqlRateLimiter(db), RateLimiter)


def test_grants_n_a_stagger_apart_then_n_per_window(simdb: Database, sim: SimClock) -> None:
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=3, period_s=1.0)
    window, g = sliding_log.window_s(limit), sliding_log.stagger_s(limit)
    assert limiter.try_acquire("p", limit) == 0.0
    assert limiter.try_acquire("p", limit) == pytest.approx(g, abs=1e-6)  # not at the same instant
    grants = [T0, *_greedy(limiter, sim, "p", limit, 2)]
    assert grants == pytest.approx([T0, T0 + g, T0 + 2 * g], abs=1e-6)
    assert limiter.try_acquire("p", limit) == pytest.approx(window - 2 * g, abs=1e-6)
    assert limiter.peek("p", limit) == pytest.approx(window - 2 * g, abs=1e-6)
    sim.advance(window - 2 * g)
    assert limiter.peek("p", limit) == 0.0
    assert _greedy(limiter, sim, "p", limit, 3) == pytest.approx([T0 + window + i * g for i in range(3)])


def test_providers_have_independent_budgets(simdb: Database) -> None:
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=1, period_s=60.0)
    assert limiter.try_acquire("a", limit) == 0.0
    assert limiter.try_acquire("b", limit) == 0.0
    assert limiter.try_acquire("a", limit) > 60
    assert limiter.peek("never-used", limit) == 0.0


def test_two_limiters_on_one_database_never_put_n_plus_one_in_a_window(db: Database, sim: SimClock) -> None:
    """Two processes' engines, asking greedily in turn on one clock: the log is shared."""
    engines = [Database(db.url, clock=sim), Database(db.url, clock=sim)]
    try:
        limiters = [SqlRateLimiter(e) for e in engines]
        limit = RateLimit(requests=4, period_s=1.0)
        grants: list[float] = []
        turn = 0
        while len(grants) < 30:
            wait = limiters[turn % 2].try_acquire("p", limit)
            turn += 1
            if wait == 0.0:
                grants.append(sim.now())
            elif turn % 2 == 0:  # both were refused: time passes until the slot
                sim.advance(wait)
        g = sliding_log.stagger_s(limit)
        assert grants[:4] == pytest.approx([T0 + i * g for i in range(4)], abs=1e-6)
        assert most_in_any_window(grants, limit.period_s) == 4
        assert grants[-1] == pytest.approx(T0 + 7 * sliding_log.window_s(limit) + g, abs=1e-6)
    finally:
        for e in engines:
            e.dispose()


def test_a_big_limit_keeps_n_per_window(simdb: Database, sim: SimClock) -> None:
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=100, period_s=1.0)
    g = sliding_log.stagger_s(limit)
    grants = _greedy(limiter, sim, "p", limit, 250)
    assert grants[:100] == pytest.approx([T0 + i * g for i in range(100)], abs=1e-5)
    assert most_in_any_window(grants, limit.period_s) == 100
    assert grants[-1] == pytest.approx(T0 + 2 * sliding_log.window_s(limit) + 49 * g, abs=1e-5)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["take", "take", "take", "advance", "penalty", "defer", "other_limit"]),
        st.floats(0.0, 1.5, allow_nan=False),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, requests=st.integers(1, 6))
def test_the_database_log_decides_as_the_pure_one(
    simdb: Database, sim: SimClock, ops: list[tuple[str, float]], requests: int
) -> None:
    """Grants, refusals, penalties, late sends and a changed N: SQL and :class:`sliding_log.Log` agree."""
    limiter = SqlRateLimiter(simdb)
    provider = f"p{uuid.uuid4().hex[:8]}"  # a fresh budget per example (the clock only moves on)
    limits = [RateLimit(requests=requests, period_s=1.0), RateLimit(requests=requests + 2, period_s=1.0)]
    model = sliding_log.Log({})
    which, last = 0, -1
    for op, x in ops:
        limit = limits[which]
        if op == "advance":
            sim.advance(x)
        elif op == "penalty":
            limiter.penalize(provider, x)
            model.penalize(sim.now(), x)
        elif op == "defer" and last >= 0:
            limiter.defer(provider, last, x)
            model.defer(last, x)
        elif op == "other_limit":
            which = 1 - which
        else:
            wait, _, seq = limiter.take(provider, limit)
            expected, expected_seq = model.take(sim.now(), limit)
            assert seq == expected_seq
            assert wait == pytest.approx(
                max(expected.wait_s, 0.001) if not expected.granted else 0.0, abs=1e-6
            )
            last = seq if seq >= 0 else last
        assert limiter.peek(provider, limits[which]) == pytest.approx(
            _model_peek(model, sim.now(), limits[which]), abs=1e-6
        )


def _model_peek(model: sliding_log.Log, now: float, limit: RateLimit) -> float:
    copy = sliding_log.Log(dict(model.slots), model.seq, model.not_before)
    d, _ = copy.take(now, limit)
    return d.wait_s


def test_penalize_pushes_every_worker_back(simdb: Database, sim: SimClock) -> None:
    other = Database(simdb.url, clock=sim)  # another process's engine, same database
    try:
        mine, theirs = SqlRateLimiter(simdb), SqlRateLimiter(other)
        limit = RateLimit(requests=100, period_s=1.0)
        assert mine.try_acquire("p", limit) == 0.0
        mine.penalize("p", 5.0)
        assert theirs.try_acquire("p", limit) == pytest.approx(5.0, abs=1e-6)
        theirs.penalize("p", 1.0)  # a shorter penalty never shortens a longer one
        assert theirs.try_acquire("p", limit) == pytest.approx(5.0, abs=1e-6)
        sim.advance(5.0)
        # The floor is past and the first grant more than a window old: N more, then a window's wait.
        grants = _greedy(theirs, sim, "p", limit, 101)
        assert grants[99] < T0 + 6.0 and grants[100] >= grants[0] + sliding_log.window_s(limit)
        theirs.penalize("fresh", 2.0)  # first use of a provider may be a penalty
        assert theirs.try_acquire("fresh", RateLimit(1, 1.0)) == pytest.approx(2.0, abs=1e-6)
    finally:
        other.dispose()


async def test_acquire_sleeps_what_the_limiter_says(simdb: Database, sim: SimClock) -> None:
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=2, period_s=1.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await sim.sleep(seconds)

    waits = [await acquire(limiter, "p", limit, sleep=sleep, clock=sim.now) for _ in range(3)]
    # The first at once; the third a window after the first, which counts as sent COLD_S late.
    assert waits[0] == 0.0
    assert sum(waits) == pytest.approx(sliding_log.window_s(limit) + COLD_S, abs=1e-6) == sum(slept)


async def test_late_grants_are_recorded_late_then_dropped_never_lost(
    simdb: Database, sim: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Every answer comes back 0.05 s after it was decided (past the 0.03 s margin) and each record
    of that lateness 0.05 s later still: the grant is dropped (not counted), three times, then sent."""
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=2, period_s=1.0)
    await acquire(limiter, "p", limit, clock=sim.now)  # the loop's first (cold) grant
    sim.advance(5.0)

    def ticking() -> float:
        t = sim.now()
        sim.advance(0.05)
        return t

    caplog.set_level(logging.INFO, logger="barfill.ratelimit")
    await acquire(limiter, "p", limit, sleep=sim.sleep, clock=ticking)
    assert [r.levelname for r in caplog.records if r.name == "barfill.ratelimit"] == ["INFO"] * 3 + [
        "WARNING"
    ]
    assert _counters(simdb, "p") == (2, 0, 0)  # five grants, three dropped unsent
    sim.advance(60.0)
    assert limiter.take("p", limit)[2] == 5


async def test_a_request_that_leaves_late_is_recorded_late(
    simdb: Database, sim: SimClock, server: ThrottlingServer
) -> None:
    """The grant was fresh when handed over, but the request left 0.2 s later (a busy loop):
    the HTTP edge reports the departure, and the grant N after it waits those 0.2 s too."""
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=1, period_s=1.0)
    window = sliding_log.window_s(limit)
    await acquire(limiter, "p", limit, clock=sim.now)  # the loop's first (cold) grant
    sim.advance(5.0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as client:
        await acquire(limiter, "p", limit, clock=sim.now)
        assert limiter.peek("p", limit) == pytest.approx(window, abs=1e-6)
        sim.advance(0.2)
        on_send.set(record_send)
        await get_ok(client, "/v2/aggs", provider="p")
        for _ in range(500):  # the record is written in the background
            if limiter.peek("p", limit) > window - 0.1:
                break
            await asyncio.sleep(0.01)
    assert limiter.peek("p", limit) == pytest.approx(window, abs=1e-6)  # not window - 0.2
    assert on_send.get() is None  # one request per grant


async def test_acquire_gives_up_after_max_wait(simdb: Database, sim: SimClock) -> None:
    limiter = SqlRateLimiter(simdb)
    limit = RateLimit(requests=1, period_s=60.0)
    await acquire(limiter, "p", limit, clock=sim.now)
    with pytest.raises(ProviderError) as e:
        await acquire(limiter, "p", limit, max_wait_s=1.0, sleep=sim.sleep, clock=sim.now)
    assert e.value.code == "rate_limited" and e.value.retryable
    assert e.value.retry_after_s == pytest.approx(sliding_log.window_s(limit) + COLD_S, abs=1e-6)


# -- lifetime counters -----------------------------------------------------------------


def _counters(db: Database, provider: str) -> tuple[int, int, int]:
    with db.read() as conn:
        c = web_reports.provider_counts(conn)[provider]
    return int(c["requests"]), int(c["throttled"]), int(c["errors"])


def test_counters_count_grants_penalties_and_errors_across_engines(simdb: Database, sim: SimClock) -> None:
    db = simdb
    other = Database(db.url, clock=sim)  # another process's engine, same database
    try:
        mine, theirs = SqlRateLimiter(db), SqlRateLimiter(other)
        limit = RateLimit(requests=4, period_s=3600.0)  # 4, then none for an hour
        _greedy(mine, sim, "p", limit, 3)
        _greedy(theirs, sim, "p", limit, 1)
        assert theirs.try_acquire("p", limit) > 3000  # refused: not a request, not counted
        assert _counters(db, "p") == (4, 0, 0)
        mine.penalize("p", 1.0)
        assert _counters(other, "p") == (4, 1, 0)
        theirs.record_error("p")
        theirs.record_error("p")
        assert _counters(db, "p") == (4, 1, 2)
        theirs.unsent("p")  # a grant dropped unsent is not a request
        assert _counters(db, "p") == (3, 1, 2)
        # A provider whose first event is an error or a penalty gets its row then.
        mine.record_error("fresh")
        mine.penalize("late", 1.0)
        assert _counters(db, "fresh") == (0, 0, 1) and _counters(db, "late") == (0, 1, 0)
    finally:
        other.dispose()


def test_dashboard_wait_is_the_limiters_wait(simdb: Database, sim: SimClock) -> None:
    limit = RateLimit(requests=2, period_s=3600.0)
    provider = SyntheticProvider(calendar=get_calendar(), rate_limit=limit)
    app = build(load_settings(database_url=simdb.url), providers={"synthetic": provider}, clock=sim)
    try:
        (p,) = dashboard.overview(app)["providers"]
        assert (p["requests"], p["wait_s"]) == (0, 0.0)  # never used
        app.limiter.try_acquire("synthetic", limit)
        sim.advance(1.0)
        (p,) = dashboard.overview(app)["providers"]
        assert (p["requests"], p["wait_s"]) == (1, 0.0)  # one of the two left
        app.limiter.try_acquire("synthetic", limit)
        sim.advance(599.0)
        (p,) = dashboard.overview(app)["providers"]
        assert p["requests"] == 2
        assert p["wait_s"] == pytest.approx(sliding_log.window_s(limit) - 600.0, abs=1e-3)
    finally:
        app.close()


def test_rate_limit_rows_survive_migrations_0006_and_0010(db: Database) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO rate_limits (provider, tat, updated_at) VALUES ('old', 1.0, 1.0)"))
        conn.execute(sa.text("INSERT INTO rate_limits (provider, tat, updated_at) VALUES ('busy', 4e9, 1.0)"))
    migrate.upgrade(db)
    migrate.require_current(db)
    limiter = SqlRateLimiter(db)
    assert _counters(db, "old") == (0, 0, 0)
    assert limiter.try_acquire("old", RateLimit(1, 1.0)) == 0.0  # its tat 1.0 is long past
    assert _counters(db, "old") == (1, 0, 0)
    # A tat in the future is kept as the floor: nothing is granted earlier than before.
    assert limiter.try_acquire("busy", RateLimit(1, 1.0)) > 1e9


class ThrottledOnce(SyntheticProvider):
    """Answers 429 (with a short Retry-After) to its first request, then the truth; counts every call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.throttled = 0

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        self.calls += 1
        if self.calls == 1:
            self.throttled += 1
            raise ProviderError("http_429", "slow down", retryable=True, retry_after_s=0.05)
        return await super().fetch(symbols, timeframe, start, end)


def test_worker_counters_match_what_the_provider_saw(db: Database) -> None:
    provider = ThrottledOnce(calendar=get_calendar(), page_limit=21)
    app = make_app(db, {"synthetic": provider}, backoff_base_s=0.01, backoff_cap_s=0.02)
    try:
        report = ensure(app, ["CNT"], "h1", days=10)
        queued = report.results[0].slices_queued
        assert queued > 1
        asyncio.run(Worker(app, concurrency=2, poll_s=0.05).run(drain=True))
        assert app.queue.counts()["succeeded"] == queued
        assert provider.calls == queued + 1  # every slice once, one of them twice
        assert _counters(db, "synthetic") == (provider.calls, provider.throttled, 1) == (queued + 1, 1, 1)
        o = dashboard.overview(app)
        (p,) = o["providers"]
        assert (p["requests"], p["rate_limited"], p["errors"]) == (queued + 1, 1, 1)
    finally:
        app.close()


# -- many processes, one budget --------------------------------------------------------


class ThrottlingServer:
    """Answers 200, or 429 when more than ``limit`` requests arrived in the last second
    (a :class:`StrictWindow` on this process's monotonic clock)."""

    def __init__(self, limit: int) -> None:
        self.window = StrictWindow(limit, 1.0, time.monotonic)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept-alive connections, as real providers serve

            def do_GET(self) -> None:
                with server.lock:
                    status = server.window.arrive()
                body = b'{"status":"OK"}' if status == 200 else b'{"status":"ERROR"}'
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def arrivals(self) -> list[tuple[float, int]]:
        return self.window.arrivals


@contextmanager
def _serving(limit: int) -> Iterator[ThrottlingServer]:
    srv = ThrottlingServer(limit)
    with steady_gc():
        srv.thread.start()
        try:
            yield srv
        finally:
            srv.httpd.shutdown()
            srv.httpd.server_close()
            srv.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[ThrottlingServer]:
    with _serving(SERVER_LIMIT) as srv:
        yield srv


def _client_process(
    url: str, port: int, requests: int, barrier: Any, limit: RateLimit = CLIENT_LIMIT
) -> None:
    """One worker process: its own engine, sending ``requests`` requests through the shared limit."""
    asyncio.run(_client(url, port, requests, barrier, limit))


async def _client(url: str, port: int, requests: int, barrier: Any, limit: RateLimit) -> None:
    db = Database(url)
    limiter = SqlRateLimiter(db)
    warm_http_stack()  # as a worker does before its first slot
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10.0
        ) as client:
            barrier.wait(timeout=60)  # start together, for the most contention
            for _ in range(requests):
                while True:
                    await acquire(limiter, "local", limit)
                    on_send.set(record_send)  # as the worker does: the departure is checked too
                    try:
                        await get_ok(client, "/v2/aggs", provider="local")
                        break
                    except ProviderError as e:
                        assert e.code == "http_429", e
                        limiter.penalize("local", e.retry_after_s or 1.0)
    finally:
        db.dispose()


def _run_clients(db: Database, server: ThrottlingServer, processes: int, each: int, limit: RateLimit) -> None:
    """``processes`` spawned clients, started together, each sending ``each`` requests under ``limit``."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    procs = [
        ctx.Process(target=_client_process, args=(db.url, server.port, each, barrier, limit))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * processes


@pytest.mark.timeout(90)
def test_many_processes_never_exceed_the_servers_limit(db: Database, server: ThrottlingServer) -> None:
    _run_clients(db, server, PROCESSES, REQUESTS_EACH, CLIENT_LIMIT)

    statuses = [s for _, s in server.arrivals]
    busiest = server.window.most_in_any_window()
    span = server.arrivals[-1][0] - server.arrivals[0][0]
    seen = f"busiest 1 s window {busiest}/{SERVER_LIMIT}, {len(statuses)} requests in {span:.2f} s"
    print(f"\n{db.dialect}: {seen}")  # how well the budget is used is a figure for bench/, not a test
    assert statuses.count(429) == 0
    assert statuses.count(200) == PROCESSES * REQUESTS_EACH
    assert busiest <= SERVER_LIMIT


STRICT_N = 4  # the case: 4 requests in any 1 s, and barfill told exactly that
STRICT_PROCESSES = 3
STRICT_EACH = 12


@pytest.fixture
def strict_server() -> Iterator[ThrottlingServer]:
    with _serving(STRICT_N) as srv:
        yield srv


@pytest.mark.timeout(90)
def test_processes_configured_at_the_servers_exact_limit_get_no_429(
    db: Database, strict_server: ThrottlingServer
) -> None:
    """No headroom: barfill is told the server's own limit (4/1), as a user would.

    Grants alone are 1 s + the send margin apart for every N + 1, on the database
    clock, and a grant older than the margin is never sent: the server, judging
    arrivals by its own clock in a strict sliding window, refuses nothing.
    """
    _run_clients(db, strict_server, STRICT_PROCESSES, STRICT_EACH, RateLimit(requests=STRICT_N, period_s=1.0))
    statuses = [s for _, s in strict_server.arrivals]
    assert statuses.count(429) == 0
    assert statuses.count(200) == STRICT_PROCESSES * STRICT_EACH
    assert strict_server.window.most_in_any_window() <= STRICT_N
