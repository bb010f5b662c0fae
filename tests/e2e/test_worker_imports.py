"""A worker process hydrating from Polygon never imports pandas, pyarrow or exchange_calendars
(nor psycopg, on SQLite).

Those libraries cost a process ~110 MB resident: the worker's calendar comes
from a schedule file (:mod:`barfill.domain.schedules`), built by a helper
process when missing, and its pages are parsed into numpy columns. The memory
figure itself is in ``bench/ingest.py``; this checks the behaviour behind it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from barfill.bootstrap import build
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.service.ensure import ensure
from barfill.store.bars import count_bars
from barfill.store.db import Database
from tests.e2e.helpers import clean_env, queue_counts, ts
from tests.e2e.test_startup import PROBE
from tests.integration.providers.servers import FakeServer, PolygonWire, Truth

KEY = "worker-imports-key"
START, END = ts("2024-03-04"), ts("2024-03-16")  # two weeks, across the spring DST change
HEAVY = ("pandas", "pyarrow", "exchange_calendars", "polars")


def test_a_hydrating_worker_loads_neither_pandas_nor_the_calendar_library(
    db: Database, tmp_path: Path
) -> None:
    truth = Truth(get_calendar("XNYS"))
    wire = PolygonWire(truth, KEY)
    wire.page_size = 2_000  # several pages per slice: next_url is followed too
    with FakeServer(wire, keep_alive=True) as server:
        env = {
            "BARFILL_POLYGON_API_KEY": KEY,
            "BARFILL_POLYGON_BASE_URL": server.url,
            "BARFILL_POLYGON_RATE_LIMIT": "1000/1",
            "BARFILL_HISTORICAL_PROVIDERS": '["polygon"]',
        }
        settings = load_settings(
            database_url=db.url,
            polygon_api_key=KEY,
            polygon_base_url=server.url,
            historical_providers=["polygon"],
        )
        app = build(settings, providers=None)
        try:
            ensure(app, ["AAPL", "MSFT"], "m1", start=START, end=END)
        finally:
            app.close()
        # An empty calendar cache: the worker must have its schedule built elsewhere.
        done = subprocess.run(
            [sys.executable, "-c", PROBE, "worker", "--drain"],
            env=clean_env(db.url, XDG_CACHE_HOME=str(tmp_path / "cache"), **env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.rpartition("\nPROBE ")[2])
    assert answer["code"] == 0
    assert queue_counts(db).get("succeeded", 0) >= 2
    with db.read() as conn:
        served = sum(len(truth.bars(s, Timeframe.m1, START, END)) for s in ("AAPL", "MSFT"))
        assert count_bars(conn, timeframe=Timeframe.m1) == served > 7_000
        assert count_bars(conn, timeframe=Timeframe.m5) > 1_000  # derived in the worker
    assert {"numpy", "sqlalchemy", "httpx"} <= set(answer["loaded"])
    assert set(answer["loaded"]).isdisjoint(HEAVY)
    assert ("psycopg" in answer["loaded"]) == db.is_postgres  # a SQLite worker needs no PostgreSQL driver
    assert list((tmp_path / "cache" / "barfill" / "calendars").glob("XNYS-*.npz"))


def test_the_allocator_settings_apply_in_a_fresh_process() -> None:
    code = "from barfill.malloc import tune_for_large_pages; print(tune_for_large_pages())"
    env = {k: v for k, v in clean_env("sqlite://").items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")
