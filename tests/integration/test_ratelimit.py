"""The shared rate limiter on both databases, down to real processes hitting a real server.

The multi-process test is the one that matters: four OS processes, each with
its own engine, send requests through :func:`acquire` to a local HTTP server
that throttles (429) above N requests in any one-second window. The server,
not the clients, records what arrived and when.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from barfill.domain import gcra
from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.ports import RateLimiter
from barfill.providers.http import warm_http_stack
from barfill.providers.synthetic import SyntheticProvider
from barfill.service import dashboard
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store import migrate, web_reports
from barfill.store.db import Database
from barfill.store.ratelimit import COLD_S, SqlRateLimiter, acquire
from tests.e2e.helpers import make_app

SERVER_LIMIT = 20  # requests the server accepts in any 1-second window
# Leave headroom under the server's limit for the jitter between a grant and
# the request's arrival: GCRA grants at most floor(1 s / interval) + burst = 18.
CLIENT_LIMIT = RateLimit(requests=16, period_s=1.0, burst=2)
PROCESSES = 4
REQUESTS_EACH = 25


def test_fits_the_rate_limiter_port(db: Database) -> None:
    assert isinstance(SqlRateLimiter(db), RateLimiter)


def test_grants_the_burst_at_once_then_spaces_requests(db: Database) -> None:
    limiter = SqlRateLimiter(db)
    limit = RateLimit(requests=2, period_s=1.0, burst=3)  # one every 0.5 s: room for a slow box
    waits = [limiter.try_acquire("p", limit) for _ in range(3)]
    assert waits == [0.0, 0.0, 0.0]
    wait = limiter.try_acquire("p", limit)
    assert 0.0 < wait <= gcra.spacing_s(limit) + 1e-6  # one spacing, minus the time the calls took
    time.sleep(wait)
    assert limiter.try_acquire("p", limit) == 0.0
    assert limiter.try_acquire("p", limit) > 0  # and spaced again


def test_stored_arrival_time_matches_the_pure_arithmetic(db: Database) -> None:
    limiter = SqlRateLimiter(db)
    limit = RateLimit(requests=5, period_s=60.0)
    before = db.now()
    assert limiter.try_acquire("p", limit) == 0.0
    after = db.now()
    tat = limiter.tat("p")
    assert tat is not None
    assert gcra.decide(None, before, limit).tat <= tat <= gcra.decide(None, after, limit).tat
    wait = limiter.try_acquire("p", limit)
    expected = gcra.decide(tat, db.now(), limit)
    assert not expected.granted
    assert wait == pytest.approx(expected.wait_s, abs=0.5)
    assert limiter.tat("p") == tat  # a refusal changes nothing


def test_providers_have_independent_budgets(db: Database) -> None:
    limiter = SqlRateLimiter(db)
    limit = RateLimit(requests=1, period_s=60.0)
    assert limiter.try_acquire("a", limit) == 0.0
    assert limiter.try_acquire("b", limit) == 0.0
    assert limiter.try_acquire("a", limit) > 50
    assert limiter.tat("never-used") is None


def test_penalize_pushes_every_worker_back(db: Database) -> None:
    other = Database(db.url)  # another process's engine, same database
    try:
        mine, theirs = SqlRateLimiter(db), SqlRateLimiter(other)
        limit = RateLimit(requests=100, period_s=1.0, burst=5)
        assert mine.try_acquire("p", limit) == 0.0
        mine.penalize("p", 5.0)  # remembers the burst tolerance from try_acquire
        wait = theirs.try_acquire("p", limit)
        assert 4.5 < wait <= 5.0 + 1e-6
        theirs.penalize("p", 1.0, limit=limit)  # a shorter penalty never shortens a longer one
        assert 4.5 < theirs.try_acquire("p", limit) <= 5.0 + 1e-6
        theirs.penalize("fresh", 2.0)  # first use of a provider may be a penalty
        assert 1.5 < theirs.try_acquire("fresh", RateLimit(1, 1.0)) <= 2.0 + 1e-6
    finally:
        other.dispose()


async def test_acquire_sleeps_what_the_limiter_says(db: Database) -> None:
    limiter = SqlRateLimiter(db)
    limit = RateLimit(requests=2, period_s=1.0)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    first = await acquire(limiter, "p", limit, sleep=fake_sleep)  # 0.0 unless a late grant was dropped
    waited = await acquire(limiter, "p", limit, sleep=fake_sleep)
    assert len(slept) >= 1 and first + waited == pytest.approx(sum(slept))
    # What the limiter asked for: a spacing at most, after the first grant's cold-start deferral.
    assert 0.0 < waited <= gcra.spacing_s(limit) + COLD_S + 1e-6


async def test_acquire_gives_up_after_max_wait(db: Database) -> None:
    limiter = SqlRateLimiter(db)
    limit = RateLimit(requests=1, period_s=60.0)
    await acquire(limiter, "p", limit)
    with pytest.raises(ProviderError) as e:
        await acquire(limiter, "p", limit, max_wait_s=1.0)
    assert e.value.code == "rate_limited" and e.value.retryable
    assert e.value.retry_after_s is not None and 55 < e.value.retry_after_s <= gcra.spacing_s(limit) + COLD_S


# -- lifetime counters -----------------------------------------------------------------


def _counters(db: Database, provider: str) -> tuple[int, int, int]:
    with db.read() as conn:
        c = web_reports.provider_counts(conn)[provider]
    return int(c["requests"]), int(c["throttled"]), int(c["errors"])


def test_counters_count_grants_penalties_and_errors_across_engines(db: Database) -> None:
    other = Database(db.url)  # another process's engine, same database
    try:
        mine, theirs = SqlRateLimiter(db), SqlRateLimiter(other)
        limit = RateLimit(requests=1, period_s=3600.0, burst=4)  # 4 at once, then one an hour
        assert [mine.try_acquire("p", limit) for _ in range(3)] == [0.0] * 3
        assert theirs.try_acquire("p", limit) == 0.0
        assert theirs.try_acquire("p", limit) > 0  # refused: not a request, not counted
        assert _counters(db, "p") == (4, 0, 0)
        mine.penalize("p", 1.0)
        assert _counters(other, "p") == (4, 1, 0)
        theirs.record_error("p")
        theirs.record_error("p")
        assert _counters(db, "p") == (4, 1, 2)
        # A provider whose first event is an error or a penalty gets its row then.
        mine.record_error("fresh")
        mine.penalize("late", 1.0)
        assert _counters(db, "fresh") == (0, 0, 1) and _counters(db, "late") == (0, 1, 0)
    finally:
        other.dispose()


def test_dashboard_wait_is_the_budgets_lead_beyond_the_burst(db: Database) -> None:
    limiter = SqlRateLimiter(db)
    limit = RateLimit(requests=1, period_s=3600.0, burst=2)
    limiter.try_acquire("p", limit)
    with db.read() as conn:
        ahead = web_reports.provider_counts(conn)["p"]["ahead_s"]
    assert 0.0 < ahead <= gcra.spacing_s(limit)  # tat runs one spacing ahead, the burst has a slot
    assert limiter.peek("p", limit) == 0.0
    limiter.try_acquire("p", limit)
    with db.read() as conn:
        ahead = web_reports.provider_counts(conn)["p"]["ahead_s"]
    assert ahead - gcra.burst_tolerance_s(limit) == pytest.approx(limiter.peek("p", limit), abs=60.0)
    assert ahead - gcra.burst_tolerance_s(limit) > 3000.0  # the next slot is most of an hour away


def test_existing_rate_limit_rows_survive_migration_0006(db: Database) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO rate_limits (provider, tat, updated_at) VALUES ('old', 1.0, 1.0)"))
    migrate.upgrade(db)
    migrate.require_current(db)
    limiter = SqlRateLimiter(db)
    assert limiter.tat("old") == 1.0 and _counters(db, "old") == (0, 0, 0)
    assert limiter.try_acquire("old", RateLimit(1, 1.0)) == 0.0  # tat 1.0 is long past
    assert _counters(db, "old") == (1, 0, 0)


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
    """Answers 200, or 429 when more than ``limit`` requests arrived in the last second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, status)
        self._recent: deque[float] = deque()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept-alive connections, as real providers serve

            def do_GET(self) -> None:
                status = server.record()
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

    def record(self) -> int:
        with self.lock:
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            self._recent.append(now)
            status = 429 if len(self._recent) > self.limit else 200
            self.arrivals.append((now, status))
            return status

    def max_in_any_second(self) -> int:
        times = sorted(t for t, _ in self.arrivals)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - 1.0:
                j += 1
            best = max(best, i - j + 1)
        return best


@contextmanager
def _serving(limit: int) -> Iterator[ThrottlingServer]:
    srv = ThrottlingServer(limit)
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
                    response = await client.get("/v2/aggs")
                    if response.status_code != 429:
                        response.raise_for_status()
                        break
                    limiter.penalize("local", float(response.headers.get("Retry-After", "1")))
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
    busiest = server.max_in_any_second()
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
    """No headroom: barfill is told the server's own limit (4/1, burst 1), as a user would.

    Grants alone are 1 s + the send margin apart for every N + 1, on the database
    clock, and a grant older than the margin is never sent: the server, judging
    arrivals by its own clock in a strict sliding window, refuses nothing.
    """
    _run_clients(db, strict_server, STRICT_PROCESSES, STRICT_EACH, RateLimit(requests=STRICT_N, period_s=1.0))
    statuses = [s for _, s in strict_server.arrivals]
    assert statuses.count(429) == 0
    assert statuses.count(200) == STRICT_PROCESSES * STRICT_EACH
    assert strict_server.max_in_any_second() <= STRICT_N
