"""The original backend's routes (``/functions/v1/...``) decode into its client's models, on both databases.

Through FastAPI's TestClient over a real database, and once through a real
uvicorn server on 127.0.0.1. Hydration runs the real planner, queue and a
worker against the deterministic synthetic provider; chart answers are
compared bar for bar with what the store holds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from barfill.bootstrap import App
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.app import create_app
from barfill.service.admin import set_enabled
from barfill.service.worker import Worker
from barfill.store.api_keys import create_key
from barfill.store.bar_reads import read_bars
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.schema import job_definitions
from barfill.store.symbols import symbol_id
from tests.e2e import swift_models as m
from tests.e2e.helpers import make_app
from tests.e2e.http_server import LiveServer

CAL = get_calendar("XNYS")
BASE = "/functions/v1"
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "authorization, x-client-info, apikey, content-type",
}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
CLIENT_HEADERS = {
    "Authorization": "Bearer anon-key",
    "apikey": "anon-key",
    "Content-Type": "application/json",
}


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _decodes(body: Any, model: Any) -> None:
    problems = m.decode(body, model)
    assert problems == [], problems


def _cors(response: Any) -> None:
    for key, value in CORS.items():
        assert response.headers.get(key) == value, (key, dict(response.headers))


@contextmanager
def _client(db: Database, **settings: object) -> Iterator[tuple[App, TestClient, SyntheticProvider]]:
    synthetic = SyntheticProvider(calendar=CAL, failure_rate=float(settings.pop("failure_rate", 0.0)))  # type: ignore[arg-type]
    app = make_app(db, {"synthetic": synthetic}, **settings)
    try:
        with TestClient(create_app(app), headers=CLIENT_HEADERS) as client:
            yield app, client, synthetic
    finally:
        app.close()


def _drain(app: App) -> None:
    asyncio.run(Worker(app, concurrency=2, poll_s=0.02).run(drain=True))


def _stored(db: Database, ticker: str, tf: Timeframe, layers=(Layer.historical, Layer.intraday)) -> BarBatch:
    with db.read() as conn:
        sid = symbol_id(conn, ticker)
        assert sid is not None
        return read_bars(conn, sid, tf, 0, 2**62, layers=layers)


def _same_bars(served: list[dict[str, Any]], stored: BarBatch) -> None:
    """Served bars equal the stored ones, bar for bar, in ascending order."""
    assert [b["ts"] for b in served] == [_iso(int(t)) for t in stored.ts]
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal([b[col] for b in served], getattr(stored, col), err_msg=col)


def _ensure(client: TestClient, symbol: str, timeframe: str, window_days: int) -> dict[str, Any]:
    r = client.post(
        f"{BASE}/ensure-coverage",
        json={"symbol": symbol, "timeframe": timeframe, "window_days": window_days, "priority": 150},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    _decodes(body, m.ENSURE_COVERAGE_RESPONSE)
    assert set(body) <= m.SERVER_KEYS_ENSURE and set(body["coverage_status"]) == m.SERVER_KEYS_COVERAGE_STATUS
    _cors(r)
    return body


def _check_v2(body: dict[str, Any]) -> None:
    """A chart-data-v2 answer: decodes into ChartDataV2Response and has exactly the v6 keys."""
    _decodes(body, m.CHART_DATA_V2_RESPONSE)
    assert set(body) == m.SERVER_KEYS_V6
    assert set(body["metadata"]) == m.SERVER_KEYS_V6_METADATA
    assert set(body["dataQuality"]) == m.SERVER_KEYS_DATA_QUALITY
    assert set(body["layers"]) == {"historical", "intraday", "forecast"}
    for layer in body["layers"].values():
        assert set(layer) == m.SERVER_KEYS_LAYER
        assert layer["count"] == len(layer["data"])
        assert all(set(b) == m.SERVER_KEYS_V6_BAR for b in layer["data"])
    assert body["mlSummary"] is None and body["indicators"] is None
    assert body["superTrendAI"] is None and body["futures"] is None


def test_ensure_coverage_worker_then_chart_data_v2_shows_the_stored_bars(db: Database) -> None:
    with _client(db) as (app, client, synthetic):
        first = _ensure(client, "aapl", "h1", 10)
        assert first["symbol"] == "AAPL" and first["timeframe"] == "h1"
        assert first["status"] == "gaps_detected" and first["coverage_status"]["gaps_found"] >= 1
        with db.read() as conn:
            (def_id,) = conn.execute(job_definitions.select().with_only_columns(job_definitions.c.id)).one()
        # The original's ids were UUIDs: a UUID-shaped string ending in barfill's id, in decimal.
        assert first["job_def_id"] == f"00000000-0000-4000-8000-{def_id:012d}"
        progress = first["backfill_progress"]
        assert progress["total_slices"] == progress["queued_slices"] > 0
        assert progress["completed_slices"] == progress["bars_written"] == progress["progress_percent"] == 0

        _drain(app)

        done = _ensure(client, "AAPL", "h1", 10)
        stored = _stored(db, "AAPL", Timeframe.h1)
        assert done["job_def_id"] == first["job_def_id"]
        assert done["status"] == "coverage_complete" and done["coverage_status"]["gaps_found"] == 0
        p = done["backfill_progress"]
        assert p["completed_slices"] == p["total_slices"] > 0 and p["progress_percent"] == 100
        assert p["queued_slices"] == p["running_slices"] == p["failed_slices"] == 0
        assert p["bars_written"] == len(stored) > 0
        assert done["coverage_status"]["last_success_at"] is not None

        r = client.post(f"{BASE}/chart-data-v2?t=1767225600", json={"symbol": "AAPL", "timeframe": "h1"})
        assert r.status_code == 200, r.text
        _cors(r)
        body = r.json()
        _check_v2(body)
        layers = body["layers"]
        served = layers["historical"]["data"] + layers["intraday"]["data"]
        _same_bars(served, stored)
        truth = synthetic.truth("AAPL", Timeframe.h1, int(stored.ts[0]), int(stored.ts[-1]) + 1)
        np.testing.assert_array_equal([b["close"] for b in served], truth.close)
        assert body["metadata"]["total_bars"] == len(stored) == body["dataQuality"]["barCount"]
        assert body["metadata"]["requested_days"] == 60 and body["metadata"]["forecast_days"] == 10
        assert (
            body["symbol"] == "AAPL"
            and body["asset_type"] == "stock"
            and UUID_RE.fullmatch(body["symbol_id"])
        )
        assert (
            layers["historical"]["provider"] == "synthetic"
            and layers["forecast"]["provider"] == "ml_forecast"
        )
        assert layers["forecast"]["count"] == 0
        assert layers["historical"]["newestBar"] == layers["historical"]["data"][-1]["ts"]
        # Bars of the current session are "provisional" until 20:00 New York, older ones "verified".
        statuses = [b["data_status"] for b in served]
        assert set(statuses) <= {"verified", "provisional"} and statuses[0] == "verified"
        assert statuses == sorted(statuses, key=lambda x: x == "provisional")  # provisional only at the end
        assert not any(b["is_forecast"] for b in served)
        depth = (int(stored.ts[-1]) - int(stored.ts[0])) // 86_400
        assert body["dataQuality"]["historicalDepthDays"] == depth

        # "Complete" means the whole requested window: a longer one has gaps again, though today is covered.
        longer = _ensure(client, "AAPL", "h1", 30)
        assert longer["status"] == "gaps_detected" and longer["coverage_status"]["gaps_found"] >= 1
        assert longer["coverage_status"]["to_ts"] == done["coverage_status"]["to_ts"]
        assert longer["backfill_progress"]["queued_slices"] > 0


def test_a_known_symbol_without_bars_answers_empty_layers(db: Database) -> None:
    with _client(db) as (_, client, _synthetic):
        _ensure(client, "TSLA", "h1", 5)  # known now; nothing fetched yet
        body = client.post(f"{BASE}/chart-data-v2", json={"symbol": "TSLA", "timeframe": "h1"}).json()
        _check_v2(body)
        assert body["metadata"]["total_bars"] == 0 and body["dataQuality"]["isStale"] is True
        for name in ("historical", "intraday"):
            assert body["layers"][name] == {
                "count": 0,
                "provider": "none",
                "data": [],
                "oldestBar": None,
                "newestBar": None,
            }
        read = client.get(f"{BASE}/chart-read", params={"symbol": "TSLA", "timeframe": "1h"}).json()
        _decodes(read, m.CHART_RESPONSE)
        assert read["bars"] == [] and read["dataQuality"]["barCount"] == 0


def test_a_stale_chart_queues_its_refresh_and_fills_in(db: Database) -> None:
    with _client(db) as (app, client, _synthetic):
        _ensure(client, "TSLA", "h1", 5)  # TSLA is known; it has no d1 definition
        empty = client.post(f"{BASE}/chart-data-v2", json={"symbol": "TSLA", "timeframe": "d1"}).json()
        assert empty["layers"]["historical"]["count"] == 0
        with db.read() as conn:
            d1 = conn.execute(job_definitions.select().where(job_definitions.c.timeframe == "d1")).one()
        assert (d1.window_days, d1.priority) == (730, 200)
        assert app.queue.progress([d1.id])[d1.id].queued > 0
        _drain(app)
        body = client.post(f"{BASE}/chart-data-v2", json={"symbol": "TSLA", "timeframe": "d1"}).json()
        _check_v2(body)
        daily = _stored(db, "TSLA", Timeframe.d1)
        assert len(daily) > 400  # about two years of sessions
        _same_bars(body["layers"]["historical"]["data"], daily)

        # Reading never re-enables what an operator disabled.
        assert set_enabled(app, [d1.id], False) == 1
        read = client.post(f"{BASE}/chart-read", json={"symbol": "TSLA", "timeframe": "d1"}).json()
        assert read["refresh"]["diagnostics"]["d1"] == {"skipped": "definition disabled"}
        assert "d1" not in read["refresh"]["enqueuedTimeframes"]
        with db.read() as conn:
            enabled = conn.execute(
                job_definitions.select()
                .with_only_columns(job_definitions.c.enabled)
                .where(job_definitions.c.id == d1.id)
            ).scalar_one()
        assert enabled is False


def test_chart_data_v2_serves_the_newest_950_bars_ascending(db: Database) -> None:
    with _client(db) as (app, client, _):
        assert _ensure(client, "MSFT", "15m", 60)["timeframe"] == "m15"
        _drain(app)
        stored = _stored(db, "MSFT", Timeframe.m15)
        assert len(stored) > 950
        body = client.post(
            f"{BASE}/chart-data-v2", json={"symbol": "MSFT", "timeframe": "m15", "days": 5}
        ).json()
        _check_v2(body)
        served = body["layers"]["historical"]["data"] + body["layers"]["intraday"]["data"]
        assert len(served) == body["metadata"]["total_bars"] == 950
        _same_bars(served, stored.take(np.arange(len(stored) - 950, len(stored))))
        assert body["metadata"]["requested_days"] == 5


def test_both_timeframe_spellings_answer_canonically(db: Database) -> None:
    with _client(db) as (app, client, _):
        canonical = _ensure(client, "AAPL", "h4", 20)
        for alias in ("4h", "4H", " h4 "):
            again = _ensure(client, "AAPL", alias, 20)
            assert again["timeframe"] == "h4" and again["job_def_id"] == canonical["job_def_id"]
        _drain(app)
        answers = [
            client.post(f"{BASE}/chart-data-v2", json={"symbol": "AAPL", "timeframe": tf}).json()
            for tf in ("h4", "4h")
        ]
        for body in answers:
            _check_v2(body)
            assert body["timeframe"] == "h4"
        assert answers[0]["layers"] == answers[1]["layers"]
        assert answers[0]["layers"]["historical"]["count"] > 0
        # The client's own alias initialiser: "hour", "daily", "weekly", "15min".
        for alias, tf in (("hour", "h1"), ("daily", "d1"), ("weekly", "w1"), ("15min", "m15")):
            assert _ensure(client, "AAPL", alias, 5)["timeframe"] == tf


def test_d1_chart_puts_the_latest_24_h1_bars_in_intraday(db: Database) -> None:
    with _client(db) as (app, client, _):
        _ensure(client, "AAPL", "d1", 40)
        _ensure(client, "AAPL", "h1", 10)
        _drain(app)
        body = client.post(f"{BASE}/chart-data-v2", json={"symbol": "AAPL", "timeframe": "d1"}).json()
        _check_v2(body)
        daily, hourly = _stored(db, "AAPL", Timeframe.d1), _stored(db, "AAPL", Timeframe.h1)
        _same_bars(body["layers"]["historical"]["data"], daily)
        _same_bars(body["layers"]["intraday"]["data"], hourly.take(np.arange(len(hourly) - 24, len(hourly))))
        assert body["layers"]["intraday"]["count"] == 24
        assert body["metadata"]["total_bars"] == len(daily)


def test_stored_forecast_bars_fill_the_forecast_layer(db: Database) -> None:
    with _client(db) as (app, client, _):
        _ensure(client, "AAPL", "d1", 10)
        _drain(app)
        now = int(db.now())
        ahead = now - now % 86_400 + 86_400
        ts = np.array([ahead + i * 86_400 for i in range(25)], dtype=np.int64)
        close = np.linspace(100.0, 124.0, 25)
        batch = BarBatch(
            "AAPL", Timeframe.d1, "ml_model", ts, close, close + 1, close - 1, close, np.zeros(25)
        )
        with db.write() as conn:
            sid = symbol_id(conn, "AAPL")
            assert sid is not None
            upsert_bars(conn, sid, batch, layer=Layer.forecast, fetched_at=float(now))
        body = client.post(f"{BASE}/chart-data-v2", json={"symbol": "AAPL", "timeframe": "d1"}).json()
        _check_v2(body)
        forecast = body["layers"]["forecast"]
        assert forecast["count"] == 20 and forecast["provider"] == "ml_forecast"
        assert [b["ts"] for b in forecast["data"]] == [_iso(int(t)) for t in ts[:20]]
        assert [b["close"] for b in forecast["data"]] == close[:20].tolist()
        assert all(b["is_forecast"] and b["data_status"] == "forecast" for b in forecast["data"])
        # Forecast bars are never chart history; includeForecast=false leaves the layer empty.
        assert body["metadata"]["total_bars"] == len(_stored(db, "AAPL", Timeframe.d1))
        off = client.post(
            f"{BASE}/chart-data-v2", json={"symbol": "AAPL", "timeframe": "d1", "includeForecast": False}
        ).json()
        assert off["layers"]["forecast"]["count"] == 0


def test_chart_read_pages_and_refreshes_with_the_planner(db: Database) -> None:
    with _client(db) as (app, client, _):
        _ensure(client, "AAPL", "h1", 30)
        _drain(app)
        stored = _stored(db, "AAPL", Timeframe.h1)
        r = client.post(
            f"{BASE}/chart-read?t=1&symbol=AAPL&timeframe=h1",
            json={"symbol": "AAPL", "timeframe": "1h", "includeMLData": True},
        )
        assert r.status_code == 200, r.text
        _cors(r)
        body = r.json()
        _decodes(body, m.CHART_RESPONSE)
        assert set(body) == m.SERVER_KEYS_READ and set(body["metadata"]) == m.SERVER_KEYS_READ_METADATA
        assert all(set(b) == m.SERVER_KEYS_READ_BAR for b in body["bars"])
        assert body["assetType"] == "stock" and body["timeframe"] == "h1"
        cutoff = int(db.now()) - 60 * 86_400
        _same_bars(body["bars"], stored.take(stored.ts >= cutoff))
        assert body["metadata"] == {"total_bars": len(body["bars"]), "requested_days": 60, "max_bars": 950}
        # Refresh on read: every chart timeframe gets a definition and its gaps queued.
        refresh = body["refresh"]
        assert set(refresh) == m.SERVER_KEYS_REFRESH and refresh["attempted"] is True
        assert refresh["error"] is None and refresh["symbol"] == "AAPL" and refresh["timeframe"] == "h1"
        assert set(refresh["enqueuedTimeframes"]) == {"m15", "h4", "d1", "w1"}
        assert refresh["insertedSlices"] > 0
        with db.read() as conn:
            defs = {row.timeframe: row for row in conn.execute(job_definitions.select()).all()}
        assert set(defs) == {"m15", "h1", "h4", "d1", "w1"}
        # The existing h1 definition kept its own window and priority.
        assert defs["h1"].window_days == 30 and defs["h1"].priority == 150
        assert defs["d1"].window_days == 730 and defs["m15"].window_days == 7 and defs["d1"].priority == 200

        # Paging: at most pageSize bars older than `before`, ascending; no refresh, no metadata.
        before = int(stored.ts[-40])
        pages = [
            client.post(
                f"{BASE}/chart-read",
                json={
                    "symbol": "AAPL",
                    "timeframe": "h1",
                    "includeMLData": False,
                    "before": b,
                    "pageSize": 7,
                },
            ).json()
            for b in (before, _iso(before))
        ]
        pages.append(
            client.get(
                f"{BASE}/chart-read",
                params={"symbol": "AAPL", "timeframe": "h1", "before": before, "pageSize": 7},
            ).json()
        )
        older = stored.take(stored.ts < before)
        for page in pages:
            _decodes(page, m.CHART_RESPONSE)
            assert set(page) == m.SERVER_KEYS_READ_PAGE
            assert page["refresh"] is None and page["dataQuality"] is None and page["mlSummary"] is None
            _same_bars(page["bars"], older.take(np.arange(len(older) - 7, len(older))))
        # Walking back page by page reaches the first stored bar and then an empty page.
        seen: list[str] = []
        cursor = int(stored.ts[-1]) + 1
        while True:
            page = client.post(
                f"{BASE}/chart-read",
                json={"symbol": "AAPL", "timeframe": "h1", "before": cursor, "pageSize": 950},
            ).json()
            if not page["bars"]:
                break
            seen = [b["ts"] for b in page["bars"]] + seen
            cursor = int(datetime.fromisoformat(page["bars"][0]["ts"]).timestamp())
        assert seen == [_iso(int(t)) for t in stored.ts]


def test_chart_answers_both_client_models(db: Database) -> None:
    with _client(db) as (app, client, _):
        _ensure(client, "AAPL", "h1", 5)
        _drain(app)
        stored = _stored(db, "AAPL", Timeframe.h1)
        post = client.post(f"{BASE}/chart", json={"symbol": "AAPL", "timeframe": "h1", "days": 730})
        get = client.get(f"{BASE}/chart", params={"symbol": "AAPL", "timeframe": "1h"})
        for r in (post, get):
            assert r.status_code == 200, r.text
            body = r.json()
            _decodes(body, m.CHART_DATA_V2_RESPONSE)
            _decodes(body, m.CHART_RESPONSE)
            assert set(body) == m.SERVER_KEYS_V6 | {"assetType", "bars", "supertrend_ai", "refresh"}
            _same_bars(body["bars"], stored)
            _same_bars(body["layers"]["historical"]["data"] + body["layers"]["intraday"]["data"], stored)


BAD_REQUESTS = [
    ("chart-data-v2", {}, 400, "Symbol is required"),
    ("chart-data-v2", {"symbol": ""}, 400, "Symbol is required"),
    ("chart-data-v2", {"symbol": "ZZZZ"}, 404, "Symbol ZZZZ not found"),
    ("chart-data-v2", {"symbol": "AAPL", "timeframe": "2h"}, 400, "m15"),
    ("chart-data-v2", {"symbol": "AAPL", "timeframe": 7}, 400, "timeframe"),
    ("chart-data-v2", {"symbol": "AAPL", "days": "many"}, 400, "days"),
    ("chart-data-v2", {"symbol": "AAPL", "includeForecast": "maybe"}, 400, "includeForecast"),
    ("chart-data-v2", {"symbol": 42}, 400, "symbol"),
    ("chart-data-v2", {"symbol": "AA PL"}, 400, "symbol"),
    ("chart-data-v2", ["AAPL"], 400, "JSON object"),
    ("chart-data-v2", b"{not json", 400, "not valid JSON"),
    ("chart", {"timeframe": "h1"}, 400, "Symbol is required"),
    ("chart", {"symbol": "NOPE"}, 404, "Symbol NOPE not found"),
    ("chart-read", {"timeframe": "h1"}, 400, "Symbol is required"),
    ("chart-read", {"symbol": "AAPL", "timeframe": "3d"}, 400, "Invalid timeframe: 3d"),
    ("chart-read", {"symbol": "ZZZZ"}, 404, "Symbol ZZZZ not found"),
    ("chart-read", {"symbol": "AAPL", "before": "yesterday"}, 400, "before"),
    ("chart-read", {"symbol": "AAPL", "pageSize": [1]}, 400, "pageSize"),
    ("ensure-coverage", {"symbol": "AAPL"}, 400, "Missing required parameters: symbol, timeframe"),
    ("ensure-coverage", {"timeframe": "h1"}, 400, "Missing required parameters: symbol, timeframe"),
    ("ensure-coverage", {"symbol": "AAPL", "timeframe": "h1", "window_days": "x"}, 400, "window_days"),
    ("ensure-coverage", {"symbol": "AAPL", "timeframe": "h1", "window_days": 0}, 400, "window_days"),
    ("ensure-coverage", {"symbol": "AAPL", "timeframe": "h1", "window_days": 10**9}, 400, "window_days"),
    ("ensure-coverage", {"symbol": "AAPL", "timeframe": "h1", "priority": 5000}, 400, "priority"),
    ("ensure-coverage", {"symbol": "AAPL", "timeframe": "yearly"}, 400, "Invalid timeframe"),
    ("ensure-coverage", b"\xff\xfe", 400, "not valid JSON"),
    ("chart-read", b"[" * 100_000, 400, "not valid JSON"),
    ("chart-data-v2", b'{"symbol": "AAPL", "days": 1e999}', 400, "days"),
    ("orchestrator?action=explode", {}, 400, "Invalid action"),
    ("fetch-bars", {"job_run_id": "x"}, 404, "Function not found"),
]


@pytest.fixture(scope="module")
def known_aapl(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One SQLite store that knows AAPL (and not ZZZZ), shared by the bad-input cases: they change nothing."""
    path = tmp_path_factory.mktemp("compat") / "barfill.db"
    path.write_bytes(sqlite_template.read_bytes())
    db = Database(f"sqlite:///{path}")
    try:
        with _client(db) as (_, client, _synthetic):
            _ensure(client, "AAPL", "d1", 3)
            yield client
    finally:
        db.dispose()


