"""Real worker processes: SIGKILL mid-run loses and duplicates nothing; SIGTERM drains gracefully."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np

from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.store.bar_reads import read_bars
from barfill.store.bars import count_bars
from barfill.store.db import Database
from barfill.store.symbols import symbol_id
from tests.e2e.helpers import BIN, clean_env, make_app, queue_counts, ts

CAL = get_calendar("XNYS")
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMD"]
WINDOW = (ts("2024-01-02"), ts("2024-06-28"))


def _enqueue(db: Database) -> int:
    # A small page so that six months of m5 make several slices per symbol.
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=CAL, page_limit=2_000)})
    try:
        report = ensure(app, SYMBOLS, "m5", start=WINDOW[0], end=WINDOW[1], provider="synthetic")
        return sum(r.slices_queued for r in report.results)
    finally:
        app.close()


def _worker(db: Database, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "barfill"), "worker", *args],
        env=clean_env(db.url, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _running(db: Database) -> int:
    return queue_counts(db).get("running", 0)


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sigkilled_worker_loses_nothing_and_duplicates_nothing(db: Database) -> None:
    total = _enqueue(db)
    assert total >= 8
    slow = {"BARFILL_SYNTHETIC_LATENCY_MS": "1500", "BARFILL_LEASE_S": "2"}
    victim = _worker(db, "--concurrency", "4", **slow)
    try:
        assert _wait_for(lambda: _running(db) >= 1, 30), victim.stderr.read1().decode()  # type: ignore[union-attr]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert _running(db) >= 1  # its slices are still leased to the dead worker
    survivor = _worker(db, "--concurrency", "4", "--drain", BARFILL_LEASE_S="2")
    try:
        _, err_ = survivor.communicate(timeout=90)
    finally:
        if survivor.poll() is None:
            survivor.kill()
            survivor.communicate()
    assert survivor.returncode == 0, err_.decode()
    counts = queue_counts(db)
    assert counts.get("succeeded", 0) == total, counts
    synthetic = SyntheticProvider(calendar=CAL)
    with db.read() as conn:
        stored_total = 0
        for sym in SYMBOLS:
            sid = symbol_id(conn, sym)
            assert sid is not None
            stored = read_bars(conn, sid, Timeframe.m5, *WINDOW)
            truth = synthetic.truth(sym, Timeframe.m5, *WINDOW)
            np.testing.assert_array_equal(stored.ts, truth.ts)
            np.testing.assert_array_equal(stored.close, truth.close)
            stored_total += len(truth)
        # No duplicate rows: every stored row is one truth bar.
        assert count_bars(conn, timeframe=Timeframe.m5) == stored_total


def test_sigterm_stops_claiming_and_leaves_nothing_running(db: Database) -> None:
    total = _enqueue(db)
    proc = _worker(
        db, "--concurrency", "2", "--grace", "5", BARFILL_SYNTHETIC_LATENCY_MS="800", BARFILL_LEASE_S="30"
    )
    try:
        assert _wait_for(lambda: _running(db) >= 1, 30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err_ = proc.communicate()
    assert proc.returncode == 0, err_.decode()
    counts = queue_counts(db)
    assert counts.get("running", 0) == 0, counts
    assert counts.get("succeeded", 0) >= 1
    assert counts.get("succeeded", 0) + counts.get("queued", 0) == total
