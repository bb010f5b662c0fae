"""Corporate actions stored raw and applied on read, on SQLite and PostgreSQL (synthetic SPLT, 4:1)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from barfill.api import Barfill
from barfill.domain.actions import ActionKind, dividend, split
from barfill.domain.bars import BarBatch, Basis, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.providers.synthetic import SPLIT_EX_DATE, SPLIT_SYMBOL, SyntheticProvider
from barfill.store.actions import (
    actions_fingerprint,
    list_actions,
    load_actions,
    next_effective,
    replace_actions,
    upsert_actions,
)
from barfill.store.bar_reads import read_bars
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols
from barfill.testing.clock import SimClock
from tests.e2e.helpers import make_app

CAL = get_calendar("XNYS")
TZ = CAL.tz


@pytest.fixture
def hydrated(db: Database):
    synthetic = SyntheticProvider(calendar=CAL)
    bf = Barfill.wrap(make_app(db, {"synthetic": synthetic}))
    bf.ensure(SPLT := SPLIT_SYMBOL, "d1", start="2024-05-01", end="2024-07-31")
    bf.work()
    assert len(bf.bars(SPLT, "d1")) > 60
    yield bf, synthetic
    bf.close()


def _day(frame, date: str) -> int:
    """Row number of the d1 bar of ``date`` (labelled 00:00 New York)."""
    labels: list[str] = frame.index.tz_convert(TZ).strftime("%Y-%m-%d").tolist()
    return labels.index(date)


def test_split_inside_the_window_adjusts_on_read(hydrated) -> None:
    bf, synthetic = hydrated
    raw = bf.bars(SPLIT_SYMBOL, "d1", adjust="raw")
    before_actions = bf.bars(SPLIT_SYMBOL, "d1", adjust="split")
    # No action known yet: adjusting changes nothing, and the raw jump is there.
    np.testing.assert_array_equal(before_actions["close"].to_numpy(), raw["close"].to_numpy())
    i = _day(raw, SPLIT_EX_DATE.isoformat())
    assert 3.0 < raw["close"].iloc[i - 1] / raw["open"].iloc[i] < 5.0
    requests = synthetic.requests

    result = bf.refresh_actions([SPLIT_SYMBOL])
    assert result.fetched == {"synthetic": 1} and result.changed > 0
    assert synthetic.requests == requests  # no bar was fetched again

    adj = bf.bars(SPLIT_SYMBOL, "d1", adjust="split")
    assert set(adj["basis"]) == {"split"}
    factor = np.where(np.arange(len(raw)) < i, 4.0, 1.0)  # hand-computed: 4 before the ex date
    for col in ("open", "high", "low", "close", "vwap"):
        np.testing.assert_array_equal(adj[col].to_numpy(), raw[col].to_numpy() / factor, err_msg=col)
    np.testing.assert_array_equal(adj["volume"].to_numpy(), raw["volume"].to_numpy() * factor)
    # Continuous: the split-adjusted close before the split is near the open after it.
    assert 0.8 < adj["close"].iloc[i - 1] / adj["open"].iloc[i] < 1.25
    # Raw reads are untouched by the actions.
    np.testing.assert_array_equal(bf.bars(SPLIT_SYMBOL, "d1")["close"], raw["close"])


def test_dividends_change_all_not_split(hydrated) -> None:
    bf, _ = hydrated
    bf.refresh_actions([SPLIT_SYMBOL])
    raw = bf.bars(SPLIT_SYMBOL, "d1", adjust="raw")
    spl = bf.bars(SPLIT_SYMBOL, "d1", adjust="split")
    tot = bf.bars(SPLIT_SYMBOL, "d1", adjust="all")
    assert set(tot["basis"]) == {"all"}
    divs = [a for a in bf.actions(SPLIT_SYMBOL) if a.kind == ActionKind.dividend]
    in_window = [a.ex_date for a in divs if dt.date(2024, 5, 1) < a.ex_date <= dt.date(2024, 7, 31)]
    assert in_window == [dt.date(2024, 5, 15)]
    i_div = _day(raw, "2024-05-15")
    i_split = _day(raw, SPLIT_EX_DATE.isoformat())
    ref = raw["close"].iloc[i_div - 1]  # raw close of 2024-05-14
    m = 1.0 - 0.88 / ref
    n = len(raw)
    expected = np.ones(n)
    expected[:i_split] /= 4.0
    expected[:i_div] *= m
    # Dividends whose previous session is not stored (2024-08-15 on) give no factor.
    np.testing.assert_allclose(tot["close"].to_numpy(), raw["close"].to_numpy() * expected, rtol=1e-14)
    np.testing.assert_array_equal(tot["volume"].to_numpy(), spl["volume"].to_numpy())
    assert not np.array_equal(tot["close"].to_numpy(), spl["close"].to_numpy())
    np.testing.assert_array_equal(spl["close"].iloc[i_div:].to_numpy(), tot["close"].iloc[i_div:].to_numpy())


def test_resampled_bars_are_adjusted_on_read(db: Database) -> None:
    synthetic = SyntheticProvider(calendar=CAL)
    with Barfill.wrap(make_app(db, {"synthetic": synthetic}, derivations=["d1->w1"])) as bf:
        bf.ensure(SPLIT_SYMBOL, "d1", start="2024-05-27", end="2024-06-21")
        bf.work()
        bf.refresh_actions([SPLIT_SYMBOL])
        raw = bf.bars(SPLIT_SYMBOL, "w1", adjust="raw")
        adj = bf.bars(SPLIT_SYMBOL, "w1", adjust="split")
    assert len(raw) == 4 and set(raw["provider"]) == {"resample:d1"}
    # Weeks of 05-27 and 06-03 are before the 06-10 split; 06-10 and 06-17 after it.
    np.testing.assert_array_equal(adj["close"].to_numpy(), raw["close"].to_numpy() / [4, 4, 1, 1])


def test_upsert_is_idempotent_and_fingerprint_moves_only_on_change(db: Database) -> None:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["ABC"])["ABC"]
        first = [
            split("ABC", dt.date(2024, 6, 10), 4.0, "p"),
            dividend("ABC", dt.date(2024, 5, 15), 0.5, "p"),
        ]
        assert upsert_actions(conn, sid, first, TZ) == 2
    with db.read() as conn:
        fp = actions_fingerprint(conn, sid)
    with db.write() as conn:
        assert upsert_actions(conn, sid, first, TZ) == 0
    with db.read() as conn:
        assert actions_fingerprint(conn, sid) == fp
    with db.write() as conn:
        # Another provider's report of the same split, and a corrected dividend.
        again = [
            split("ABC", dt.date(2024, 6, 10), 4.0, "q"),
            dividend("ABC", dt.date(2024, 5, 15), 0.55, "p"),
        ]
        assert upsert_actions(conn, sid, again, TZ) == 2
    with db.read() as conn:
        assert actions_fingerprint(conn, sid) != fp
        assert len(list_actions(conn, sid)) == 3
        best = load_actions(conn, sid, order=["q", "p"])
    got = [(a.kind.value, a.provider, a.cash) for a in best]
    assert got == [("dividend", "p", 0.55), ("split", "q", None)]
    with db.write() as conn:
        # Provider p now lists only the dividend: its split report is withdrawn, q's stays.
        assert replace_actions(conn, sid, "p", [dividend("ABC", dt.date(2024, 5, 15), 0.55, "p")], TZ) == 1
    with db.read() as conn:
        assert [(a.kind.value, a.provider) for a in list_actions(conn, sid)] == [
            ("dividend", "p"),
            ("split", "q"),
        ]


def test_bad_adjust_is_a_clear_error(hydrated) -> None:
    bf, _ = hydrated
    with pytest.raises(ValueError, match="adjust: expected raw, split or all"):
        bf.bars(SPLIT_SYMBOL, "d1", adjust="dividend")


def _day_bars(symbol: str, provider: str, dates: list[str], closes: list[float], basis: str) -> BarBatch:
    ts = np.array([int(pd.Timestamp(d, tz=TZ).timestamp()) for d in dates], dtype=np.int64)
    c = np.array(closes, dtype=np.float64)
    return BarBatch(
        symbol, Timeframe.d1, provider, ts, c, c + 1, c - 1, c, np.full(len(c), 100.0), basis=Basis(basis)
    )


def test_yahoo_split_adjusted_bars_are_never_mixed_with_raw(db: Database) -> None:
    """Raw Polygon bars before the split, Yahoo's split-adjusted ones around it: one basis per read."""
    with db.write() as conn:
        sid = ensure_symbols(conn, ["MIX"])["MIX"]
        raw_days = ["2024-06-05", "2024-06-06", "2024-06-07"]
        yahoo_days = ["2024-06-06", "2024-06-07", "2024-06-10", "2024-06-11"]
        upsert_bars(
            conn,
            sid,
            _day_bars("MIX", "polygon", raw_days, [400.0, 404.0, 408.0], "raw"),
            layer=Layer.historical,
            fetched_at=1.0,
        )
        upsert_bars(
            conn,
            sid,
            _day_bars("MIX", "yahoo", yahoo_days, [101.0, 102.0, 103.0, 104.0], "split"),
            layer=Layer.historical,
            fetched_at=1.0,
        )
        upsert_actions(conn, sid, [split("MIX", dt.date(2024, 6, 10), 4.0, "polygon")], TZ)
    with db.read() as conn:
        raw = read_bars(conn, sid, "d1", 0, 2**40, adjust="raw", precedence=["yahoo", "polygon"])
        assert (raw.basis.value, raw.provider, raw.close.tolist()) == (
            "raw",
            "polygon",
            [400.0, 404.0, 408.0],
        )
        # Polygon preferred: its raw bars, split-adjusted now; Yahoo's never join them.
        adj = read_bars(conn, sid, "d1", 0, 2**40, adjust="split", precedence=["polygon", "yahoo"])
        assert (adj.basis.value, adj.provider, adj.close.tolist()) == (
            "split",
            "polygon",
            [100.0, 101.0, 102.0],
        )
        # Yahoo preferred: its split-adjusted bars as stored; Polygon's raw ones are left out.
        yah = read_bars(conn, sid, "d1", 0, 2**40, adjust="split", precedence=["yahoo", "polygon"])
        assert (yah.basis.value, yah.provider, yah.close.tolist()) == (
            "split",
            "yahoo",
            [101.0, 102.0, 103.0, 104.0],
        )
        with pytest.raises(InvalidInput, match="^adjust: expected split"):
            read_bars(conn, sid, "d1", 0, 2**40, adjust="all", precedence=["yahoo", "polygon"])