@pytest.mark.parametrize(("function", "payload", "status", "message"), BAD_REQUESTS)
def test_bad_input_is_a_clear_4xx_with_the_original_error_shape(
    known_aapl: TestClient, function: str, payload: Any, status: int, message: str
) -> None:
    if isinstance(payload, bytes):
        r = known_aapl.post(f"{BASE}/{function}", content=payload)
    else:
        r = known_aapl.post(f"{BASE}/{function}", json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["error"], str) and message in body["error"], body
    _cors(r)


def test_errors_on_postgresql_too(postgres_db: Database) -> None:
    with _client(postgres_db) as (_, client, _synthetic):
        r = client.post(f"{BASE}/chart-data-v2", json={"symbol": "ZZZZ", "timeframe": "h1"})
        assert (r.status_code, r.json()) == (404, {"error": "Symbol ZZZZ not found"})
        r = client.post(f"{BASE}/chart-data-v2", json={})
        assert (r.status_code, r.json()) == (400, {"error": "Symbol is required"})
        # A GET carries no body: chart-data-v2 answered 500 there; barfill says what is missing.
        r = client.get(f"{BASE}/chart-data-v2?symbol=AAPL")
        assert (r.status_code, r.json()) == (400, {"error": "Symbol is required"})


def test_options_answers_ok_with_cors_headers(sqlite_db: Database) -> None:
    with _client(sqlite_db) as (_, client, _synthetic):
        for function in ("chart-data-v2", "chart", "chart-read", "ensure-coverage", "orchestrator"):
            r = client.options(f"{BASE}/{function}")
            assert (r.status_code, r.text) == (200, "ok")
            _cors(r)
            preflight = client.options(
                f"{BASE}/{function}",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, apikey, content-type",
                },
            )
            assert preflight.status_code == 200
            _cors(preflight)


