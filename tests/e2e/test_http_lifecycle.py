"""Against an HTTP provider, as a user runs barfill: every entry point exits cleanly, every time.

A local Polygon-wire server with persistent (HTTP/1.1) connections stands in
for Polygon: an httpx client then keeps pooled connections between requests,
which is what made ``ensure --wait``, ``worker`` (on SIGTERM and after
``--drain``) and a second ``Barfill.wait()`` crash when each ``asyncio.run``
closed or reused a client of another event loop.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pandas as pd
import pytest

from barfill import Barfill
from barfill.config import Settings, load_settings
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.store.db import Database
from tests.e2e.helpers import BIN, clean_env, queue_counts
from tests.integration.providers.servers import FakeServer, PolygonWire, Truth, ny

KEY = "pk-test-0123456789"
CAL = get_calendar("XNYS")
WAIT_S = 60.0  # generous: a loaded 2-core box; the condition, not the time, is what is checked
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def polygon() -> Iterator[FakeServer]:
    with FakeServer(PolygonWire(Truth(CAL), KEY), keep_alive=True) as server:
        yield server
    assert server.errors == []


def polygon_env(db: Database, server: FakeServer) -> dict[str, str]:
    return clean_env(
        db.url,
        BARFILL_POLYGON_API_KEY=KEY,
        BARFILL_POLYGON_BASE_URL=server.url,
        BARFILL_POLYGON_RATE_LIMIT="1000/1",
        BARFILL_WORKER_POLL_S="0.05",
    )


def barfill(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "barfill"), *argv], env=env, capture_output=True, text=True, timeout=WAIT_S * 2
    )


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Event loop is closed" not in stderr, stderr
    assert "has been closed" not in stderr, stderr


def ts_ny(text: str) -> pd.Timestamp:
    """A New York wall-clock time as the UTC timestamp barfill's frames are indexed by."""
    return pd.Timestamp(text, tz="America/New_York").tz_convert("UTC")


def settings_for(db: Database, server: FakeServer) -> Settings:
    return load_settings(
        database_url=db.url,
        polygon_api_key=KEY,
        polygon_base_url=server.url,
        polygon_rate_limit="1000/1",
        worker_poll_s=0.05,
    )


def test_ensure_wait_exits_0_and_a_date_end_includes_that_day(db: Database, polygon: FakeServer) -> None:
    env = polygon_env(db, polygon)
    done = barfill(
        env, "ensure", "AAPL", "-t", "d1", "--start", "2024-12-30", "--end", "2024-12-31", "--wait"
    )
    assert done.returncode == 0, done.stderr
    assert_clean(done.stderr)
    assert "coverage complete" in done.stdout
    with Barfill(settings=settings_for(db, polygon)) as bf:
        d1 = bf.bars("AAPL", "d1")
        # Dec 31's session is in: its d1 bar is labelled 00:00 New York of Dec 31.
        assert list(d1.index) == [ts_ny("2024-12-30T00:00"), ts_ny("2024-12-31T00:00")]
        report = bf.ensure("AAPL", "h1", start="2024-12-30", end="2024-12-31")  # the Python path
        assert bf.wait(report.job, poll_s=0.05, timeout_s=WAIT_S).failed_slices == 0
        h1 = bf.bars("AAPL", "h1", start="2024-12-31", end="2024-12-31")  # reads: the same rule
    truth = Truth(CAL).bars("AAPL", Timeframe.h1, ny(2024, 12, 31), ny(2025, 1, 1))
    assert list(h1.index) == [pd.Timestamp(int(t), unit="s", tz="UTC") for t in truth.ts]
    assert h1.index[-1] == ts_ny("2024-12-31T15:00") and len(h1) >= 6


def test_worker_drain_exits_0_after_http_requests(db: Database, polygon: FakeServer) -> None:
    with Barfill(settings=settings_for(db, polygon)) as bf:
        bf.ensure(["AAPL", "MSFT"], "d1", start="2024-01-02", end="2024-06-28")
    done = barfill(polygon_env(db, polygon), "worker", "--drain")
    assert done.returncode == 0, done.stderr
    assert_clean(done.stderr)
    assert len(polygon.seen) >= 2
    counts = queue_counts(db)
    assert counts["succeeded"] == 2 and sum(counts.values()) == 2


def test_worker_exits_0_on_sigterm_after_http_requests(db: Database, polygon: FakeServer) -> None:
    env = polygon_env(db, polygon)
    with Barfill(settings=settings_for(db, polygon)) as bf:
        bf.ensure("AAPL", "d1", start="2024-01-02", end="2024-06-28")
    worker = subprocess.Popen(
        [str(BIN / "barfill"), "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while queue_counts(db).get("succeeded", 0) < 1 and worker.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        counts = queue_counts(db)
        assert counts["succeeded"] == 1 and sum(counts.values()) == 1  # it made its request; now idle
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=WAIT_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, stderr
    assert_clean(stderr)
    assert "stopped" in stderr and len(polygon.seen) >= 1


def test_wait_twice_on_one_handle_fetches_both_times(db: Database, polygon: FakeServer) -> None:
    with Barfill(settings=settings_for(db, polygon)) as bf:
        first = bf.ensure("AAPL", "d1", start="2024-01-02", end="2024-03-28")
        p1 = bf.wait(first.job, poll_s=0.05, timeout_s=WAIT_S)
        asked = len(polygon.seen)
        second = bf.ensure("MSFT", "d1", start="2024-01-02", end="2024-03-28")
        p2 = bf.wait(second.job, poll_s=0.05, timeout_s=WAIT_S)
        assert (p1.done, p1.failed_slices, p2.done, p2.failed_slices) == (True, 0, True, 0)
        assert asked >= 1 and len(polygon.seen) > asked  # the second wait went to the server too
        assert len(bf.bars("MSFT", "d1")) == len(bf.bars("AAPL", "d1")) > 0
        third = bf.ensure("MSFT", "d1", start="2024-04-01", end="2024-04-30")
        assert bf.work().succeeded == 1  # and so does a drained worker on the same handle
        assert third.results[0].slices_queued == 1
