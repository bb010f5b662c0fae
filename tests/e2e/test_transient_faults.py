"""One unparsable answer must not fail a slice for good: transient-looking faults are retried.

Under a mix of faults on a local Polygon-wire server (a truncated 200, a 5xx,
a ``"NaN"`` field, a bar with high below low, a non-numeric volume) every
slice ends ``succeeded`` after retries, none ``failed``, and the store equals
the server's truth bar for bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from barfill import Barfill
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.http import session_bars
from barfill.store.db import Database
from barfill.store.schema import job_runs
from tests.e2e.helpers import queue_counts
from tests.integration.providers.servers import FakeServer, Fault, PolygonWire, Truth, ny

KEY = "pk-test-0123456789"
CAL = get_calendar("XNYS")
SYMBOLS = ["AAPL", "MSFT", "NVDA"]
START, END = "2023-01-03", "2023-12-29"
pytestmark = pytest.mark.timeout(300)


def nan_field(body: Any) -> None:
    body["results"][3]["o"] = "NaN"


def high_below_low(body: Any) -> None:  # every bar: some are in the session, so validation sees one
    for bar in body["results"]:
        bar["h"] = bar["l"] - 1


def text_volume(body: Any) -> None:
    body["results"][-1]["v"] = "12k"


FAULTS = [
    Fault("truncate", after=1),
    Fault("mangle", edit=nan_field, after=1),
    Fault("status", 503, {"status": "ERROR", "error": "upstream"}, after=1),
    Fault("mangle", edit=high_below_low, after=1),
    Fault("truncate", after=1),
    Fault("mangle", edit=text_volume, after=1),
    Fault("mangle", edit=nan_field, after=1),
    Fault("raw", 200, b'{"status": "OK", "results": [{"t": 1', after=1),
]


@pytest.fixture
def polygon() -> Iterator[FakeServer]:
    with FakeServer(PolygonWire(Truth(CAL), KEY), keep_alive=True) as server:
        for fault in FAULTS:
            server.inject(fault)
        yield server
    assert server.errors == []


def test_a_fault_mix_is_retried_until_every_slice_succeeds(db: Database, polygon: FakeServer) -> None:
    settings = load_settings(
        database_url=db.url,
        polygon_api_key=KEY,
        polygon_base_url=polygon.url,
        polygon_rate_limit="1000/1",
        worker_poll_s=0.02,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        max_attempts=len(FAULTS) + 1,  # even if every fault hit one slice, it would get through
    )
    with Barfill(settings=settings) as bf:
        report = bf.ensure(SYMBOLS, "h1", start=START, end=END)
        planned = sum(r.slices_queued for r in report.results)
        progress = bf.wait(report.job, poll_s=0.02, timeout_s=120)
        frames = {s: bf.bars(s, "h1") for s in SYMBOLS}
    assert planned >= 6 and progress.done
    counts = queue_counts(db)
    assert counts["succeeded"] == planned and sum(counts.values()) == planned  # none failed
    with db.read() as conn:
        attempts = conn.execute(sa.select(sa.func.sum(job_runs.c.attempts))).scalar_one()
    assert polygon.pending_faults() == 0
    assert attempts == planned + len(FAULTS)  # every fault cost exactly one retry, nothing more
    truth = Truth(CAL)
    for symbol, frame in frames.items():
        expected = session_bars(
            truth.bars(symbol, Timeframe.h1, ny(2023, 1, 3), ny(2023, 12, 30), extended=True),
            CAL,
            extended=False,
        )
        assert [int(t.timestamp()) for t in frame.index] == expected.ts.tolist(), symbol
        for column, values in (
            ("open", expected.open),
            ("high", expected.high),
            ("low", expected.low),
            ("close", expected.close),
            ("volume", expected.volume),
        ):
            assert np.array_equal(frame[column].to_numpy(), values), (symbol, column)