def test_configured_origins_admit_the_original_clients_headers(sqlite_db: Database) -> None:
    """With CORS origins configured, a browser preflight carrying the client's apikey header passes."""
    with _client(sqlite_db, api_cors_origins=("https://app.example",)) as (_, client, _synthetic):
        preflight = client.options(
            f"{BASE}/chart-data-v2",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, x-client-info, apikey, content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        refused = client.options(
            f"{BASE}/chart-data-v2",
            headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400


def test_orchestrator_tick_status_and_retry_failed(db: Database) -> None:
    with _client(db, failure_rate=1.0, max_attempts=1) as (app, client, _):
        r = client.post(f"{BASE}/orchestrator?action=tick", json={})
        assert r.status_code == 200
        assert r.json() == {
            "message": "No jobs to process",
            "results": {"scanned": 0, "slices_created": 0, "jobs_dispatched": 0, "errors": []},
        }
        queued = _ensure(client, "AAPL", "h1", 20)["backfill_progress"]["queued_slices"]
        _ensure(client, "MSFT", "h1", 20)
        status = client.get(f"{BASE}/orchestrator?action=status").json()
        _decodes(status, m.ORCHESTRATOR_STATUS)
        assert status["queued"] == min(2 * queued, 10) == len(status["queued_jobs"])
        assert status["running"] == 0 and status["recent_jobs"] == []
        row = status["queued_jobs"][0]
        assert set(row) == m.SERVER_KEYS_JOB_RUN
        assert UUID_RE.fullmatch(row["id"]) and UUID_RE.fullmatch(row["job_def_id"])
        assert row["status"] == "queued" and row["job_type"] == "fetch_intraday" and row["symbol"] == "AAPL"

        _drain(app)  # every fetch fails; one attempt each
        failed = app.queue.counts()["failed"]
        assert failed == 2 * queued
        recent = client.get(f"{BASE}/orchestrator?action=status").json()
        _decodes(recent, m.ORCHESTRATOR_STATUS)
        assert len(recent["recent_jobs"]) == min(failed, 20)
        assert {j["status"] for j in recent["recent_jobs"]} == {"failed"}
        assert all(j["error_code"] for j in recent["recent_jobs"])

        r = client.post(f"{BASE}/orchestrator?action=retry_failed", json={})
        assert r.json() == {"message": f"Retried {min(failed, 10)} failed jobs"}
        assert app.queue.counts()["queued"] == min(failed, 10)

        ticked = client.post(f"{BASE}/orchestrator", json={}).json()  # action defaults to tick
        _decodes(ticked["results"], m.TICK_RESULTS)
        took = ticked["duration"]  # the contract's field (milliseconds, an int), not a timing of ours
        assert ticked["message"] == "Tick complete" and isinstance(took, int)
        assert ticked["results"]["scanned"] == 2 and ticked["results"]["errors"] == []


def test_through_a_real_uvicorn_server(db: Database) -> None:
    synthetic = SyntheticProvider(calendar=CAL)
    app = make_app(db, {"synthetic": synthetic})
    try:
        with LiveServer(app) as live, httpx.Client(base_url=live.url + BASE, headers=CLIENT_HEADERS) as http:
            # d1: its only bar boundary is the close, so a bar cannot complete between the two ensures.
            ensure = {"symbol": "NVDA", "timeframe": "1d", "window_days": 30}
            first = http.post("/ensure-coverage", json=ensure)
            assert first.status_code == 200
            _decodes(first.json(), m.ENSURE_COVERAGE_RESPONSE)
            assert first.json()["status"] == "gaps_detected"
            ticked = http.post("/orchestrator?action=tick", json={})  # what pg_cron did every minute
            assert ticked.status_code == 200 and ticked.json()["results"]["scanned"] == 1
            _drain(app)
            done = http.post("/ensure-coverage", json=ensure).json()
            assert (
                done["status"] == "coverage_complete" and done["backfill_progress"]["progress_percent"] == 100
            )
            r = http.post("/chart-data-v2?t=1", json={"symbol": "NVDA", "timeframe": "d1", "days": 30})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            _cors(r)
            body = r.json()
            _check_v2(body)
            served = body["layers"]["historical"]["data"] + body["layers"]["intraday"]["data"]
            _same_bars(served, _stored(db, "NVDA", Timeframe.d1))
            assert len(served) > 0
            options = http.options("/chart-data-v2")
            assert (options.status_code, options.text) == (200, "ok")
            _cors(options)
            missing = http.post("/chart-data-v2", json={"symbol": "QQQQ"})
            assert (missing.status_code, missing.json()) == (404, {"error": "Symbol QQQQ not found"})
    finally:
        app.close()


# (function, body, scope it needs); the status of each call decides nothing else here.
SCOPED = [
    ("chart-data-v2", {"symbol": "AAPL", "timeframe": "d1"}, "read"),
    ("chart", {"symbol": "AAPL", "timeframe": "d1"}, "read"),
    ("chart-read", {"symbol": "AAPL", "timeframe": "d1", "before": 1_767_225_600}, "read"),
    ("orchestrator?action=status", {}, "read"),
    ("ensure-coverage", {"symbol": "AAPL", "timeframe": "d1", "window_days": 3}, "write"),
    ("orchestrator?action=retry_failed", {}, "write"),
    ("orchestrator?action=tick", {}, "admin"),
    ("orchestrator", {}, "admin"),
]
RANK = {"read": 0, "write": 1, "admin": 2}


def test_api_keys_once_configured_the_bearer_must_hold_the_scope(db: Database) -> None:
    with db.write() as conn:
        keys = {scope: create_key(conn, f"k-{scope}", [scope])[1] for scope in RANK}
    with _client(db) as (_, client, _synthetic):
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        r = client.post(f"{BASE}/ensure-coverage", json={"symbol": "AAPL", "timeframe": "d1"}, headers=admin)
        assert r.status_code == 200, r.text
        for function, body, needed in SCOPED:
            # No bearer (an empty header is none), or the anon key the client was built with.
            for headers in ({"Authorization": ""}, {}):
                r = client.post(f"{BASE}/{function}", json=body, headers=headers)
                assert r.status_code == 401, (function, headers, r.text)
                assert isinstance(r.json()["error"], str)
                _cors(r)
            for scope, key in keys.items():
                r = client.post(f"{BASE}/{function}", json=body, headers={"Authorization": f"Bearer {key}"})
                if RANK[scope] >= RANK[needed]:
                    assert r.status_code == 200, (function, scope, r.text)
                else:
                    assert r.status_code == 403, (function, scope, r.text)
                    assert needed in r.json()["error"]
                _cors(r)
        # A preflight carries no credentials: it is answered without a key.
        r = client.options(f"{BASE}/chart-data-v2", headers={"Authorization": ""})
        assert (r.status_code, r.text) == (200, "ok")


def test_openapi_lists_the_functions_the_client_calls(sqlite_db: Database) -> None:
    app = make_app(sqlite_db, {"synthetic": SyntheticProvider(calendar=CAL)})
    try:
        paths = create_app(app).openapi()["paths"]  # warnings are errors: no duplicate operation ids
    finally:
        app.close()
    compat = {p: sorted(ops) for p, ops in paths.items() if p.startswith(BASE)}
    assert compat == {
        f"{BASE}/ensure-coverage": ["post"],
        f"{BASE}/chart-data-v2": ["post"],
        f"{BASE}/chart": ["get", "post"],
        f"{BASE}/chart-read": ["get", "post"],
        f"{BASE}/orchestrator": ["get", "post"],
    }
    # Every status these routes answer is documented (schemathesis checks conformance over /openapi.json).
    documented = set(paths[f"{BASE}/chart-data-v2"]["post"]["responses"])
    assert documented == {"200", "400", "401", "403", "404", "413", "429", "503"}


def test_an_unreachable_database_is_a_503_that_names_no_secret() -> None:
    from barfill.bootstrap import build
    from barfill.config import load_settings

    settings = load_settings(database_url="postgresql://postgres:hunter2@127.0.0.1:1/nowhere")
    app = build(settings, providers={"synthetic": SyntheticProvider(calendar=CAL)})
    try:
        client = TestClient(create_app(app), headers=CLIENT_HEADERS)  # no lifespan: nothing connects early
        for function, body in (
            ("chart-data-v2", {"symbol": "AAPL"}),
            ("ensure-coverage", {"symbol": "A", "timeframe": "h1"}),
        ):
            r = client.post(f"{BASE}/{function}", json=body)
            assert r.status_code == 503, r.text
            assert r.json() == {"error": "service unavailable, try again"}
            assert "hunter2" not in r.text
            _cors(r)
    finally:
        app.close()