def test_an_announced_split_adjusts_reads_only_from_its_ex_date(db: Database) -> None:
    """Providers list splits ahead of their ex date; until it comes, today's prices are not divided."""
    ex_start = pd.Timestamp("2024-06-10", tz=TZ).timestamp()  # 00:00 New York on the ex date
    clock = SimClock(pd.Timestamp("2024-06-07 16:30", tz=TZ).timestamp())
    clocked = Database(db.url, clock=clock)
    try:
        with clocked.write() as conn:
            sid = ensure_symbols(conn, ["ANN"])["ANN"]
            days = ["2024-06-03", "2024-06-04", "2024-06-05", "2024-06-06", "2024-06-07"]
            batch = _day_bars("ANN", "polygon", days, [400.0, 404.0, 408.0, 412.0, 416.0], "raw")
            upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=1.0)
            upsert_actions(conn, sid, [split("ANN", dt.date(2024, 6, 10), 4.0, "polygon")], TZ)

        def read() -> tuple[list[float], list[float], tuple[int, float, int], float | None]:
            with clocked.read() as conn:
                got = read_bars(conn, sid, "d1", 0, 2**40, adjust="split")
                return (
                    got.close.tolist(),
                    got.volume.tolist(),
                    actions_fingerprint(conn, sid),
                    next_effective(conn, sid),
                )

        closes, volumes, fp, pending = read()
        assert (closes, volumes) == ([400.0, 404.0, 408.0, 412.0, 416.0], [100.0] * 5)  # as traded
        assert fp[0] == 1 and fp[2] == 0 and pending == ex_start
        with clocked.read() as conn:
            assert [a.ex_date for a in list_actions(conn, sid)] == [dt.date(2024, 6, 10)]  # still listed

        clock.set(ex_start - 1)  # 23:59:59 the evening before: not yet
        assert read()[0] == [400.0, 404.0, 408.0, 412.0, 416.0]
        clock.set(ex_start)  # the ex date has begun: every stored bar is before the split
        closes, volumes, fp_after, pending = read()
        assert (closes, volumes) == (
            [100.0, 101.0, 102.0, 103.0, 104.0],
            [400.0] * 5,
        )  # hand-computed: /4, x4
        assert fp_after[:2] == fp[:2] and fp_after[2] == 1 and pending is None  # nothing written, ETag moves
    finally:
        clocked.dispose()
