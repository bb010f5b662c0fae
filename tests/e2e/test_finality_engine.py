"""The live-edge rule through the engine, on both databases (issue 7 items 1, 2, 7, 9).

The database clock is the real one here, so every range is chosen relative to
it: a session after ``db.now()`` is never final yet, a 2024 session always is.
Providers are local: the synthetic provider behind each provider's declared
capabilities (a non-realtime "polygon", a realtime "alpaca" from 2016).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.finality import final_at
from barfill.domain.slices import CoverageSpan, NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.providers.alpaca import HISTORY_START
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.derive import derive_after, parse_derivations
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.bar_reads import read_bars
from barfill.store.bars import count_bars
from barfill.store.coverage import read_coverage_view
from barfill.store.db import Database
from barfill.store.schema import bars, job_runs
from barfill.store.symbols import symbol_id
from tests.e2e.helpers import make_app, ts

CAL = get_calendar("XNYS")
M15, H1 = Timeframe.m15, Timeframe.h1


class Declared:
    """A synthetic provider answering under another provider's declared capabilities."""

    def __init__(self, inner: SyntheticProvider, caps: Capabilities, drop: Sequence[int] = ()) -> None:
        self.inner = inner
        self._caps = caps
        self.drop = list(drop)  # bar labels this feed does not have (no trade there)
        self.requests: list[tuple[tuple[str, ...], Timeframe, int, int]] = []

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        self.requests.append((tuple(symbols), timeframe, start, end))
        got = await self.inner.fetch(symbols, timeframe, start, end)
        return {
            s: dataclasses.replace(b.take(~np.isin(b.ts, self.drop)), provider=self._caps.name)
            for s, b in got.items()
        }

    async def aclose(self) -> None:
        return None


# A minute the final feed has no trade in, but the realtime feed had one: a bar without a final twin.
NO_TWIN = ts("2024-03-12T15:00")


def providers() -> dict[str, Declared]:
    base = SyntheticProvider(calendar=CAL).capabilities
    polygon = dataclasses.replace(base, name="polygon", realtime=False)
    alpaca = dataclasses.replace(base, name="alpaca", realtime=True, history_start=HISTORY_START)
    return {
        "polygon": Declared(SyntheticProvider(calendar=CAL, name="polygon"), polygon, drop=[NO_TWIN]),
        "alpaca": Declared(SyntheticProvider(calendar=CAL, name="alpaca", seed=1), alpaca),
    }


def app_with(db: Database, names: Sequence[str], **settings: object) -> tuple[App, dict[str, Declared]]:
    ps = {n: p for n, p in providers().items() if n in names}
    app = make_app(
        db,
        ps,
        historical_providers=["polygon", "alpaca"],
        realtime_providers=["alpaca", "polygon"],
        derivations=["m15->h1"],
        **settings,
    )
    return app, ps


def slice_rows(db: Database) -> list[sa.Row[tuple[object, ...]]]:
    with db.read() as conn:
        return list(conn.execute(sa.select(job_runs).order_by(job_runs.c.id)).all())


async def run_until(app: App, done: Callable[[], bool]) -> Worker:
    """Run a worker until ``done()`` holds (checked between polls); fails if it never does."""
    worker = Worker(app, concurrency=2, poll_s=0.02)
    stop = asyncio.Event()

    async def watch() -> None:
        for _ in range(1500):
            if await asyncio.to_thread(done):
                break
            await asyncio.sleep(0.02)
        stop.set()

    watcher = asyncio.create_task(watch())
    await worker.run(stop, grace_s=5.0)
    await watcher
    assert await asyncio.to_thread(done), "the worker never reached the expected state"
    return worker


def next_session_after(now: float) -> int:
    """Index of the first session whose regular open is more than a day after ``now``."""
    return int(np.searchsorted(CAL.opens, now + 86_400, side="right"))


