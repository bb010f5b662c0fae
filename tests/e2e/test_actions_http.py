"""Adjust on read over HTTP: /v1/bars?adjust=, its ETag, the Python client's cache, the compat routes."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from barfill.api import Barfill
from barfill.bootstrap import build
from barfill.client import Client
from barfill.config import load_settings
from barfill.domain.actions import split
from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SPLIT_EX_DATE, SPLIT_SYMBOL, SyntheticProvider
from barfill.store.actions import upsert_actions
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols
from barfill.testing.clock import SimClock
from tests.e2e.helpers import make_app
from tests.e2e.http_server import LiveServer

CAL = get_calendar("XNYS")
SPLIT_TS = int(pd.Timestamp(SPLIT_EX_DATE.isoformat(), tz=CAL.tz).timestamp())


@pytest.fixture
def hydrated(db: Database):
    synthetic = SyntheticProvider(calendar=CAL)
    bf = Barfill.wrap(make_app(db, {"synthetic": synthetic}))
    bf.ensure(SPLIT_SYMBOL, "d1", start="2024-05-20", end="2024-06-28")
    bf.work()
    yield bf, synthetic
    bf.close()


def _bars(c: httpx.Client, **params: str) -> httpx.Response:
    return c.get(f"/v1/bars/{SPLIT_SYMBOL}", params={"timeframe": "d1", "start": "2024-05-20", **params})


def test_a_split_announced_later_changes_answer_and_etag_without_refetching(hydrated, tmp_path: Path) -> None:
    bf, synthetic = hydrated
    with LiveServer(bf.app) as server, httpx.Client(base_url=server.url) as c:
        first = _bars(c, adjust="split")
        assert first.status_code == 200, first.text
        etag = first.headers["etag"]
        raw = first.json()["layers"]["historical"]
        assert _bars(c, adjust="split").headers["etag"] == etag
        assert (
            c.get(
                f"/v1/bars/{SPLIT_SYMBOL}",
                params={"timeframe": "d1", "start": "2024-05-20", "adjust": "split"},
                headers={"If-None-Match": etag},
            ).status_code
            == 304
        )
        with Client(server.url, cache_dir=tmp_path) as client:
            cached = client.bars(SPLIT_SYMBOL, "d1", start="2024-05-20", adjust="split")
        requests = synthetic.requests

        assert bf.refresh_actions([SPLIT_SYMBOL]).changed > 0  # the split becomes known

        after = c.get(
            f"/v1/bars/{SPLIT_SYMBOL}",
            params={"timeframe": "d1", "start": "2024-05-20", "adjust": "split"},
            headers={"If-None-Match": etag},
        )
        assert after.status_code == 200 and after.headers["etag"] != etag
        adj = after.json()["layers"]["historical"]
        assert adj["t"] == raw["t"]
        factor = np.where(np.asarray(raw["t"]) < SPLIT_TS, 4.0, 1.0)  # hand-computed
        np.testing.assert_array_equal(adj["c"], np.asarray(raw["c"]) / factor)
        np.testing.assert_array_equal(adj["v"], np.asarray(raw["v"]) * factor)
        # A raw read's answer (and ETag) does not depend on the actions.
        assert _bars(c, adjust="raw").json()["layers"]["historical"]["c"] == raw["c"]
        assert synthetic.requests == requests  # no bar was fetched again

        with Client(server.url, cache_dir=tmp_path) as client:
            fresh = client.bars(SPLIT_SYMBOL, "d1", start="2024-05-20", adjust="split")
        np.testing.assert_array_equal(fresh["close"].to_numpy(), adj["c"])
        assert not np.array_equal(fresh["close"].to_numpy(), cached["close"].to_numpy())

        bad = _bars(c, adjust="dividends")
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["field"] == "adjust"


def test_compat_chart_serves_split_adjusted(hydrated) -> None:
    bf, _ = hydrated
    bf.refresh_actions([SPLIT_SYMBOL])
    expected = bf.bars(SPLIT_SYMBOL, "d1", adjust="split")
    with LiveServer(bf.app) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/functions/v1/chart-data-v2", json={"symbol": SPLIT_SYMBOL, "timeframe": "d1"})
        assert r.status_code == 200, r.text
        data = r.json()["layers"]["historical"]["data"]
    assert [b["close"] for b in data] == expected["close"].tolist()
    assert [b["volume"] for b in data] == expected["volume"].tolist()


def test_an_announced_split_changes_the_answer_and_etag_when_its_ex_date_comes(db: Database) -> None:
    """Nothing is written at the ex date: the kept 304 must still end, and the answer change."""
    clock = SimClock(pd.Timestamp("2024-06-07 17:00", tz=CAL.tz).timestamp())  # Friday, after the close
    synthetic = SyntheticProvider(calendar=CAL, now=clock.now)
    app = build(load_settings(database_url=db.url), providers={"synthetic": synthetic}, clock=clock)
    try:
        raw = synthetic.truth("AAPL", Timeframe.d1, SPLIT_TS - 7 * 86_400, SPLIT_TS)
        with app.db.write() as conn:
            sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
            upsert_bars(conn, sid, raw, layer=Layer.historical, fetched_at=1.0)
            upsert_actions(conn, sid, [split("AAPL", SPLIT_EX_DATE, 4.0, "synthetic")], CAL.tz)  # announced
        params = {"timeframe": "d1", "start": "2024-06-01", "end": "2024-06-15", "adjust": "split"}
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            first = c.get("/v1/bars/AAPL", params=params)
            assert first.status_code == 200, first.text
            etag, before = first.headers["etag"], first.json()["layers"]["historical"]
            assert before["c"] == raw.close.tolist() and before["v"] == raw.volume.tolist()  # not yet
            assert c.get("/v1/bars/AAPL", params=params, headers={"If-None-Match": etag}).status_code == 304

            clock.set(SPLIT_TS)  # 00:00 New York on the ex date; no write, no notification
            after = c.get("/v1/bars/AAPL", params=params, headers={"If-None-Match": etag})
            assert after.status_code == 200 and after.headers["etag"] != etag
            adj = after.json()["layers"]["historical"]
            assert adj["t"] == raw.ts.tolist()
            np.testing.assert_array_equal(adj["c"], raw.close / 4.0)  # every stored bar is before it
            np.testing.assert_array_equal(adj["v"], raw.volume * 4.0)
    finally:
        app.close()
