"""The HTTP API: chart reads vs raw SQL, cached reads under 50 clients, time to the newest screen.

On SQLite (the embedded default), one symbol with two years of m15 and of m1
(synthetic bars), a real uvicorn server on 127.0.0.1 in this process:

* chart read latency p50/p99 of ``GET /v1/bars`` (columnar JSON, whole
  range) against the raw SQL fetch of the same rows (``SELECT ... ORDER BY
  ts`` through the DBAPI) in the same run: target ratio <= 2;
* requests/s and p99 of small cached reads (newest 500 m15 bars with
  ``If-None-Match`` → 304) from 50 concurrent clients;
* on an empty store, time from ``POST /v1/ensure`` (m1, 2 years) to the
  newest 500 bars being served, against one provider round-trip of the same
  slice measured in the same run (synthetic provider with 200 ms latency).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import numpy as np
import uvicorn

from barfill.bootstrap import App, build
from barfill.config import load_settings
from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.app import ServerOptions, create_app
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols
from bench.common import Result, scratch_database

SUITE = "http"
YEARS_S = 2 * 365 * 86_400
LATENCY_S = 0.2


class _Server:
    def __init__(self, app: App, options: ServerOptions | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(app, options), log_config=None, access_log=False, lifespan="on", timeout_keep_alive=60
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def _app(db: Database, provider: SyntheticProvider, **overrides: Any) -> App:
    return build(load_settings(database_url=db.url, **overrides), providers={"synthetic": provider})


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _load(app: App, provider: SyntheticProvider, tf: Timeframe, start: int, end: int) -> int:
    with app.db.write() as conn:
        sid = ensure_symbols(conn, ["BENCH"])["BENCH"]
        batch = provider.truth("BENCH", tf, start, end)
        upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=time.time())
    return sid


def _raw_fetch(db: Database, sid: int, tf: Timeframe, start: int, end: int) -> int:
    with db.engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cur.execute(
            "SELECT ts, open, high, low, close, volume, vwap, trade_count, provider FROM bars "
            "WHERE symbol_id = ? AND timeframe = ? AND ts >= ? AND ts < ? ORDER BY ts",
            (sid, tf.value, start, end),
        )
        n = len(cur.fetchall())
        cur.close()
    return n


def _chart_latency(
    db: Database, app: App, url: str, sid: int, tf: Timeframe, start: int, end: int, n: int
) -> list[Result]:
    params = {"timeframe": tf.value, "start": str(start), "end": str(end), "layers": "historical"}
    api: list[float] = []
    raw: list[float] = []
    rows = 0
    with httpx.Client(base_url=url, timeout=120) as c:
        c.get("/v1/bars/BENCH", params=params)  # warm-up
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get("/v1/bars/BENCH", params=params)
            api.append(time.perf_counter() - t0)
            assert r.status_code == 200
            t0 = time.perf_counter()
            rows = _raw_fetch(db, sid, tf, start, end)
            raw.append(time.perf_counter() - t0)
    out = []
    for q in (50, 99):
        a, b = _percentile(api, q) * 1000, _percentile(raw, q) * 1000
        target = {
            (Timeframe.m15, 50): "p50 <= 10 ms, ratio <= 2",
            (Timeframe.m1, 50): "p50 <= 100 ms, ratio <= 2",
        }
        out.append(
            Result(
                SUITE,
                f"GET /v1/bars 2y {tf.value} ({rows:,} bars) p{q}",
                a,
                "ms",
                baseline=b,
                ratio=a / b if b else None,
                target=target.get((tf, q), "ratio <= 2"),
            )
        )
    return out


async def _cached_reads(url: str, clients: int, per_client: int) -> tuple[float, float]:
    params = {"timeframe": "m15", "limit": "500"}
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as c:
        etag = (await c.get("/v1/bars/BENCH", params=params)).headers["etag"]
        latencies: list[float] = []
        other: dict[int, int] = {}

        async def one() -> None:
            for _ in range(per_client):
                t0 = time.perf_counter()
                try:
                    r = await c.get("/v1/bars/BENCH", params=params, headers={"If-None-Match": etag})
                    status = r.status_code
                except httpx.TransportError:
                    status = -1
                latencies.append(time.perf_counter() - t0)
                if status != 304:
                    other[status] = other.get(status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    if other:
        print("non-304 answers:", other)
    return len(latencies) / elapsed, _percentile(latencies, 99) * 1000


def _newest_screen() -> list[Result]:
    cal = get_calendar()
    provider = SyntheticProvider(calendar=cal, latency_s=LATENCY_S)
    with scratch_database("sqlite") as db:
        app = _app(db, provider, worker_poll_s=0.05)
        try:
            with _Server(app, ServerOptions(workers=True)) as server, httpx.Client(base_url=server.url) as c:
                t0 = time.perf_counter()
                r = c.post("/v1/ensure", json={"symbol": "FRESH", "timeframe": "m1", "window_days": 730})
                slices = r.json()["results"][0]["slices_queued"]
                while True:
                    got = c.get("/v1/bars/FRESH", params={"timeframe": "m1", "limit": "500"}).json()
                    if sum(layer["count"] for layer in got["layers"].values()) >= 500:
                        break
                    time.sleep(0.01)
                to_screen = time.perf_counter() - t0
                newest = max(got["layers"]["historical"]["t"] + got["layers"]["intraday"]["t"])
            # One provider round-trip for the same slice size, measured now.
            width = 50_000 * 60
            t0 = time.perf_counter()
            asyncio.run(provider.fetch(["FRESH"], Timeframe.m1, newest - width, newest + 60))
            round_trip = time.perf_counter() - t0
        finally:
            app.close()
    return [
        Result(
            SUITE,
            f"POST /v1/ensure → newest 500 m1 bars served ({slices} slices queued)",
            to_screen * 1000,
            "ms",
            baseline=round_trip * 1000,
            ratio=to_screen / round_trip,
            target="<= one round-trip + 100 ms",
            extra={"margin_ms": (to_screen - round_trip) * 1000},
        )
    ]


def run() -> list[Result]:
    cal = get_calendar()
    provider = SyntheticProvider(calendar=cal)
    results: list[Result] = []
    with scratch_database("sqlite") as db:
        app = _app(db, provider, api_rate_limit="100000000/1")
        try:
            end = int(cal.closes[-1]) if int(cal.closes[-1]) < time.time() else int(time.time()) - 86_400
            start = end - YEARS_S
            sid = _load(app, provider, Timeframe.m15, start, end)
            _load(app, provider, Timeframe.m1, start, end)
            with _Server(app) as server:
                results += _chart_latency(db, app, server.url, sid, Timeframe.m15, start, end, 40)
                results += _chart_latency(db, app, server.url, sid, Timeframe.m1, start, end, 12)
                rate, p99 = asyncio.run(_cached_reads(server.url, 50, 40))
                results.append(
                    Result(SUITE, "cached chart reads, 50 clients (304)", rate, "req/s", target=">= 1,000/s")
                )
                results.append(
                    Result(SUITE, "cached chart reads, 50 clients p99", p99, "ms", target="<= 50 ms")
                )
        finally:
            app.close()
    results += _newest_screen()
    for r in results:
        print(
            f"{r.name}: {r.value:,.1f} {r.unit}"
            + (f" (baseline {r.baseline:,.1f}, ratio {r.ratio:.2f})" if r.baseline else "")
        )
    return results