def new_slice(app: App, sym: str, tf: Timeframe, start: int, end: int, provider: str, layer: Layer) -> None:
    with app.db.write() as conn:
        from barfill.store.definitions import upsert_definition
        from barfill.store.symbols import ensure_symbols

        sid = ensure_symbols(conn, [sym])[sym]
        did, _ = upsert_definition(conn, sid, tf, start=start, end=end)
    app.queue.enqueue([NewSlice(did, sid, tf, start, end, provider, layer=layer)])


def test_a_final_slice_not_final_yet_is_deferred_not_failed(db: Database) -> None:
    """Issue 7 item 1: such a slice failed not_supported after one try and was never revived."""
    app, ps = app_with(db, ["polygon"])
    try:
        i = next_session_after(db.now())
        start, end = int(CAL.opens[i]), int(CAL.closes[i])
        new_slice(app, "AAPL", M15, start, end, "polygon", Layer.historical)

        def deferred() -> bool:
            rows = slice_rows(db)
            return bool(rows[0].status == "queued" and rows[0].not_before > db.now() + 3600)

        worker = asyncio.run(run_until(app, deferred))
        (row,) = slice_rows(db)
        assert row.status == "queued" and row.attempts == 0 and row.error_code is None
        assert row.not_before == final_at(ps["polygon"].capabilities, CAL, end)
        assert worker.stats.deferred == 1 and worker.stats.failed == 0
        assert ps["polygon"].requests == []
    finally:
        app.close()


def test_a_provisional_slice_whose_range_became_final_is_superseded_unfetched(db: Database) -> None:
    app, ps = app_with(db, ["polygon", "alpaca"])
    try:
        start, end = ts("2024-03-12T13:30"), ts("2024-03-12T20:00")  # a session long final
        new_slice(app, "AAPL", M15, start, end, "alpaca", Layer.intraday)
        asyncio.run(run_until(app, lambda: slice_rows(db)[0].status == "succeeded"))
        (row,) = slice_rows(db)
        assert (row.error_code, row.rows_written, row.layer) == ("superseded", 0, "intraday")
        assert ps["alpaca"].requests == [] and ps["polygon"].requests == []
        with db.read() as conn:
            assert count_bars(conn) == 0
    finally:
        app.close()


def test_final_bars_remove_every_provisional_bar_and_its_coverage(db: Database) -> None:
    """Issue 7 item 7: provisional bars were never removed, even without a final twin."""
    app, ps = app_with(db, ["polygon", "alpaca"])
    try:
        start, end = ts("2024-03-12T13:30"), ts("2024-03-12T20:00")  # Tuesday 09:30-16:00 EDT
        sym = "AAPL"
        new_slice(app, sym, M15, start, end, "alpaca", Layer.intraday)
        # The provisional fetch as it happened that afternoon: IEX bars (one at 11:00 EDT that the
        # final feed does not have: no final twin), derived h1 bars, provisional coverage.
        (claimed,) = app.queue.claim("test", 1, 60.0)
        batch = asyncio.run(ps["alpaca"].fetch([sym], M15, start, end))[sym]
        assert NO_TWIN in batch.ts.tolist()
        expires = db.now() + 3600

        def derived(conn: sa.Connection, s: object) -> None:
            derive_after(
                conn,
                symbol_id=claimed.symbol_id,
                source=M15,
                start=start,
                end=end,
                derivations=parse_derivations(["m15->h1"]),
                calendar=CAL,
                layer=Layer.intraday,
                coverage_expires_at=expires,
            )

        app.queue.complete_many(
            [(claimed, [batch], [CoverageSpan(start, end, expires)])], layer=Layer.intraday, also=derived
        )
        with db.read() as conn:
            sid = symbol_id(conn, sym)
            assert sid is not None
            layers = conn.execute(sa.select(bars.c.timeframe, bars.c.layer).distinct()).all()
            assert set(layers) == {("m15", "intraday"), ("h1", "intraday")}
        # After 20:00 the final slice lands (planned by ensure from final coverage only).
        report = ensure(app, [sym], "m15", start=start, end=end)
        assert [r.slices_queued for r in report.results] == [1]
        asyncio.run(run_until(app, lambda: app.queue.counts().get("queued", 0) == 0))
        with db.read() as conn:
            left = conn.execute(sa.select(sa.func.count()).where(bars.c.layer == "intraday")).scalar_one()
            assert left == 0
            final = read_bars(conn, sid, M15, start, end)
            truth = ps["polygon"].inner.truth(sym, M15, start, end)
            truth = truth.take(truth.ts != NO_TWIN)
            np.testing.assert_array_equal(final.ts, truth.ts)
            np.testing.assert_array_equal(final.close, truth.close)
            assert final.provider == "polygon" and NO_TWIN not in final.ts.tolist()
            h1 = read_bars(conn, sid, H1, ts("2024-03-12T13:00"), end)
            assert len(h1) == 7 and h1.provider == "resample:m15"
            for tf in (M15, H1):
                assert read_coverage_view(conn, sid, tf).provisional == [], tf
    finally:
        app.close()


