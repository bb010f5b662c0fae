"""The HTTP API on a real uvicorn server, SQLite and PostgreSQL: ensure → SSE → bars, resume, formats."""

from __future__ import annotations

import io

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.app import ServerOptions
from barfill.store.db import Database
from tests.e2e.helpers import make_app
from tests.e2e.http_server import LiveServer, sse_events


@pytest.fixture
def app(db: Database):
    a = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())}, worker_poll_s=0.1)
    yield a
    a.close()


def _collect(client: httpx.Client, params: dict[str, str], headers: dict[str, str] | None = None):
    """Read the event stream until the job's progress says done; returns every event seen."""
    seen = []
    with client.stream("GET", "/v1/events", params=params, headers=headers or {}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(r):
            seen.append(event)
            if event["event"] == "progress" and event["data"]["done"]:
                break
    return seen


def test_ensure_then_events_then_bars(app: App) -> None:
    with LiveServer(app, ServerOptions(workers=True)) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/v1/ensure", json={"symbols": ["AAPL", "MSFT"], "timeframe": "m15", "window_days": 20})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {x["symbol"] for x in body["results"]} == {"AAPL", "MSFT"}
        assert body["progress"]["total_slices"] >= 2
        job = body["job"]
        events = _collect(c, {"job": job})
        bars = [e for e in events if e["event"] == "bars"]
        progress = [e for e in events if e["event"] == "progress"]
        assert progress[-1]["data"]["job"] == job and progress[-1]["data"]["percent"] == 100.0
        assert {e["data"]["symbol"] for e in bars} == {"AAPL", "MSFT"}
        assert all(e["data"]["timeframe"] == "m15" for e in bars)
        written = progress[-1]["data"]["bars_written"]
        assert sum(e["data"]["rows"] for e in bars) == written > 0
        assert all(e.get("id") for e in events)

        total = 0
        for symbol in ("AAPL", "MSFT"):
            r = c.get(f"/v1/bars/{symbol}", params={"timeframe": "m15", "start": "0"})
            assert r.status_code == 200
            layers = r.json()["layers"]
            assert set(layers) == {"historical", "intraday"}
            for layer in layers.values():
                assert len(layer["t"]) == len(layer["o"]) == len(layer["c"]) == layer["count"]
                assert layer["t"] == sorted(layer["t"])
                total += layer["count"]
        assert total == written

        # Resume after the first bars event: the rest arrive again, nothing is lost.
        first = bars[0]
        again = _collect(c, {"job": job}, headers={"Last-Event-ID": first["id"]})
        resumed = {e["data"]["slice"] for e in again if e["event"] == "bars"}
        assert {e["data"]["slice"] for e in bars[1:]} <= resumed
        if not app.db.is_postgres:  # exactly once on SQLite; at least once on PostgreSQL
            assert first["data"]["slice"] not in resumed


def test_bars_etag_formats_and_limit(app: App) -> None:
    with LiveServer(app, ServerOptions(workers=True)) as server, httpx.Client(base_url=server.url) as c:
        job = c.post("/v1/ensure", json={"symbol": "AAPL", "timeframe": "h1", "window_days": 30}).json()[
            "job"
        ]
        _collect(c, {"job": job})
        r = c.get("/v1/bars/aapl", params={"timeframe": "1h", "limit": 7})
        assert r.status_code == 200
        data = r.json()
        hist = data["layers"]["historical"]
        assert data["symbol"] == "AAPL" and data["timeframe"] == "h1"
        n = sum(layer["count"] for layer in data["layers"].values())
        assert n == 7 and hist["provider"] in ("synthetic", "")
        etag = r.headers["etag"]
        again = c.get(
            "/v1/bars/AAPL", params={"timeframe": "h1", "limit": 7}, headers={"If-None-Match": etag}
        )
        assert again.status_code == 304 and again.content == b""
        full = c.get("/v1/bars/AAPL", params={"timeframe": "h1", "start": "0", "layers": "historical"}).json()
        ts = full["layers"]["historical"]["t"]
        csv = c.get(
            "/v1/bars/AAPL", params={"timeframe": "h1", "start": "0", "layers": "historical", "format": "csv"}
        )
        lines = csv.text.strip().splitlines()
        assert lines[0] == "ts,open,high,low,close,volume,vwap,trade_count"
        assert [int(x.split(",")[0]) for x in lines[1:]] == ts
        arrow = c.get(
            "/v1/bars/AAPL",
            params={"timeframe": "h1", "start": "0", "layers": "historical"},
            headers={"Accept": "application/vnd.apache.arrow.stream"},
        )
        assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
        table = pa.ipc.open_stream(arrow.content).read_all()
        assert table.column("ts").to_pylist() == ts
        assert table.column("close").to_pylist() == full["layers"]["historical"]["c"]
        parquet = c.get(
            "/v1/bars/AAPL",
            params={"timeframe": "h1", "start": "0", "layers": "historical", "format": "parquet"},
        )
        assert pq.read_table(io.BytesIO(parquet.content)).column("ts").to_pylist() == ts
        # A forecast bar changes the forecast layer's ETag and shows only there.
        tag = c.get("/v1/bars/AAPL", params={"timeframe": "h1", "layers": "forecast"}).headers["etag"]
        t = ts[-1] + 3600 * 24 * 7  # past any provisional coverage of the current session
        r = c.post(
            "/v1/forecasts",
            json={
                "symbol": "AAPL",
                "timeframe": "h1",
                "model": "m1",
                "bars": {"t": [t], "o": [1], "h": [2], "l": [0.5], "c": [1.5]},
            },
        )
        assert r.status_code == 200 and r.json()["written"] == 1
        fc = c.get("/v1/bars/AAPL", params={"timeframe": "h1", "layers": "forecast", "end": str(t + 3600)})
        assert fc.headers["etag"] != tag
        assert (
            fc.json()["layers"]["forecast"]["t"] == [t]
            and fc.json()["layers"]["forecast"]["provider"] == "m1"
        )
        cov = c.get("/v1/coverage/AAPL", params={"timeframe": "h1"}).json()
        assert all(end <= t for _, end in cov["intervals"])  # forecasts are never coverage
