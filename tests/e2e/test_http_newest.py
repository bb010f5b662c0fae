"""The newest screen: ``barfill serve``'s worker starts on an ensure, not at its next poll."""

from __future__ import annotations

import time

import httpx

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.app import ServerOptions
from barfill.store.db import Database
from tests.e2e.helpers import make_app
from tests.e2e.http_server import LiveServer


def test_ensure_wakes_the_servers_worker(sqlite_db: Database) -> None:
    # A poll interval far longer than the test may wait: only the wake can start the work.
    app = make_app(sqlite_db, {"synthetic": SyntheticProvider(calendar=get_calendar())}, worker_poll_s=60)
    try:
        with LiveServer(app, ServerOptions(workers=True)) as server, httpx.Client(base_url=server.url) as c:
            time.sleep(0.5)  # the worker has looked once, found nothing, and gone to sleep
            r = c.post("/v1/ensure", json={"symbol": "AAPL", "timeframe": "m15", "window_days": 60})
            assert r.status_code == 200 and r.json()["results"][0]["slices_queued"] >= 1
            deadline = time.monotonic() + 30
            while True:
                got = c.get("/v1/bars/AAPL", params={"timeframe": "m15", "limit": "500"}).json()
                if sum(layer["count"] for layer in got["layers"].values()) >= 500:
                    break
                assert time.monotonic() < deadline, "the worker never started on the ensure"
                time.sleep(0.05)
    finally:
        app.close()
