"""The web page's own routes: pages, static files, dashboard JSON, retry, and their key scopes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import HTTPException

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.web import STATIC, static_file
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.api_keys import create_key
from barfill.store.db import Database
from tests.e2e.browser_support import live_server
from tests.e2e.helpers import make_app


@pytest.fixture
def app(db: Database) -> Iterator[App]:
    a = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar(), page_limit=21)})
    yield a
    a.close()


@contextmanager
def serving(app: App) -> Iterator[httpx.Client]:
    """A real server on 127.0.0.1 (no worker in it: the tests drain the queue themselves)."""
    with live_server(app, workers=False) as srv, httpx.Client(base_url=srv.base, timeout=30) as c:
        yield c


@pytest.fixture
def client(app: App) -> Iterator[httpx.Client]:
    with serving(app) as c:
        yield c


def drain(app: App) -> None:
    asyncio.run(Worker(app, concurrency=4).run(drain=True))


def cells(client: httpx.Client, symbol: str, days: int = 14) -> list[str]:
    r = client.get("/web/api/coverage-map", params={"timeframe": "h1", "days": days})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["days"]) == days
    (row,) = [row for row in body["rows"] if row["symbol"] == symbol]
    assert len(row["cells"]) == days
    return list(row["cells"])


def test_pages_and_static_files(client: httpx.Client) -> None:
    for path in ("/", "/chart", "/dashboard"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    r = client.get("/web/static/chart.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "import" in r.text
    assert client.get("/web/static/nothing.js").status_code == 404


@pytest.mark.parametrize("name", ["../../server/app.py", "../static/../../cli.py", "/etc/passwd", "vendor"])
def test_static_files_never_leave_their_folder(name: str) -> None:
    # Called directly: an HTTP client would normalize the dots away before sending.
    with pytest.raises(HTTPException) as e:
        static_file(name)
    assert e.value.status_code == 404
    assert str(static_file("chart.html").path) == str(STATIC / "chart.html")


def test_coverage_map_turns_from_gap_to_covered(app: App, client: httpx.Client) -> None:
    ensure(app, ["WEBA"], "h1", days=10)
    before = cells(client, "WEBA")
    assert "gap" in before and "covered" not in before
    assert "closed" in before  # 14 days hold a weekend
    drain(app)
    after = cells(client, "WEBA")
    assert "gap" not in after and "covered" in after
    assert [c == "closed" for c in after] == [c == "closed" for c in before]
    # Days before the 10-day window are outside it, not gaps.
    assert after[0] == "outside" or before[0] == "closed"


def test_coverage_map_rejects_bad_input_naming_the_field(client: httpx.Client) -> None:
    r = client.get("/web/api/coverage-map", params={"timeframe": "h2"})
    assert r.status_code == 422 and "timeframe" in r.text
    r = client.get("/web/api/coverage-map", params={"days": 0})
    assert r.status_code == 422 and "days" in r.text


def test_overview_counts_throughput_definitions_and_providers(app: App, client: httpx.Client) -> None:
    report = ensure(app, ["WEBB"], "h1", days=10)
    queued = report.results[0].slices_queued
    assert queued > 1
    drain(app)
    o = client.get("/web/api/overview").json()
    assert o["counts"]["succeeded"] == queued and o["counts"]["queued"] == 0
    (d,) = [d for d in o["definitions"] if d["symbol"] == "WEBB"]
    assert d["percent"] == 100.0 and d["active"] is False and d["slices"]["succeeded"] == queued
    tp = o["throughput"]
    assert len(tp["t"]) == len(tp["slices"]) == len(tp["bars"]) == 60
    assert sum(tp["slices"]) == queued and sum(tp["bars"]) == d["bars_written"] > 0
    (p,) = o["providers"]
    # Lifetime counters of the shared limiter: one request per slice, none throttled or failed.
    assert p["name"] == "synthetic" and p["requests"] == queued and p["errors"] == 0
    assert p["rate_limited"] == 0 and "slices" not in p
    assert p["wait_s"] >= 0.0 and p["rate_limit"] == "100/1s"
    assert o["failures"] == []


def test_failures_are_grouped_and_retried(db: Database) -> None:
    failing = SyntheticProvider(calendar=get_calendar(), page_limit=21, failure_rate=1.0)
    app = make_app(db, {"synthetic": failing}, max_attempts=1)
    try:
        report = ensure(app, ["WEBC"], "h1", days=10)
        n = report.results[0].slices_queued
        drain(app)
        with serving(app) as client:
            o = client.get("/web/api/overview").json()
            (group,) = o["failures"]
            assert group["code"] == "synthetic_fault" and group["count"] == n
            assert len(group["ids"]) == n and group["symbols"] == ["WEBC"]
            (p,) = o["providers"]
            assert (p["requests"], p["errors"], p["rate_limited"]) == (n, n, 0)  # each call failed once
            assert "unfillable" in cells(client, "WEBC")
            r = client.post("/web/api/retry", json={"ids": group["ids"]})
            assert r.status_code == 200 and r.json() == {"requeued": n}
            assert client.get("/web/api/overview").json()["counts"]["queued"] == n
            assert client.post("/web/api/retry", json={"ids": []}).status_code == 422
    finally:
        app.close()


def test_keys_and_scopes_guard_the_dashboard_data(app: App, client: httpx.Client) -> None:
    with app.db.write() as conn:
        _, reader = create_key(conn, "reader", "read")
    assert client.get("/web/api/overview").status_code == 401
    auth = {"Authorization": f"Bearer {reader}"}
    assert client.get("/web/api/overview", headers=auth).status_code == 200
    assert client.get("/web/api/coverage-map", headers=auth).status_code == 200
    assert client.post("/web/api/retry", json={"ids": [1]}, headers=auth).status_code == 403
    # The pages themselves hold no data: they load without a key and ask for one.
    assert client.get("/chart").status_code == 200
