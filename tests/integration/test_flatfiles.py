"""File providers over real files in tmp_path: Polygon's flat-file layout, generic CSV and Parquet."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, NotPublishedYet, NotSupported, ProviderError
from barfill.ports import Provider
from barfill.providers.flatfiles import FlatFileProvider, GenericFileProvider

CAL = get_calendar("XNYS")
NOW = 4_000_000_000.0
M1, H1, D1 = Timeframe.m1, Timeframe.h1, Timeframe.d1
HEADER = "ticker,volume,open,close,high,low,window_start,transactions"


def ts(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").timestamp())


def ns(text: str) -> int:
    return ts(text) * 1_000_000_000


def write_day(root: Path, kind: str, date: str, rows: list[str], *, gz: bool = True) -> Path:
    y, m, _ = date.split("-")
    folder = root / "us_stocks_sip" / kind / y / m
    folder.mkdir(parents=True, exist_ok=True)
    body = "\n".join([HEADER, *rows]) + "\n"
    if gz:
        path = folder / f"{date}.csv.gz"
        path.write_bytes(gzip.compress(body.encode()))
    else:
        path = folder / f"{date}.csv"
        path.write_text(body)
    return path


@pytest.fixture
def polygon_root(tmp_path: Path) -> Path:
    # Tuesday 2024-03-12 (EDT) as .csv.gz, Wednesday 2024-03-13 as plain .csv.
    write_day(
        tmp_path,
        "minute_aggs_v1",
        "2024-03-12",
        [
            f"AAPL,1200,172.5,172.61,172.7,172.4,{ns('2024-03-12 08:00')},31",  # 04:00 pre-market
            f"AAPL,5000,173.0,173.2,173.3,172.9,{ns('2024-03-12 13:30')},120",
            f"MSFT,800,405.1,405.3,405.4,405.0,{ns('2024-03-12 13:30')},40",
            f"AAPL,5000,173.0,173.2,173.3,172.9,{ns('2024-03-12 13:30')},120",  # duplicate row
            f"AAPL,4100,173.2,173.1,173.25,173.0,{ns('2024-03-12 13:31')},99",
            f"AAPL,2000,174.0,174.1,174.2,173.9,{ns('2024-03-12 19:59')},50",
        ],
    )
    write_day(
        tmp_path,
        "minute_aggs_v1",
        "2024-03-13",
        [f"AAPL,3000,174.5,174.4,174.6,174.3,{ns('2024-03-13 13:30')},70"],
        gz=False,
    )
    # The 13th is stamped 00:00 UTC (19:00 New York the day before): the file's date wins.
    for date, stamp, o in (("2024-03-12", "04:00", 173.0), ("2024-03-13", "00:00", 174.5)):
        midnight_ny = ns(f"{date} {stamp}")
        write_day(
            tmp_path,
            "day_aggs_v1",
            date,
            [
                f"AAPL,9000000,{o},{o + 1},{o + 2},{o - 1},{midnight_ny},90000",
                f"AAPL,9000000,{o},{o + 1},{o + 2},{o - 1},{midnight_ny},90000",  # duplicate
                f"MSFT,1000000,405,406,407,404,{midnight_ny},20000",
            ],
        )
    return tmp_path


async def test_polygon_minute_files(polygon_root: Path) -> None:
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: NOW)
    assert isinstance(p, Provider)
    got = await p.fetch(["AAPL", "MSFT", "NVDA"], M1, ts("2024-03-12"), ts("2024-03-14"))
    aapl = got["AAPL"]
    # The 04:00 pre-market minute is dropped: regular session only, like the HTTP adapters.
    expected_ts = [ts("2024-03-12 13:30"), ts("2024-03-12 13:31")]
    expected_ts += [ts("2024-03-12 19:59"), ts("2024-03-13 13:30")]
    assert list(aapl.ts) == expected_ts  # nanoseconds -> seconds, duplicate dropped, both files read
    assert aapl.open[0] == 173.0 and aapl.high[0] == 173.3 and aapl.low[0] == 172.9
    assert aapl.close[0] == 173.2 and aapl.volume[0] == 5000 and aapl.trade_count[0] == 120
    assert np.isnan(aapl.vwap).all()
    assert aapl.provider == "flatfiles" and aapl.timeframe == M1
    assert list(got["MSFT"].ts) == [ts("2024-03-12 13:30")]
    assert len(got["NVDA"]) == 0  # no rows: an empty, covered range
    await p.aclose()


async def test_polygon_minute_files_filter_by_range(polygon_root: Path) -> None:
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: NOW)
    got = await p.fetch(["AAPL"], M1, ts("2024-03-12 13:30"), ts("2024-03-12 13:31"))
    assert list(got["AAPL"].ts) == [ts("2024-03-12 13:30")]


async def test_polygon_day_files_are_stamped_at_local_midnight(polygon_root: Path) -> None:
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: NOW)
    got = await p.fetch(["AAPL", "MSFT"], D1, ts("2024-03-12"), ts("2024-03-14"))
    assert list(got["AAPL"].ts) == [ts("2024-03-12 04:00"), ts("2024-03-13 04:00")]
    assert list(got["AAPL"].close) == [174.0, 175.5]
    assert list(got["MSFT"].ts) == [ts("2024-03-12 04:00"), ts("2024-03-13 04:00")]


async def test_missing_file_for_yesterday_is_retried_an_hour_later(polygon_root: Path) -> None:
    """The next morning, before the day's file is published: retryable, once an hour."""
    next_morning = ts("2024-03-15 11:00")  # 07:00 New York; the 14th closed at 20:00 UTC
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: next_morning)
    with pytest.raises(NotPublishedYet) as e:
        await p.fetch(["AAPL"], M1, ts("2024-03-12"), ts("2024-03-15"))  # no file for the 14th
    assert (e.value.code, e.value.retryable, e.value.retry_after_s) == ("not_published", True, 3600.0)
    assert "2024-03-14.csv.gz" in str(e.value)
    # Four days after its close the file is not coming by itself: permanent (until a cool-down).
    days_later = ts("2024-03-14 20:00") + 4 * 86_400 + 1
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: days_later)
    with pytest.raises(ProviderError) as late:
        await p.fetch(["AAPL"], M1, ts("2024-03-12"), ts("2024-03-15"))
    assert (late.value.code, late.value.retryable) == ("missing_file", False)


