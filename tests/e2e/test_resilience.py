"""What production throws at the engine: a restarted database, a 429, a bad bar."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store import reports
from barfill.store.db import Database
from tests.e2e.helpers import make_app, ts

CAL = get_calendar("XNYS")
WINDOW = (ts("2024-01-02"), ts("2024-03-28"))


def _terminate_backends(db: Database) -> int:
    url = make_url(db.url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (url.database,),
        ).fetchall()
    return len(rows)


class RestartingProvider(SyntheticProvider):
    """Terminates every backend of the database while answering its 2nd and 4th requests.

    The kill happens at a known point of the worker's life (between claim and
    commit, with pooled connections open), not on a wall-clock timer.
    """

    def __init__(self, db: Database, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.db = db
        self.answers = 0
        self.killed: list[int] = []

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        self.answers += 1
        if self.answers in (2, 4):
            self.killed.append(await asyncio.to_thread(_terminate_backends, self.db))
        return await super().fetch(symbols, timeframe, start, end)


def test_worker_survives_a_postgresql_restart(postgres_db: Database) -> None:
    """Every connection of the worker is killed mid-run (as a restart does); nothing is lost."""
    provider = RestartingProvider(postgres_db, calendar=CAL, page_limit=300)
    app = make_app(postgres_db, {"synthetic": provider}, lease_s=3.0)
    try:
        report = ensure(app, ["AAPL", "MSFT"], "m15", start=WINDOW[0], end=WINDOW[1])
        total = sum(r.slices_queued for r in report.results)
        assert total >= 6
        stats = asyncio.run(Worker(app, concurrency=2, poll_s=0.05).run(drain=True))
        assert sum(provider.killed) >= 1 and stats.db_errors >= 1  # the worker really lost connections
        counts = app.queue.counts()
        assert counts["succeeded"] == total and counts["failed"] == 0, (counts, stats)
        with postgres_db.read() as conn:
            stored = {(t, tf): n for t, tf, _, n in reports.bar_counts(conn)}
        for sym in ("AAPL", "MSFT"):
            assert stored[(sym, "m15")] == len(provider.truth(sym, Timeframe.m15, *WINDOW))
    finally:
        app.close()


class FlakyProvider(SyntheticProvider):
    """Answers 429 (with Retry-After) to the first request, then bad bars once, then the truth."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.answers = 0

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        self.answers += 1
        if self.answers == 1:
            raise ProviderError("http_429", "slow down", retryable=True, retry_after_s=0.3)
        good = await super().fetch(symbols, timeframe, start, end)
        if self.answers == 2:
            bad = {}
            for sym, b in good.items():
                high = b.high.copy()
                high[0] = b.low[0] - 1.0  # high below low
                bad[sym] = BarBatch(
                    sym, b.timeframe, b.provider, b.ts, b.open, high, b.low, b.close, b.volume
                )
            return bad
        return good


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_429_backs_everyone_off_and_a_bad_page_is_refused_then_refetched(
    kind: str, request: pytest.FixtureRequest
) -> None:
    db: Database = request.getfixturevalue("sqlite_db" if kind == "sqlite" else "postgres_db")
    flaky = FlakyProvider(calendar=CAL)
    app = make_app(db, {"synthetic": flaky}, backoff_base_s=0.01, backoff_cap_s=0.02)
    try:
        ensure(app, ["AAPL"], "h1", start=WINDOW[0], end=WINDOW[1])
        before = db.now()
        stats = asyncio.run(Worker(app, concurrency=1, poll_s=0.05).run(drain=True))
        assert stats.errors == {"http_429": 1, "invalid_bars": 1}
        assert stats.succeeded == 1 and stats.failed == 0
        # The 429 pushed the shared budget at least Retry-After into the future.
        with db.read() as conn:
            floor = conn.execute(sa.text("SELECT not_before FROM rate_limits WHERE provider = 'synthetic'"))
            assert floor.scalar_one() >= before + 0.3
        with db.read() as conn:
            assert reports.total_bars(conn) == len(flaky.truth("AAPL", Timeframe.h1, *WINDOW))
    finally:
        app.close()


def test_a_bad_bar_that_never_heals_fails_the_slice_with_the_reason_kept(sqlite_db: Database) -> None:
    class AlwaysBad(FlakyProvider):
        async def fetch(self, symbols, timeframe, start, end):
            self.answers = 1  # every answer is the bad page
            return await super().fetch(symbols, timeframe, start, end)

    bad = AlwaysBad(calendar=CAL)
    app = make_app(sqlite_db, {"synthetic": bad}, backoff_base_s=0.01, backoff_cap_s=0.02, max_attempts=3)
    try:
        ensure(app, ["AAPL"], "h1", start=WINDOW[0], end=WINDOW[1])
        stats = asyncio.run(Worker(app, concurrency=1, poll_s=0.05).run(drain=True))
        assert stats.failed == 1 and stats.succeeded == 0
        (err,) = app.queue.errors()
        assert err[0] == "invalid_bars" and "high" in err[1]
        with sqlite_db.read() as conn:
            assert reports.total_bars(conn) == 0
    finally:
        app.close()
