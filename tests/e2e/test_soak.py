"""Soak/chaos (``make soak``): workers SIGKILLed again and again while faults are injected.

The short form runs in ``make test`` (test_processes.py: one SIGKILL, one SIGTERM).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

import numpy as np
import pytest

from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.store.bar_reads import read_bars
from barfill.store.bars import count_bars
from barfill.store.db import Database
from barfill.store.symbols import symbol_id
from tests.e2e.helpers import BIN, clean_env, make_app, queue_counts, ts

pytestmark = pytest.mark.slow

CAL = get_calendar("XNYS")
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMD", "META", "NFLX", "ADBE", "AMZN", "CRM", "CSCO", "INTC", "ORCL"]
WINDOW = (ts("2024-01-02"), ts("2024-06-28"))
CHAOS_ENV = {
    "BARFILL_SYNTHETIC_LATENCY_MS": "800",
    "BARFILL_SYNTHETIC_FAILURE_RATE": "0.2",
    "BARFILL_LEASE_S": "2",
    "BARFILL_BACKOFF_BASE_S": "0.05",
    "BARFILL_BACKOFF_CAP_S": "0.5",
    "BARFILL_MAX_ATTEMPTS": "100",
    "BARFILL_WORKER_POLL_S": "0.05",
}


@pytest.mark.timeout(600)
def test_repeated_sigkills_under_faults_lose_and_duplicate_nothing(db: Database) -> None:
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=CAL, page_limit=1_000)}, max_attempts=100)
    try:
        report = ensure(app, SYMBOLS, "m1", start=WINDOW[0], end=WINDOW[1])
        total = sum(r.slices_queued for r in report.results)
    finally:
        app.close()
    assert total >= 400
    rng = random.Random(11)
    env = clean_env(db.url, **CHAOS_ENV)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / "barfill"), "worker", "--concurrency", "3"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    workers = [start() for _ in range(3)]
    kills = 0
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline:
            time.sleep(1.0)
            counts = queue_counts(db)
            if counts.get("queued", 0) == 0 and counts.get("running", 0) == 0:
                break
            if kills < 12:
                victim = workers.pop(rng.randrange(len(workers)))
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                kills += 1
                workers.append(start())
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    counts = queue_counts(db)
    assert kills >= 5, "the run ended before the chaos did: make the workload bigger"
    assert counts.get("succeeded", 0) == total and counts.get("failed", 0) == 0, counts
    truth_source = SyntheticProvider(calendar=CAL)
    with db.read() as conn:
        expected = 0
        for sym in SYMBOLS:
            sid = symbol_id(conn, sym)
            assert sid is not None
            stored = read_bars(conn, sid, Timeframe.m1, *WINDOW)
            truth = truth_source.truth(sym, Timeframe.m1, *WINDOW)
            np.testing.assert_array_equal(stored.ts, truth.ts)
            np.testing.assert_array_equal(stored.close, truth.close)
            expected += len(truth)
        assert count_bars(conn, timeframe=Timeframe.m1) == expected
