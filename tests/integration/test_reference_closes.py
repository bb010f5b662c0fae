"""Adjusted reads right after ensure + wait, and dividends' reference closes fetched as d1 bars.

SQLite and PostgreSQL; the synthetic SPLT (4:1 split ex 2024-06-10, a quarterly dividend
of 0.88, 0.22 after the split); the database clock simulated at 2024-12-02 15:00 New York.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import numpy as np
import pandas as pd
import pytest

from barfill.api import Barfill
from barfill.bootstrap import build
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SPLIT_SYMBOL, SyntheticProvider
from barfill.service.actions import refresh_due
from barfill.service.reference import REFERENCE_REQUESTER
from barfill.store.db import Database
from barfill.store.definitions import list_definitions
from barfill.testing.clock import SimClock
from tests.e2e.helpers import ts
from tests.e2e.http_server import LiveServer

CAL = get_calendar("XNYS")
T0 = float(ts("2024-12-02T20:00"))  # 15:00 New York
# SPLT's dividends in effect at T0, (ex date, cash), and the session before each (hand-read
# from the NYSE calendar: none of these ex dates follows a holiday).
DIVIDENDS = [
    (dt.date(2024, 2, 15), 0.88, "2024-02-14"),
    (dt.date(2024, 5, 15), 0.88, "2024-05-14"),
    (dt.date(2024, 8, 15), 0.22, "2024-08-14"),
    (dt.date(2024, 11, 15), 0.22, "2024-11-14"),
]


def _fx(db: Database) -> tuple[Barfill, SyntheticProvider]:
    clock = SimClock(T0)
    synthetic = SyntheticProvider(calendar=CAL, now=clock.now)
    app = build(load_settings(database_url=db.url), providers={"synthetic": synthetic}, clock=clock)
    return Barfill.wrap(app), synthetic


def _raw_close(bf: Barfill, day: str) -> float:
    frame = bf.bars(SPLIT_SYMBOL, "d1", start=day, end=day, adjust="raw")
    assert len(frame) == 1, day
    return float(frame["close"].iloc[0])


def test_closes_of_later_dividends_are_fetched_and_applied(db: Database) -> None:
    bf, synthetic = _fx(db)
    try:
        bf.ensure(SPLIT_SYMBOL, "d1", start="2024-01-02", end="2024-02-09")  # before every dividend
        bf.work()
        raw = bf.bars(SPLIT_SYMBOL, "d1", adjust="raw")
        assert len(raw) == 28
        first = bf.bars(SPLIT_SYMBOL, "d1", adjust="all")
        assert first.attrs["actions_unrefreshed"] is True  # nothing known: the read says so

        refreshed = asyncio.run(refresh_due(bf.app))
        assert refreshed.fetched == {"synthetic": 1} and refreshed.reference_jobs
        lacking = bf.bars(SPLIT_SYMBOL, "d1", adjust="all")
        assert lacking.attrs["actions_unrefreshed"] is False
        assert lacking.attrs["unapplied_dividends"] == [d for d, _, _ in DIVIDENDS]
        # Not pretending: the split applies, the dividends that cannot are left out (and said so).
        np.testing.assert_allclose(lacking["close"].to_numpy(), raw["close"].to_numpy() / 4, rtol=1e-12)
        with bf.app.db.read() as conn:
            ref = [d for d in list_definitions(conn) if d.requester == REFERENCE_REQUESTER]
        assert [(d.symbol, d.timeframe.value) for d in ref] == [(SPLIT_SYMBOL, "d1")]
        assert ref[0].start == ts("2024-02-14T05:00") and ref[0].end == ts("2024-11-15T05:00")

        before = synthetic.requests
        bf.work()
        assert synthetic.requests - before == 1  # one d1 request holds every reference session
        closes = {d: _raw_close(bf, prev) for d, _, prev in DIVIDENDS}
        factor = 1 / 4
        for d, cash, _ in DIVIDENDS:
            factor *= 1 - cash / closes[d]
        right = bf.bars(SPLIT_SYMBOL, "d1", end="2024-02-09", adjust="all")
        assert right.attrs["unapplied_dividends"] == []
        assert list(right.index) == list(raw.index)
        for col in ("open", "high", "low", "close"):
            np.testing.assert_allclose(right[col].to_numpy(), raw[col].to_numpy() * factor, rtol=1e-12)
        np.testing.assert_allclose(right["volume"].to_numpy(), raw["volume"].to_numpy() * 4, rtol=1e-12)
        # Bar for bar inside the gaps between dividends too: a bar of 2024-06-20 (after the split
        # and the May dividend) takes only the August and November factors.
        late_raw = _raw_close(bf, "2024-06-20")
        late = bf.bars(SPLIT_SYMBOL, "d1", start="2024-06-20", end="2024-06-20", adjust="all")
        expected = late_raw * (1 - 0.22 / closes[DIVIDENDS[2][0]]) * (1 - 0.22 / closes[DIVIDENDS[3][0]])
        assert float(late["close"].iloc[0]) == pytest.approx(expected, rel=1e-12)
    finally:
        bf.close()


def test_http_says_which_dividends_lack_a_close_and_the_etag_moves_when_they_land(db: Database) -> None:
    bf, _ = _fx(db)
    try:
        bf.ensure(SPLIT_SYMBOL, "d1", start="2024-01-02", end="2024-02-09")
        bf.work()
        params = {"timeframe": "d1", "start": "2024-01-02", "end": "2024-02-10", "adjust": "all"}
        with LiveServer(bf.app) as server, httpx.Client(base_url=server.url) as c:
            never = c.get(f"/v1/bars/{SPLIT_SYMBOL}", params=params)
            assert never.status_code == 200 and never.headers["barfill-actions-unrefreshed"] == "true"
            split_only = c.get(f"/v1/bars/{SPLIT_SYMBOL}", params={**params, "adjust": "split"})
            assert split_only.headers["barfill-actions-unrefreshed"] == "true"

            asyncio.run(refresh_due(bf.app))
            lacking = c.get(f"/v1/bars/{SPLIT_SYMBOL}", params=params)
            assert "barfill-actions-unrefreshed" not in lacking.headers
            assert lacking.headers["barfill-unapplied-dividends"] == ",".join(
                d.isoformat() for d, _, _ in DIVIDENDS
            )
            assert lacking.headers["etag"] != never.headers["etag"]
            tag = lacking.headers["etag"]
            assert (
                c.get(f"/v1/bars/{SPLIT_SYMBOL}", params=params, headers={"If-None-Match": tag}).status_code
                == 304
            )

            bf.work()  # the closes land (outside the read's range)
            landed = c.get(f"/v1/bars/{SPLIT_SYMBOL}", params=params, headers={"If-None-Match": tag})
            assert landed.status_code == 200 and landed.headers["etag"] != tag
            assert "barfill-unapplied-dividends" not in landed.headers
            raw = bf.bars(SPLIT_SYMBOL, "d1", start="2024-01-02", end="2024-02-09", adjust="raw")
            factor = 1 / 4
            for _, cash, prev in DIVIDENDS:
                factor *= 1 - cash / _raw_close(bf, prev)
            body = landed.json()["layers"]["historical"]
            np.testing.assert_allclose(np.asarray(body["c"]), raw["close"].to_numpy() * factor, rtol=1e-12)
    finally:
        bf.close()


def test_wait_refreshes_actions_and_fetches_the_closes(db: Database) -> None:
    bf, synthetic = _fx(db)
    try:
        report = bf.ensure(SPLIT_SYMBOL, "d1", start="2024-05-20", end="2024-06-28")
        bf.wait(report.job, timeout_s=120)
        assert synthetic.action_requests == 1  # never refreshed: refreshed by the wait itself
        raw = bf.bars(SPLIT_SYMBOL, "d1", start="2024-05-20", end="2024-06-28", adjust="raw")
        split = bf.bars(SPLIT_SYMBOL, "d1", start="2024-05-20", end="2024-06-28", adjust="split")
        adj = bf.bars(SPLIT_SYMBOL, "d1", start="2024-05-20", end="2024-06-28", adjust="all")
        assert adj.attrs == {"actions_unrefreshed": False, "unapplied_dividends": []}
        labels = raw.index.tz_convert(CAL.tz)
        before_split = labels < pd.Timestamp("2024-06-10", tz=CAL.tz)
        aug, nov = (_raw_close(bf, "2024-08-14"), _raw_close(bf, "2024-11-14"))
        tail = (1 - 0.22 / aug) * (1 - 0.22 / nov)
        np.testing.assert_allclose(
            split["close"].to_numpy(), raw["close"].to_numpy() / np.where(before_split, 4, 1), rtol=1e-12
        )
        np.testing.assert_allclose(adj["close"].to_numpy(), split["close"].to_numpy() * tail, rtol=1e-12)
        # Asked again, nothing is refreshed or fetched twice.
        requests = synthetic.requests
        bf.wait(bf.ensure(SPLIT_SYMBOL, "d1", start="2024-05-20", end="2024-06-28").job, timeout_s=60)
        assert synthetic.action_requests == 1 and synthetic.requests == requests
    finally:
        bf.close()
