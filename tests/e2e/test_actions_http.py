"""Adjust on read over HTTP: /v1/bars?adjust=, its ETag, the Python client's cache, the compat routes."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from barfill.api import Barfill
from barfill.client import Client
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SPLIT_EX_DATE, SPLIT_SYMBOL, SyntheticProvider
from barfill.store.db import Database
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
