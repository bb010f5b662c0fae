"""Over HTTP: a chart read right after its symbol's own write is patched, and answers what a
server that never saw it answers (ETag, 304 on that ETag, and body)."""

from __future__ import annotations

import time

import httpx

from barfill.bootstrap import App
from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.http_reads import notify_changed
from barfill.store.symbols import ensure_symbols
from tests.e2e.helpers import make_app, ts
from tests.e2e.http_server import LiveServer

START, END = ts("2024-03-04T00:00"), ts("2024-03-16T00:00")
CUT = ts("2024-03-15T17:00")
PARAMS = {"timeframe": "m15", "start": str(START), "end": str(END), "layers": "historical"}


def _write(db: Database, provider: SyntheticProvider, start: int, end: int, shift: float = 0.0) -> None:
    """Through the store from an engine of its own, as another process would."""
    other = Database(db.url)
    try:
        with other.write() as conn:
            sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
            batch = provider.truth("AAPL", Timeframe.m15, start, end)
            batch.close[:] = batch.close + shift
            upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=time.time())
            notify_changed(conn)
    finally:
        other.dispose()


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def test_own_writes_are_patched_as_a_cold_server_reads_them(db: Database) -> None:
    provider = SyntheticProvider(calendar=get_calendar())
    app: App = make_app(db, {"synthetic": provider})
    _write(db, provider, START, CUT)
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            reads = server.fastapi_app.state.barfill_reads
            _wait(lambda: reads.version.exact, "the data version (PostgreSQL: LISTEN) to be live")
            etag = c.get("/v1/bars/AAPL", params=PARAMS).headers["etag"]
            computed = reads.cache.misses
            # A correction in the middle, then a new bar at the end.
            for start, end, shift in (
                (ts("2024-03-07T16:00"), ts("2024-03-07T16:15"), 0.25),
                (CUT, CUT + 900, 0),
            ):
                _write(db, provider, start, end, shift)

                def moved(old: str = etag) -> bool:
                    r = c.get("/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": old})
                    return r.status_code == 200

                _wait(moved, "the write to be served")
                warm = c.get("/v1/bars/AAPL", params=PARAMS)
                assert reads.cache.misses == computed  # patched, never read in full
                with LiveServer(app) as fresh, httpx.Client(base_url=fresh.url) as cold_client:
                    cold = cold_client.get("/v1/bars/AAPL", params=PARAMS)
                assert warm.headers["etag"] == cold.headers["etag"] != etag
                assert warm.content == cold.content
                revalidated = c.get(
                    "/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": warm.headers["etag"]}
                )
                assert revalidated.status_code == 304
                etag = warm.headers["etag"]
            assert warm.json()["layers"]["historical"]["t"][-1] == CUT
    finally:
        app.close()
