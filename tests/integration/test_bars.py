"""Bar upserts and reads on both databases: idempotence, conflicts, dedupe, exact values."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.bar_reads import read_bars, read_bars_frame
from barfill.store.bars import count_bars, delete_bars, upsert_bars
from barfill.store.db import Database
from barfill.store.schema import bars
from barfill.store.symbols import ensure_symbols, symbol_id, tickers_by_id

T0 = 1_700_000_040  # a multiple of 60
END = T0 + 10**7


def _symbol(db: Database, ticker: str = "AAPL") -> int:
    with db.write() as conn:
        return ensure_symbols(conn, [ticker])[ticker]


def _batch(
    n: int, *, start: int = T0, step: int = 60, base: float = 100.0, provider: str = "alpha"
) -> BarBatch:
    ts = start + step * np.arange(n, dtype=np.int64)
    o = base + np.arange(n, dtype=np.float64)
    vwap = o + 0.25
    vwap[::3] = np.nan
    trades = np.arange(n, dtype=np.int64) * 7
    trades[1::4] = -1
    return BarBatch("AAPL", Timeframe.m1, provider, ts, o, o + 2, o - 2, o + 1, o * 10, vwap, trades)


def _write(
    db: Database, sid: int, batch: BarBatch, *, layer: Layer = Layer.historical, at: float = 1.0
) -> int:
    with db.write() as conn:
        return upsert_bars(conn, sid, batch, layer=layer, fetched_at=at)


def _table(db: Database) -> list[tuple[object, ...]]:
    with db.read() as conn:
        rows = conn.execute(sa.select(bars).order_by(bars.c.ts, bars.c.provider, bars.c.layer)).all()
    return [tuple(r) for r in rows]


def _same(a: BarBatch, b: BarBatch) -> None:
    for col in ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col), err_msg=col)


# 3,000 takes PostgreSQL's COPY fast path; 40,000 crosses its pieces (bars._COPY_PIECE_ROWS), NULLs included
@pytest.mark.parametrize("n", [5, 3_000, 40_000])
def test_upsert_is_idempotent(db: Database, n: int) -> None:
    sid = _symbol(db)
    batch = _batch(n)
    assert _write(db, sid, batch) == n
    first = _table(db)
    _write(db, sid, batch)
    assert _table(db) == first
    with db.read() as conn:
        assert count_bars(conn) == n
        _same(read_bars(conn, sid, "m1", T0, END), batch)


def test_nulls_are_stored_as_nulls(db: Database) -> None:
    sid = _symbol(db)
    _write(db, sid, _batch(4))
    with db.read() as conn:
        rows = conn.execute(sa.select(bars.c.vwap, bars.c.trade_count).order_by(bars.c.ts)).all()
    assert rows[0].vwap is None and rows[1].vwap is not None
    assert rows[1].trade_count is None and rows[2].trade_count == 14


def test_newer_fetch_updates_older_is_ignored(db: Database) -> None:
    sid = _symbol(db)
    _write(db, sid, _batch(3, base=100.0), at=10.0)
    _write(db, sid, _batch(3, base=200.0), at=20.0)
    _write(db, sid, _batch(3, base=300.0), at=15.0)  # a late write of an older fetch
    with db.read() as conn:
        got = read_bars(conn, sid, "m1", T0, END)
        stamps = conn.execute(sa.select(bars.c.fetched_at).distinct()).scalars().all()
    assert got.open.tolist() == [200.0, 201.0, 202.0]
    assert stamps == [20.0]


def test_overlapping_large_upsert_updates_and_inserts(db: Database) -> None:
    sid = _symbol(db)
    _write(db, sid, _batch(3_000), at=1.0)
    shifted = _batch(3_000, start=T0 + 1_500 * 60, base=5_000.0)
    assert _write(db, sid, shifted, at=2.0) == 3_000
    with db.read() as conn:
        assert count_bars(conn) == 4_500
        got = read_bars(conn, sid, "m1", T0, END)
    assert got.open[0] == 100.0 and got.open[1_500] == 5_000.0 and got.open[-1] == 5_000.0 + 2_999


def test_sqlite_upsert_fits_the_old_bound_value_limit(sqlite_db: Database) -> None:
    """SQLite before 3.32 binds at most 999 values per statement: the upsert splits rows to fit."""
    db = sqlite_db
    sid = _symbol(db)
    batch = _batch(1_000)
    with db.write() as conn:
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        before = dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        try:
            assert upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=1.0) == 1_000
            assert upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=2.0) == 1_000
        finally:
            dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)
    with db.read() as conn:
        assert count_bars(conn) == 1_000
        _same(read_bars(conn, sid, "m1", T0, END), batch)
        assert conn.execute(sa.select(bars.c.fetched_at).distinct()).scalars().all() == [2.0]


def test_repeated_ts_in_a_batch_keeps_the_last(db: Database) -> None:
    sid = _symbol(db)
    ts = np.array([T0 + 60, T0, T0 + 60], dtype=np.int64)
    o = np.array([1.0, 2.0, 3.0])
    _write(db, sid, BarBatch("AAPL", Timeframe.m1, "alpha", ts, o, o, o, o, o))
    with db.read() as conn:
        got = read_bars(conn, sid, "m1", T0, END)
    assert got.ts.tolist() == [T0, T0 + 60] and got.open.tolist() == [2.0, 3.0]


def test_values_round_trip_exactly(db: Database) -> None:
    sid = _symbol(db)
    rng = np.random.default_rng(3)
    n = 2_500
    special = np.array([0.1 + 0.2, 1e-300, 1e300, 5e-324, 123456789.123456789, np.pi, 2.0**53 + 1, 7.0])
    # No zeros: SQLite stores an integral float as an integer, so -0.0 comes back as 0.0.
    values = np.concatenate(
        [special, rng.standard_normal(n - len(special)) * 10.0 ** rng.integers(-8, 8, n - 8)]
    )
    ts = T0 + 60 * np.arange(n, dtype=np.int64)
    trades = rng.integers(0, 2**62, n)
    prices = (values, values * 3, values / 7, -values, np.abs(values), values + 1e-9)
    batch = BarBatch("AAPL", Timeframe.m1, "alpha", ts, *prices, trades)
    _write(db, sid, batch)
    with db.read() as conn:
        got = read_bars(conn, sid, "m1", T0, END)
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        assert getattr(got, col).dtype == np.float64
        assert getattr(got, col).view(np.int64).tolist() == getattr(batch, col).view(np.int64).tolist(), col
    assert got.trade_count.tolist() == trades.tolist()


def test_read_takes_one_source_per_session(db: Database) -> None:
    """No bar-by-bar splice (formerly: historical first, then the latest fetch per ts)."""
    sid = _symbol(db)
    ts = np.array([T0, T0 + 60, T0 + 120], dtype=np.int64)  # one New York session

    def batch(value: float, provider: str, keep: slice = slice(None)) -> BarBatch:
        v = np.full(3, value)
        return BarBatch("AAPL", Timeframe.m1, provider, ts, v, v, v, v, v).take(keep)

    _write(db, sid, batch(1.0, "alpha"), layer=Layer.intraday, at=50.0)
    _write(db, sid, batch(2.0, "alpha", slice(0, 2)), layer=Layer.historical, at=10.0)
    _write(db, sid, batch(3.0, "beta", slice(1, 2)), layer=Layer.historical, at=20.0)
    _write(db, sid, batch(9.0, "gamma"), layer=Layer.forecast, at=99.0)
    with db.read() as conn:
        got = read_bars(conn, sid, "m1", T0, END)
        # Historical alpha holds the session (alphabetical without an order): its bars only,
        # not beta's newer T0+60 nor the intraday T0+120 without a historical twin.
        assert got.ts.tolist() == [T0, T0 + 60] and got.close.tolist() == [2.0, 2.0]
        assert got.provider == "alpha" and got.symbol == "AAPL"
        frame = read_bars_frame(conn, sid, "m1", T0, END, precedence=["beta", "alpha"])
        assert frame["provider"].tolist() == ["beta"] and frame["close"].tolist() == [3.0]
        only_alpha = read_bars(conn, sid, "m1", T0, END, provider="alpha")
        assert only_alpha.close.tolist() == [2.0, 2.0] and only_alpha.provider == "alpha"
        intraday = read_bars(conn, sid, "m1", T0, END, layers=["intraday"])
        assert intraday.close.tolist() == [1.0, 1.0, 1.0]
        everything = read_bars(conn, sid, "m1", T0, END, layers=list(Layer))
        assert everything.close.tolist() == [2.0, 2.0]  # forecast never joins a real session
        forecast = read_bars(conn, sid, "m1", T0 + 60, T0 + 120, layers=[Layer.forecast])
        assert forecast.ts.tolist() == [T0 + 60] and forecast.close.tolist() == [9.0]


def test_frame_shape_and_dtypes(db: Database) -> None:
    sid = _symbol(db)
    _write(db, sid, _batch(6))
    with db.read() as conn:
        frame = read_bars_frame(conn, sid, Timeframe.m1, T0 + 60, T0 + 5 * 60)
        empty = read_bars_frame(conn, sid, "1m", END, END + 60)
    assert list(frame.columns) == [
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
        "provider",
        "layer",
        "basis",
    ]
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "ts"
    assert str(frame.index.tz) == "UTC"
    assert frame.index[0] == pd.Timestamp(T0 + 60, unit="s", tz="UTC")
    assert len(frame) == 4
    assert all(frame[c].dtype == np.float64 for c in ("open", "high", "low", "close", "volume", "vwap"))
    assert str(frame["trade_count"].dtype) == "Int64"
    assert frame["trade_count"].isna().tolist() == [True, False, False, False]
    assert frame["vwap"].isna().tolist() == [False, False, True, False]
    assert set(frame["layer"]) == {"historical"} and set(frame["basis"]) == {"raw"}
    assert len(empty) == 0 and list(empty.columns) == list(frame.columns)
    assert isinstance(empty.index, pd.DatetimeIndex) and str(empty.index.tz) == "UTC"


def test_read_accepts_aware_datetimes_and_refuses_bad_ranges(db: Database) -> None:
    sid = _symbol(db)
    _write(db, sid, _batch(3))
    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    with db.read() as conn:
        assert len(read_bars(conn, sid, "m1", start, start + dt.timedelta(minutes=2))) == 2
        with pytest.raises(InvalidInput, match="timezone"):
            read_bars(conn, sid, "m1", start.replace(tzinfo=None), END)
        with pytest.raises(InvalidInput, match="start before end"):
            read_bars(conn, sid, "m1", T0 + 60, T0)
        with pytest.raises(InvalidInput):
            read_bars(conn, sid, "m1", T0, T0)
        with pytest.raises(InvalidInput, match="layers"):
            read_bars(conn, sid, "m1", T0, END, layers=["final"])
        with pytest.raises(InvalidInput, match="timeframe"):
            read_bars(conn, sid, "7m", T0, END)
        with pytest.raises(InvalidInput):
            read_bars(conn, sid, "m1", "2024-01-01", END)
        with pytest.raises(InvalidInput):
            read_bars(conn, sid, "m1", True, END)


def test_count_and_delete(db: Database) -> None:
    sid = _symbol(db)
    other = _symbol(db, "MSFT")
    _write(db, sid, _batch(10))
    _write(db, sid, _batch(10), layer=Layer.intraday)
    _write(db, other, _batch(4))
    with db.write() as conn:
        assert delete_bars(conn, sid, "m1", T0, T0 + 5 * 60, layer="intraday") == 5
    with db.read() as conn:
        assert count_bars(conn) == 24 - 5
        assert count_bars(conn, sid) == 15
        assert count_bars(conn, sid, "m1") == 15
        assert count_bars(conn, sid, "h1") == 0
        assert count_bars(conn, timeframe="1m") == 19
        assert len(read_bars(conn, sid, "m1", T0, END, layers=["intraday"])) == 5


def test_concurrent_writers_of_the_same_rows(db: Database) -> None:
    """A second writer racing the first (PostgreSQL: its fast path hits the unique key) still merges."""
    sid = _symbol(db)
    first_open = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with db.write() as conn:
                upsert_bars(conn, sid, _batch(3_000, base=1.0), layer=Layer.historical, fetched_at=1.0)
                first_open.set()
                release.wait(10)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    assert first_open.wait(10)

    def second() -> None:
        try:
            _write(db, sid, _batch(3_000, base=2.0), at=2.0)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(0.3)  # blocked behind the first transaction (its rows, or SQLite's write lock)
    release.set()
    t.join(10)
    t2.join(10)
    assert errors == []
    with db.read() as conn:
        got = read_bars(conn, sid, "m1", T0, END)
    assert len(got) == 3_000 and got.open[0] == 2.0


def test_symbols_are_created_once(db: Database) -> None:
    with db.write() as conn:
        first = ensure_symbols(conn, ["aapl", "MSFT", "msft"])
        again = ensure_symbols(conn, ["AAPL", "SPY"], calendar="XNYS")
        assert ensure_symbols(conn, []) == {}
    assert set(first) == {"AAPL", "MSFT"}
    assert again["AAPL"] == first["AAPL"] and again["SPY"] not in first.values()
    with db.read() as conn:
        assert symbol_id(conn, "msft") == first["MSFT"]
        assert symbol_id(conn, "NOPE") is None
        assert tickers_by_id(conn, [first["AAPL"], again["SPY"], 999]) == {
            first["AAPL"]: "AAPL",
            again["SPY"]: "SPY",
        }
    with pytest.raises(InvalidInput, match="symbol"), db.write() as conn:
        ensure_symbols(conn, ["GOOD", "BAD SYMBOL"])
    with db.read() as conn:
        assert symbol_id(conn, "GOOD") is None


def test_complete_fresh_batch_round_trips_exactly(db: Database) -> None:
    """3,000 rows with every value present: PostgreSQL's direct binary COPY into ``bars``."""
    sid = _symbol(db)
    n = 3_000
    ts = T0 + 60 * np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(3)
    close = np.round(100 + rng.normal(0, 1, n).cumsum(), 4)
    batch = BarBatch(
        "AAPL",
        Timeframe.m1,
        "polygon",
        ts,
        close - 0.01,
        close + 0.25,
        close - 0.25,
        close,
        rng.integers(1, 10_000, n).astype(np.float64),
        close + 0.001,
        rng.integers(0, 500, n).astype(np.int64),
    )
    assert _write(db, sid, batch, layer=Layer.intraday, at=5.0) == n
    with db.read() as conn:
        got = read_bars(conn, sid, "m1", T0, int(ts[-1]) + 60)
        keys = conn.execute(
            sa.select(bars.c.timeframe, bars.c.provider, bars.c.layer, bars.c.fetched_at).distinct()
        ).all()
    _same(got, batch)
    assert [tuple(k) for k in keys] == [("m1", "polygon", "intraday", 5.0)]
    # The same rows again (no longer a fresh range) merge to the same table.
    first = _table(db)
    assert _write(db, sid, batch, layer=Layer.intraday, at=5.0) == n
    assert _table(db) == first


def test_fresh_batch_with_nulls_takes_the_copy_and_stores_nulls(db: Database) -> None:
    """3,000 rows, some vwap NaN and trade_count -1: SQL NULLs, other values exact."""
    sid = _symbol(db)
    batch = _batch(3_000)
    assert _write(db, sid, batch) == 3_000
    with db.read() as conn:
        got = read_bars(conn, sid, "m1", T0, END)
        null_vwap, null_trades = conn.execute(
            sa.select(
                sa.func.count().filter(bars.c.vwap.is_(None)),
                sa.func.count().filter(bars.c.trade_count.is_(None)),
            )
        ).one()
    _same(got, batch)
    assert null_vwap == int(np.isnan(batch.vwap).sum()) == 1_000
    assert null_trades == int((batch.trade_count == -1).sum()) == 750
