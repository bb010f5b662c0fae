"""Several API processes on one PostgreSQL: an event committed anywhere reaches every process's clients."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time

import httpx

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.db import Database
from tests.e2e.helpers import BIN, clean_env, make_app
from tests.e2e.http_server import sse_events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(db_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "barfill"), "serve", "--no-workers", "--no-scheduler", "--port", str(port)],
        env=clean_env(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "barfill serve exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not come up")


def test_two_api_processes_both_receive_events(postgres_db: Database) -> None:
    servers = [_serve(postgres_db.url) for _ in range(2)]
    got: dict[int, dict[str, object]] = {}
    ready = [threading.Event(), threading.Event()]

    def listen(i: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as c, c.stream("GET", "/v1/events") as r:
            for event in sse_events(r):
                ready[i].set()
                if event["event"] == "bars":
                    got[i] = event["data"]
                    return

    threads = [
        threading.Thread(target=listen, args=(i, url), daemon=True) for i, (_, url) in enumerate(servers)
    ]
    try:
        for t in threads:
            t.start()
        assert all(r.wait(30) for r in ready)  # both streams are open (first `queue` event)
        app = make_app(postgres_db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
        try:
            ensure(app, ["AAPL"], "d1", days=60)
            asyncio.run(Worker(app).run(drain=True))
        finally:
            app.close()
        for t in threads:
            t.join(timeout=30)
        assert set(got) == {0, 1}
        assert got[0]["symbol"] == got[1]["symbol"] == "AAPL"
        assert got[0]["slice"] == got[1]["slice"]
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=30)