async def test_missing_file_for_a_trading_day_is_a_permanent_error(polygon_root: Path) -> None:
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: NOW)
    with pytest.raises(ProviderError) as e:
        await p.fetch(["AAPL"], M1, ts("2024-03-12"), ts("2024-03-15"))  # no file for the 14th
    assert e.value.code == "missing_file" and not e.value.retryable
    assert "2024-03-14.csv.gz" in str(e.value)


async def test_closed_days_need_no_file(polygon_root: Path) -> None:
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: NOW)
    # Saturday and Sunday around nothing: no session, no file expected, nothing returned.
    got = await p.fetch(["AAPL"], M1, ts("2024-03-09 05:00"), ts("2024-03-11 04:00"))
    assert len(got["AAPL"]) == 0


async def test_unsupported_timeframe_and_unfinished_session(polygon_root: Path) -> None:
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: float(ts("2024-03-13 15:00")))
    assert p.capabilities.timeframes == frozenset({M1, D1}) and not p.capabilities.realtime
    with pytest.raises(NotSupported, match="m1 and d1"):
        await p.fetch(["AAPL"], H1, ts("2024-03-12"), ts("2024-03-13"))
    with pytest.raises(NotSupported, match="final"):
        await p.fetch(["AAPL"], M1, ts("2024-03-12"), ts("2024-03-14"))
    got = await p.fetch(["AAPL"], M1, ts("2024-03-12"), ts("2024-03-13"))
    assert len(got["AAPL"]) == 3  # the session's minutes (the pre-market one is filtered)


