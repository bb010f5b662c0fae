"""ensure → tick → workers → the store equals the synthetic provider's ground truth, bar for bar."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from barfill.api import Barfill
from barfill.domain.calendar import get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.orchestrator import tick
from barfill.service.planning import gaps_of
from barfill.service.worker import Worker
from barfill.store.bar_reads import read_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import Database
from barfill.store.symbols import symbol_id
from tests.e2e.helpers import make_app, ts

CAL = get_calendar("XNYS")
SYMBOLS = ["AAPL", "MSFT", "BRK.B"]
# A DST change (2024-03-10) inside the h1 window; a DST change (2024-11-03),
# Thanksgiving and its half day (2024-11-28/29) inside the m15 window.
H1 = (ts("2024-02-26"), ts("2024-03-23"))
M15 = (ts("2024-10-28"), ts("2024-12-04"))


def _assert_same(stored, truth) -> None:
    assert len(stored) == len(truth) > 0
    np.testing.assert_array_equal(stored.ts, truth.ts)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(stored, col), getattr(truth, col), err_msg=col)
    np.testing.assert_allclose(stored.vwap, truth.vwap, rtol=1e-9)


def _hydrate(db: Database, synthetic: SyntheticProvider, **settings: object):
    app = make_app(db, {"synthetic": synthetic}, derivations=["m15->h1", "m15->h4"], **settings)
    ensure(app, SYMBOLS, "h1", start=H1[0], end=H1[1])
    ensure(app, SYMBOLS, "m15", start=M15[0], end=M15[1])
    result = tick(app)
    assert result.errors == []
    stats = asyncio.run(Worker(app, concurrency=3, poll_s=0.05).run(drain=True))
    return app, stats


def test_hydration_equals_ground_truth(db: Database) -> None:
    synthetic = SyntheticProvider(calendar=CAL)
    app, stats = _hydrate(db, synthetic)
    try:
        assert stats.failed == 0 and stats.succeeded > 0
        assert app.queue.counts().get("succeeded", 0) == stats.succeeded
        with db.read() as conn:
            for sym in SYMBOLS:
                sid = symbol_id(conn, sym)
                assert sid is not None
                for tf, (lo, hi) in ((Timeframe.h1, H1), (Timeframe.m15, M15)):
                    stored = read_bars(conn, sid, tf, lo, hi, provider="synthetic")
                    _assert_same(stored, synthetic.truth(sym, tf, lo, hi))
                    cov = read_coverage(conn, sid, tf)
                    assert gaps_of(Interval(lo, hi), cov, CAL) == []
                # Resampled from m15 equals the provider's native h1/h4 for the same minutes.
                for tf in (Timeframe.h1, Timeframe.h4):
                    derived = read_bars(conn, sid, tf, M15[0], M15[1], provider="resample:m15")
                    truth = synthetic.truth(sym, tf, M15[0], M15[1])
                    truth = truth.take(np.isin(truth.ts, derived.ts))
                    _assert_same(derived, truth)
                    # Every bucket inside the m15 window was derived (the edges may be partial).
                    inner = synthetic.truth(sym, tf, M15[0] + 86_400, M15[1] - 86_400)
                    assert set(inner.ts.tolist()) <= set(derived.ts.tolist())
        # No request touched only closed-market time.
        for _symbols, _tf, start, end in synthetic.request_log:
            assert CAL.trading_intervals(start, end), (start, end)
        # Nothing left to do: a tick plans nothing, ensure reports full coverage.
        assert tick(app).slices_created == 0
        again = ensure(app, SYMBOLS, "h1", start=H1[0], end=H1[1])
        assert all(r.has_coverage and r.slices_queued == 0 and r.bars_missing == 0 for r in again.results)
    finally:
        app.close()


def test_multi_symbol_requests_are_batched(db: Database) -> None:
    synthetic = SyntheticProvider(calendar=CAL)
    app, stats = _hydrate(db, synthetic)
    try:
        # Three symbols share every slice range: one request serves all three.
        assert any(len(symbols) == 3 for symbols, *_ in synthetic.request_log)
        assert synthetic.requests < stats.succeeded
    finally:
        app.close()


def test_transient_faults_are_retried_to_completion(db: Database) -> None:
    synthetic = SyntheticProvider(calendar=CAL, failure_rate=0.7, seed=7)
    app, stats = _hydrate(db, synthetic, backoff_base_s=0.01, backoff_cap_s=0.05, max_attempts=20)
    try:
        assert stats.retried > 0
        assert stats.failed == 0
        assert app.queue.counts().get("queued", 0) == 0
        with db.read() as conn:
            sid = symbol_id(conn, "AAPL")
            assert sid is not None
            _assert_same(
                read_bars(conn, sid, Timeframe.h1, *H1, provider="synthetic"),
                synthetic.truth("AAPL", Timeframe.h1, *H1),
            )
    finally:
        app.close()


def test_concurrent_ensure_gives_one_definition_and_no_duplicate_slices(db: Database) -> None:
    synthetic = SyntheticProvider(calendar=CAL)
    app = make_app(db, {"synthetic": synthetic})
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            reports = list(
                pool.map(lambda _: ensure(app, ["AAPL"], "m15", start=M15[0], end=M15[1]), range(100))
            )
        ids = {r.results[0].definition_id for r in reports}
        assert len(ids) == 1
        total = sum(app.queue.counts().values())
        assert total > 0
        # Counts are true: the slices were queued once in all, and every caller saw all of them.
        assert sum(r.results[0].slices_queued for r in reports) == total
        assert all(r.results[0].slices_queued + r.results[0].slices_pending == total for r in reports)
    finally:
        app.close()


def test_window_beyond_history_is_unfillable_not_retried(db: Database) -> None:
    from barfill.domain.capabilities import Capabilities

    class ShallowSynthetic(SyntheticProvider):
        @property
        def capabilities(self) -> Capabilities:
            base = super().capabilities
            return Capabilities(
                name=base.name,
                timeframes=base.timeframes,
                page_limit=base.page_limit,
                history_days={Timeframe.m15: 30},
                max_symbols=base.max_symbols,
                rate_limit=base.rate_limit,
            )

    app = make_app(db, {"synthetic": ShallowSynthetic(calendar=CAL)})
    try:
        report = ensure(app, ["AAPL"], "m15", start=M15[0], end=M15[1])
        result = report.results[0]
        assert result.unfillable and result.slices_queued == 0
        assert sum(app.queue.counts().values()) == 0
        assert tick(app).slices_created == 0
    finally:
        app.close()


def test_facade_ensure_wait_bars(db: Database, tmp_path) -> None:
    synthetic = SyntheticProvider(calendar=CAL)
    bf = Barfill(db.url, providers={"synthetic": synthetic})
    try:
        report = bf.ensure("AAPL", "1h", start="2024-03-04", end="2024-03-09")
        first = report.results[0]
        # One hole (closed nights do not split it), five sessions of 7 hour bars missing.
        assert (first.gaps, first.bars_missing, first.has_coverage) == (1, 35, False)
        assert report.progress.total_slices >= 1
        done = bf.wait(report.job, poll_s=0.05)
        assert done.done and done.progress_percent == 100.0 and done.bars_written > 0
        frame = bf.bars("AAPL", "h1", start="2024-03-04", end="2024-03-09")
        truth = synthetic.truth("AAPL", Timeframe.h1, ts("2024-03-04"), ts("2024-03-09"))
        assert len(frame) == len(truth) == 35
        assert str(frame.index.tz) == "UTC"
        np.testing.assert_array_equal(frame["close"].to_numpy(), truth.close)
        assert len(bf.bars("AAPL", "h1", library="polars")) == 35
        assert bf.export("AAPL", "h1", tmp_path / "a.parquet") == 35
        assert bf.export("AAPL", "h1", tmp_path / "a.csv") == 35
    finally:
        bf.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeframe": "2h", "days": 3}, "timeframe"),
        ({"timeframe": "h1", "days": 0}, "days"),
        ({"timeframe": "h1", "start": "2024-03-05", "end": "2024-03-01"}, "end"),
        ({"timeframe": "h1", "start": "2024-03-01T10:00", "end": "2024-03-05"}, "start"),
        ({"timeframe": "h1", "days": 5, "start": "2024-03-01", "end": "2024-03-05"}, "window"),
        ({"timeframe": "h1", "days": 5, "provider": "nope"}, "provider"),
    ],
)
def test_bad_ensure_input_is_a_clear_error(sqlite_db: Database, kwargs, field) -> None:
    from barfill.errors import InvalidInput

    app = make_app(sqlite_db, {"synthetic": SyntheticProvider(calendar=CAL)})
    try:
        tf = kwargs.pop("timeframe")
        with pytest.raises(InvalidInput) as info:
            ensure(app, ["AAPL"], tf, **kwargs)
        assert info.value.field == field
        assert sum(app.queue.counts().values()) == 0
    finally:
        app.close()
