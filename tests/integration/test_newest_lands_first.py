"""A newest-screen slice's bars land before its derived bars; a crash in between loses no derivation."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.slices import ClaimedSlice, CoverageSpan
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.bars import count_bars, read_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import Database
from barfill.store.schema import job_runs
from tests.e2e.helpers import make_app


def _status(db: Database, slice_id: int) -> str:
    with db.read() as conn:
        return str(conn.execute(sa.select(job_runs.c.status).where(job_runs.c.id == slice_id)).scalar_one())


def _expire(app: App, s: ClaimedSlice) -> None:
    with app.db.write() as conn:
        conn.execute(sa.update(job_runs).where(job_runs.c.id == s.id).values(lease_until=0.0))
    assert app.queue.reap() == 1


def _land(app: App, provider: SyntheticProvider, worker: Worker, s: ClaimedSlice) -> int:
    batch = asyncio.run(provider.fetch([s.symbol], s.timeframe, s.start, s.end))[s.symbol]
    item = (s, [batch], [CoverageSpan(s.start, s.end)])
    worker._land_bars([item], Layer.historical, get_calendar())
    return len(batch)


def test_a_crash_after_the_newest_bars_landed_loses_no_derivation(db: Database) -> None:
    provider = SyntheticProvider(calendar=get_calendar())
    app = make_app(db, {"synthetic": provider}, derivations=["m1->m5"])
    try:
        ensure(app, ["AAPL"], "m1", days=60)
        (newest,) = app.queue.claim("crashes", 1, 60.0)
        worker = Worker(app)
        assert worker._is_small([newest])  # a newest screen: it lands first
        n = _land(app, provider, worker, newest)
        # The process dies here: the bars are readable, nothing is derived, the slice still runs.
        with db.read() as conn:
            assert n > 0 and len(read_bars(conn, newest.symbol_id, "m1", newest.start, newest.end)) == n
            assert count_bars(conn, newest.symbol_id, "m5") == 0
        assert _status(db, newest.id) == "running"

        _expire(app, newest)  # reaped after its lease, then fetched again by another worker
        asyncio.run(Worker(app).run(until_idle=True))

        assert _status(db, newest.id) == "succeeded"
        with db.read() as conn:
            derived = read_bars(conn, newest.symbol_id, "m5", newest.start, newest.end)
            covered = read_coverage(conn, newest.symbol_id, Timeframe.m5)
        assert len(derived) > 0 and set(derived.provider.split("+")) == {"resample:m1"}
        # Every derived bucket is in the target's coverage (what a target definition then needs no fetch for).
        assert all(any(c.start <= t < c.end for c in covered) for t in derived.ts.tolist())
    finally:
        app.close()


def test_nothing_lands_for_a_slice_whose_lease_is_gone(db: Database) -> None:
    provider = SyntheticProvider(calendar=get_calendar())
    app = make_app(db, {"synthetic": provider}, derivations=["m1->m5"])
    try:
        ensure(app, ["AAPL"], "m1", days=60)
        (newest,) = app.queue.claim("slow", 1, 60.0)
        _expire(app, newest)
        _land(app, provider, Worker(app), newest)
        with db.read() as conn:
            assert count_bars(conn, newest.symbol_id, "m1") == 0
    finally:
        app.close()