async def test_a_session_is_served_from_files_once_published_next_morning(polygon_root: Path) -> None:
    # Tuesday 2024-03-12's files appear at 07:00 New York (11:00 UTC) on Wednesday.
    clock = [float(ts("2024-03-13 10:59"))]
    p = FlatFileProvider(polygon_root, calendar=CAL, now=lambda: clock[0])
    assert p.capabilities.published_at_local_s == 86_400 + 7 * 3600
    with pytest.raises(NotSupported, match="published"):
        await p.fetch(["AAPL"], D1, ts("2024-03-12 04:00"), ts("2024-03-13 04:00"))
    clock[0] = float(ts("2024-03-13 11:00"))
    got = await p.fetch(["AAPL"], D1, ts("2024-03-12 04:00"), ts("2024-03-13 04:00"))
    assert list(got["AAPL"].ts) == [ts("2024-03-12 04:00")]


async def test_minute_files_are_cut_to_the_session_on_every_day(tmp_path: Path) -> None:
    """Issue 7 item 8: pre/post-market minutes were kept on interior days only."""
    days = ["2024-03-11", "2024-03-12", "2024-03-13"]  # first, interior, last day of the request
    for day in days:
        write_day(
            tmp_path,
            "minute_aggs_v1",
            day,
            [
                f"AAPL,100,10,10,10,10,{ns(f'{day} 08:00')},1",  # 04:00 EDT pre-market
                f"AAPL,100,10,10,10,10,{ns(f'{day} 13:29')},1",  # 09:29: one minute before the open
                f"AAPL,100,10,10,10,10,{ns(f'{day} 13:30')},1",  # 09:30: the open
                f"AAPL,100,10,10,10,10,{ns(f'{day} 19:59')},1",  # 15:59: the last regular minute
                f"AAPL,100,10,10,10,10,{ns(f'{day} 20:00')},1",  # 16:00: post-market
                f"AAPL,100,10,10,10,10,{ns(f'{day} 23:59')},1",  # 19:59: post-market
            ],
        )
    p = FlatFileProvider(tmp_path, calendar=CAL, now=lambda: NOW)
    # The request spans the extended hours of all three days, as the planner asks.
    got = await p.fetch(["AAPL"], M1, ts("2024-03-11 08:00"), ts("2024-03-14 00:00"))
    assert list(got["AAPL"].ts) == [ts(f"{d} {t}") for d in days for t in ("13:30", "19:59")]


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "us_stocks_sip" / "minute_aggs_v1" / "2024" / "03"
    folder.mkdir(parents=True)
    (folder / "2024-03-12.csv.gz").write_bytes(b"not gzip at all")
    p = FlatFileProvider(tmp_path, calendar=CAL, now=lambda: NOW)
    with pytest.raises(ProviderError) as e:
        p._readers[M1].read(["AAPL"], ts("2024-03-12 13:00"), ts("2024-03-12 14:00"))
    assert e.value.code == "bad_file" and "2024-03-12.csv.gz" in str(e.value)


async def test_generic_csv_per_symbol_with_millisecond_stamps(tmp_path: Path) -> None:
    (tmp_path / "AAPL.csv").write_text(
        "Time,O,H,L,C,Vol,VWAP\n"
        f"{ts('2024-03-12 14:00') * 1000},1,2,0.5,1.5,100,1.2\n"
        f"{ts('2024-03-12 13:00') * 1000},1,2,0.5,1.5,100,1.2\n"
        f"{ts('2024-03-12 13:00') * 1000},9,9,9,9,9,9\n"  # conflicting duplicate: the first one wins
    )
    p = GenericFileProvider(
        str(tmp_path / "{symbol}.csv"),
        {"ts": "Time", "open": "O", "high": "H", "low": "L", "close": "C", "volume": "Vol", "vwap": "VWAP"},
        "ms",
        H1,
        calendar=CAL,
        name="mycsv",
        now=lambda: NOW,
    )
    assert p.capabilities.max_symbols == 1 and p.capabilities.timeframes == frozenset({H1})
    got = await p.fetch(["AAPL"], H1, ts("2024-03-12"), ts("2024-03-13"))
    bars = got["AAPL"]
    assert list(bars.ts) == [ts("2024-03-12 13:00"), ts("2024-03-12 14:00")]
    assert list(bars.open) == [1.0, 1.0] and list(bars.vwap) == [1.2, 1.2]
    assert list(bars.trade_count) == [-1, -1]  # not in the file
    with pytest.raises(NotSupported, match="MSFT.csv"):
        await p.fetch(["MSFT"], H1, ts("2024-03-12"), ts("2024-03-13"))
    with pytest.raises(NotSupported, match="h1 bars only"):
        await p.fetch(["AAPL"], D1, ts("2024-03-12"), ts("2024-03-13"))