def test_alpaca_only_2010_is_reported_unfillable_and_nothing_is_queued(db: Database) -> None:
    """Issue 7 item 9: Alpaca answered empty for 2010 and the range was recorded as covered."""
    app, ps = app_with(db, ["alpaca"])
    try:
        report = ensure(app, ["AAPL"], "d1", start="2010-01-04", end="2010-02-01")
        (r,) = report.results
        assert r.slices_queued == 0 and r.unfillable and not r.has_coverage
        assert r.unfillable_reasons == [
            "before the history of every provider serving d1 (alpaca: d1 history starts 2016-01-01)"
        ]
        assert r.as_dict()["unfillable_reasons"] == r.unfillable_reasons
        assert slice_rows(db) == []
        # With Polygon configured the same window is planned on Polygon.
        app2, _ = app_with(db, ["polygon", "alpaca"])
        try:
            again = ensure(app2, ["AAPL"], "d1", start="2010-01-04", end="2010-02-01").results[0]
            assert again.unfillable == [] and again.slices_queued == 1
            assert {row.provider for row in slice_rows(db)} == {"polygon"}
        finally:
            app2.close()
        assert ps["alpaca"].requests == []
    finally:
        app.close()


def test_a_past_window_is_stored_once_final_from_polygon(db: Database) -> None:
    """Every session final, from the preferred historical provider; nothing provisional."""
    app, ps = app_with(db, ["polygon", "alpaca"])
    try:
        lo, hi = ts("2024-03-04"), ts("2024-03-16")
        report = ensure(app, ["AAPL", "MSFT"], "m15", start=lo, end=hi)
        assert all(r.pending == [] and r.unfillable == [] for r in report.results)
        asyncio.run(run_until(app, lambda: app.queue.counts().get("queued", 0) == 0))
        rows = slice_rows(db)
        assert {(r.provider, r.layer, r.status) for r in rows} == {("polygon", "historical", "succeeded")}
        assert ps["alpaca"].requests == []
        with db.read() as conn:
            for sym in ("AAPL", "MSFT"):
                sid = symbol_id(conn, sym)
                assert sid is not None
                stored = read_bars(conn, sid, M15, lo, hi, layers=[Layer.historical])
                truth = ps["polygon"].inner.truth(sym, M15, lo, hi)
                truth = truth.take(truth.ts != NO_TWIN)  # what the "polygon" feed has
                np.testing.assert_array_equal(stored.ts, truth.ts)
                np.testing.assert_array_equal(stored.close, truth.close)
        again = ensure(app, ["AAPL", "MSFT"], "m15", start=lo, end=hi)
        assert all(r.slices_queued == 0 and r.has_coverage for r in again.results)
    finally:
        app.close()