async def test_generic_parquet_daily_with_utc_midnight_dates(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "sym": ["AAPL", "AAPL", "MSFT", "AAPL"],
            "day": [ts("2024-03-08"), ts("2024-03-11"), ts("2024-03-11"), ts("2024-03-12")],
            "o": [1.0, 2.0, 3.0, 4.0],
            "h": [1.5, 2.5, 3.5, 4.5],
            "l": [0.5, 1.5, 2.5, 3.5],
            "c": [1.2, 2.2, 3.2, 4.2],
            "v": [10, 20, 30, 40],
            "n": [1, 2, 3, 4],
        }
    )
    path = tmp_path / "daily.parquet"
    frame.write_parquet(path)
    p = GenericFileProvider(
        str(path),
        {
            "symbol": "sym",
            "ts": "day",
            "open": "o",
            "high": "h",
            "low": "l",
            "close": "c",
            "volume": "v",
            "trade_count": "n",
        },
        "s",
        D1,
        calendar=CAL,
        now=lambda: NOW,
    )
    got = await p.fetch(["AAPL", "MSFT"], D1, ts("2024-03-08"), ts("2024-03-12 04:00"))
    # 00:00 UTC dates become 00:00 New York of the same date (EST before 03-10, EDT after).
    assert list(got["AAPL"].ts) == [ts("2024-03-08 05:00"), ts("2024-03-11 04:00")]
    assert list(got["AAPL"].trade_count) == [1, 2]
    assert list(got["MSFT"].close) == [3.2]


async def test_generic_parquet_timestamp_column_per_date(tmp_path: Path) -> None:
    for date in ("2024-03-12", "2024-03-13"):
        frame = pd.DataFrame(
            {
                "symbol": ["AAPL", "AAPL"],
                "time": pd.to_datetime([f"{date} 13:30", f"{date} 13:35"], utc=True).as_unit("us"),
                "open": [1.0, 2.0],
                "high": [1.0, 2.0],
                "low": [1.0, 2.0],
                "close": [1.0, 2.0],
                "volume": [5.0, 6.0],
            }
        )
        (tmp_path / "m5").mkdir(exist_ok=True)
        frame.to_parquet(tmp_path / "m5" / f"{date.replace('-', '')}.parquet")
    cmap = {c: c for c in ("symbol", "open", "high", "low", "close", "volume")} | {"ts": "time"}
    p = GenericFileProvider(
        str(tmp_path / "m5" / "{year}{month:02d}{day:02d}.parquet"),
        cmap,
        "ns",  # ignored for a timestamp column
        Timeframe.m5,
        calendar=CAL,
        now=lambda: NOW,
    )
    got = await p.fetch(["AAPL"], Timeframe.m5, ts("2024-03-12"), ts("2024-03-14"))
    assert list(got["AAPL"].ts) == [
        ts("2024-03-12 13:30"),
        ts("2024-03-12 13:35"),
        ts("2024-03-13 13:30"),
        ts("2024-03-13 13:35"),
    ]
    with pytest.raises(ProviderError, match="20240314.parquet"):
        await p.fetch(["AAPL"], Timeframe.m5, ts("2024-03-14"), ts("2024-03-15"))


def test_generic_configuration_errors_name_the_field(tmp_path: Path) -> None:
    good = {"ts": "t", "open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}
    with pytest.raises(InvalidInput, match="column_map"):
        GenericFileProvider(str(tmp_path / "x.csv"), good, "s", H1)  # no symbol anywhere
    with pytest.raises(InvalidInput, match="column_map"):
        GenericFileProvider(str(tmp_path / "{symbol}.csv"), {"ts": "t"}, "s", H1)
    with pytest.raises(InvalidInput, match="path_pattern"):
        GenericFileProvider(str(tmp_path / "{ticker}.csv"), good, "s", H1)
    with pytest.raises(InvalidInput, match="ts_unit"):
        GenericFileProvider(str(tmp_path / "{symbol}.csv"), good, "minutes", H1)  # type: ignore[arg-type]
