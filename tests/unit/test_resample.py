"""Resampling on hand-made bars with hand-computed answers, across DST and a half day.

All times are written in UTC; the New York time is in the comments.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.resample import bucket_ends, complete_buckets, resample, touched_buckets
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

Row = tuple[int, float, float, float, float, float, float | None, int | None]


def utc(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def xnys() -> TradingCalendar:
    return get_calendar("XNYS")


def rows_of(batch: BarBatch) -> list[tuple[int, float, float, float, float, float, float, int]]:
    return [
        (int(t), float(o), float(h), float(lo), float(c), float(v), float(w), int(n))
        for t, o, h, lo, c, v, w, n in zip(
            batch.ts,
            batch.open,
            batch.high,
            batch.low,
            batch.close,
            batch.volume,
            batch.vwap,
            batch.trade_count,
            strict=True,
        )
    ]


def same(got: list[tuple[int, float, float, float, float, float, float, int]], want: list[Row]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:6] == w[:6]
        assert (math.isnan(g[6]) and w[6] is None) or g[6] == pytest.approx(w[6])
        assert g[7] == (-1 if w[7] is None else w[7])


# 2024-11-29: half day (EST, 09:30-13:00 ET = 14:30-18:00 UTC).
HALF_DAY_M1: list[Row] = [
    (utc("2024-11-29 14:30"), 10.0, 11.0, 9.5, 10.5, 100.0, 10.2, 5),  # 09:30 ET
    (utc("2024-11-29 14:31"), 10.5, 12.0, 10.0, 11.0, 300.0, 11.0, 7),
    (utc("2024-11-29 14:34"), 11.0, 11.5, 10.8, 11.2, 100.0, 11.2, 2),
    (utc("2024-11-29 14:35"), 11.2, 11.4, 11.1, 11.3, 0.0, None, 0),  # no vwap
    (utc("2024-11-29 14:59"), 11.3, 11.6, 11.0, 11.5, 50.0, 11.4, None),  # no trade count
    (utc("2024-11-29 15:00"), 11.5, 11.7, 11.4, 11.6, 20.0, 11.5, 1),  # 10:00 ET
    (utc("2024-11-29 17:59"), 12.0, 12.2, 11.9, 12.1, 10.0, 12.0, 3),  # 12:59 ET, last minute
]


def m1_batch(rows: list[Row]) -> BarBatch:
    return BarBatch.from_rows("AAPL", Timeframe.m1, "test", rows)


def test_m1_to_m5_on_a_half_day(xnys: TradingCalendar) -> None:
    out = resample(m1_batch(HALF_DAY_M1), Timeframe.m5, xnys, provider="test+resample")
    assert out.timeframe == Timeframe.m5
    assert out.provider == "test+resample"
    assert out.symbol == "AAPL"
    same(
        rows_of(out),
        [
            # (100*10.2 + 300*11 + 100*11.2) / 500 = 10.88
            (utc("2024-11-29 14:30"), 10.0, 12.0, 9.5, 11.2, 500.0, 10.88, 14),
            (utc("2024-11-29 14:35"), 11.2, 11.4, 11.1, 11.3, 0.0, None, 0),
            (utc("2024-11-29 14:55"), 11.3, 11.6, 11.0, 11.5, 50.0, 11.4, None),
            (utc("2024-11-29 15:00"), 11.5, 11.7, 11.4, 11.6, 20.0, 11.5, 1),
            (utc("2024-11-29 17:55"), 12.0, 12.2, 11.9, 12.1, 10.0, 12.0, 3),
        ],
    )


def test_m1_to_m15_and_h1_on_a_half_day(xnys: TradingCalendar) -> None:
    m15 = resample(m1_batch(HALF_DAY_M1), Timeframe.m15, xnys, provider="r")
    same(
        rows_of(m15),
        [
            (utc("2024-11-29 14:30"), 10.0, 12.0, 9.5, 11.3, 500.0, None, 14),  # one vwap missing
            (utc("2024-11-29 14:45"), 11.3, 11.6, 11.0, 11.5, 50.0, 11.4, None),
            (utc("2024-11-29 15:00"), 11.5, 11.7, 11.4, 11.6, 20.0, 11.5, 1),
            (utc("2024-11-29 17:45"), 12.0, 12.2, 11.9, 12.1, 10.0, 12.0, 3),
        ],
    )
    h1 = resample(m1_batch(HALF_DAY_M1), Timeframe.h1, xnys, provider="r")
    same(
        rows_of(h1),
        [
            # 09:00 ET bar holds 09:30-09:59 ET.
            (utc("2024-11-29 14:00"), 10.0, 12.0, 9.5, 11.5, 550.0, None, -1),
            (utc("2024-11-29 15:00"), 11.5, 11.7, 11.4, 11.6, 20.0, 11.5, 1),
            (utc("2024-11-29 17:00"), 12.0, 12.2, 11.9, 12.1, 10.0, 12.0, 3),  # 12:00 ET, ends at the close
        ],
    )


def test_unsorted_input_is_sorted_first(xnys: TradingCalendar) -> None:
    shuffled = m1_batch(HALF_DAY_M1).take(np.asarray([3, 0, 6, 2, 5, 1, 4]))
    assert rows_of(resample(shuffled, Timeframe.m5, xnys, provider="r"))[0][:6] == (
        utc("2024-11-29 14:30"),
        10.0,
        12.0,
        9.5,
        11.2,
        500.0,
    )


# m15 bars on Friday 2024-03-08 (EST, UTC-5) and Monday 2024-03-11 (EDT, UTC-4).
DST_M15: list[Row] = [
    (utc("2024-03-08 14:30"), 1.0, 2.0, 0.5, 1.5, 10.0, 1.2, 1),  # 09:30 EST
    (utc("2024-03-08 14:45"), 1.5, 3.0, 1.4, 2.5, 30.0, 2.0, 2),  # 09:45 EST
    (utc("2024-03-08 17:00"), 2.5, 2.6, 2.4, 2.45, 5.0, 2.5, 1),  # 12:00 EST
    (utc("2024-03-11 13:30"), 3.0, 3.5, 2.9, 3.2, 10.0, 3.1, 1),  # 09:30 EDT
    (utc("2024-03-11 15:45"), 3.2, 3.3, 3.0, 3.1, 10.0, 3.2, 1),  # 11:45 EDT
    (utc("2024-03-11 16:00"), 3.1, 3.9, 3.1, 3.8, 20.0, 3.5, 4),  # 12:00 EDT
]


def test_m15_to_h1_across_spring_forward(xnys: TradingCalendar) -> None:
    batch = BarBatch.from_rows("AAPL", Timeframe.m15, "t", DST_M15)
    same(
        rows_of(resample(batch, Timeframe.h1, xnys, provider="r")),
        [
            (utc("2024-03-08 14:00"), 1.0, 3.0, 0.5, 2.5, 40.0, 1.8, 3),  # (12 + 60) / 40
            (utc("2024-03-08 17:00"), 2.5, 2.6, 2.4, 2.45, 5.0, 2.5, 1),
            (utc("2024-03-11 13:00"), 3.0, 3.5, 2.9, 3.2, 10.0, 3.1, 1),
            (utc("2024-03-11 15:00"), 3.2, 3.3, 3.0, 3.1, 10.0, 3.2, 1),
            (utc("2024-03-11 16:00"), 3.1, 3.9, 3.1, 3.8, 20.0, 3.5, 4),
        ],
    )


def test_m15_to_h4_buckets_on_the_new_york_clock(xnys: TradingCalendar) -> None:
    batch = BarBatch.from_rows("AAPL", Timeframe.m15, "t", DST_M15)
    same(
        rows_of(resample(batch, Timeframe.h4, xnys, provider="r")),
        [
            (utc("2024-03-08 13:00"), 1.0, 3.0, 0.5, 2.5, 40.0, 1.8, 3),  # 08:00 EST
            (utc("2024-03-08 17:00"), 2.5, 2.6, 2.4, 2.45, 5.0, 2.5, 1),  # 12:00 EST
            (utc("2024-03-11 12:00"), 3.0, 3.5, 2.9, 3.1, 20.0, 3.15, 2),  # 08:00 EDT
            (utc("2024-03-11 16:00"), 3.1, 3.9, 3.1, 3.8, 20.0, 3.5, 4),  # 12:00 EDT
        ],
    )


def test_d1_to_w1_across_fall_back(xnys: TradingCalendar) -> None:
    days = [
        ("2024-10-28 04:00", 10.0, 11.0, 9.0, 10.5, 100.0),
        ("2024-10-29 04:00", 10.5, 12.0, 10.0, 11.0, 100.0),
        ("2024-10-30 04:00", 11.0, 11.5, 8.0, 9.0, 100.0),
        ("2024-10-31 04:00", 9.0, 10.0, 8.5, 9.5, 100.0),
        ("2024-11-01 04:00", 9.5, 10.0, 9.0, 9.8, 100.0),  # last EDT session
        ("2024-11-04 05:00", 9.8, 10.2, 9.7, 10.1, 50.0),  # first EST session
    ]
    rows: list[Row] = [(utc(t), o, h, lo, c, v, None, None) for t, o, h, lo, c, v in days]
    batch = BarBatch.from_rows("AAPL", Timeframe.d1, "t", rows)
    same(
        rows_of(resample(batch, Timeframe.w1, xnys, provider="r")),
        [
            (utc("2024-10-28 04:00"), 10.0, 12.0, 8.0, 9.8, 500.0, None, None),
            (utc("2024-11-04 05:00"), 9.8, 10.2, 9.7, 10.1, 50.0, None, None),
        ],
    )


def test_resample_refuses_a_finer_target_and_passes_empty(xnys: TradingCalendar) -> None:
    with pytest.raises(InvalidInput, match="timeframe: expected a timeframe coarser than h1"):
        resample(BarBatch.empty("X", Timeframe.h1, "t"), Timeframe.m15, xnys, provider="r")
    out = resample(BarBatch.empty("X", Timeframe.m1, "t"), Timeframe.h1, xnys, provider="r")
    assert len(out) == 0
    assert out.timeframe == Timeframe.h1


# -- bucket ranges ----------------------------------------------------------------------------------


def test_bucket_ends(xnys: TradingCalendar) -> None:
    cases = [
        (Timeframe.h1, "2024-07-01 19:00", "2024-07-01 20:00"),
        (Timeframe.h4, "2024-11-03 04:00", "2024-11-03 09:00"),  # 00:00 EDT to 04:00 EST: five hours
        (Timeframe.h4, "2024-03-10 05:00", "2024-03-10 08:00"),  # 00:00 EST to 04:00 EDT: three hours
        (Timeframe.d1, "2024-11-01 04:00", "2024-11-02 04:00"),
        (Timeframe.w1, "2024-10-28 04:00", "2024-11-04 05:00"),
    ]
    for tf, label, end in cases:
        assert bucket_ends(tf, np.asarray([utc(label)]), xnys).tolist() == [utc(end)], tf


def test_touched_buckets(xnys: TradingCalendar) -> None:
    assert touched_buckets(Timeframe.h1, utc("2024-07-01 13:45"), utc("2024-07-01 14:10"), xnys) == (
        utc("2024-07-01 13:00"),
        utc("2024-07-01 15:00"),
    )
    assert touched_buckets(Timeframe.h1, utc("2024-07-01 13:00"), utc("2024-07-01 14:00"), xnys) == (
        utc("2024-07-01 13:00"),
        utc("2024-07-01 14:00"),
    )
    # A one-day d1 slice touches the whole week, across the DST change.
    assert touched_buckets(Timeframe.w1, utc("2024-10-30 04:00"), utc("2024-10-31 04:00"), xnys) == (
        utc("2024-10-28 04:00"),
        utc("2024-11-04 05:00"),
    )
    assert touched_buckets(Timeframe.h4, utc("2024-11-29 17:00"), utc("2024-11-29 18:00"), xnys) == (
        utc("2024-11-29 17:00"),
        utc("2024-11-29 21:00"),
    )
    with pytest.raises(InvalidInput):
        touched_buckets(Timeframe.h1, 10, 10, xnys)


def test_complete_buckets_first_hour_needs_only_the_minutes_after_the_open(xnys: TradingCalendar) -> None:
    label = np.asarray([utc("2024-07-01 13:00")])  # 09:00 EDT, trading 09:30-10:00
    whole = [Interval(utc("2024-07-01 13:30"), utc("2024-07-01 14:00"))]
    late = [Interval(utc("2024-07-01 13:31"), utc("2024-07-01 14:00"))]
    short = [Interval(utc("2024-07-01 13:30"), utc("2024-07-01 13:59"))]
    assert complete_buckets(Timeframe.h1, label, whole, xnys).tolist() == [True]
    assert complete_buckets(Timeframe.h1, label, late, xnys).tolist() == [False]
    assert complete_buckets(Timeframe.h1, label, short, xnys).tolist() == [False]


def test_complete_buckets_half_day_and_extended_hours(xnys: TradingCalendar) -> None:
    # h4 12:00 EST on the half day: only 12:00-13:00 EST trades.
    label = np.asarray([utc("2024-11-29 17:00")])
    cov = [Interval(utc("2024-11-29 17:00"), utc("2024-11-29 18:00"))]
    assert complete_buckets(Timeframe.h4, label, cov, xnys).tolist() == [True]
    # ... but with extended hours the bucket trades until 17:00 EST.
    assert complete_buckets(Timeframe.h4, label, cov, xnys, extended=True).tolist() == [False]
    # 08:00 EDT h1: no regular trading at all (vacuously complete), pre-market in extended hours.
    pre = np.asarray([utc("2024-07-01 12:00")])
    assert complete_buckets(Timeframe.h1, pre, [], xnys).tolist() == [True]
    assert complete_buckets(Timeframe.h1, pre, [], xnys, extended=True).tolist() == [False]
    pre_cov = [Interval(utc("2024-07-01 12:00"), utc("2024-07-01 13:00"))]
    assert complete_buckets(Timeframe.h1, pre, pre_cov, xnys, extended=True).tolist() == [True]


def test_complete_buckets_week_with_a_holiday_and_many_labels(xnys: TradingCalendar) -> None:
    # Week of 2024-06-17: Juneteenth (Wednesday) closed. Coverage of the four sessions is enough.
    sessions = [("2024-06-17", "2024-06-18"), ("2024-06-18", "2024-06-19"), ("2024-06-20", "2024-06-21")]
    cov = [Interval(utc(f"{a} 13:30"), utc(f"{a} 20:00")) for a, _ in sessions]
    friday = [Interval(utc("2024-06-21 13:30"), utc("2024-06-21 20:00"))]
    week = np.asarray([utc("2024-06-17 04:00")])
    assert complete_buckets(Timeframe.w1, week, cov, xnys).tolist() == [False]
    assert complete_buckets(Timeframe.w1, week, cov + friday, xnys).tolist() == [True]
    days = np.asarray([utc(f"2024-06-{d} 04:00") for d in (17, 18, 19, 20, 21)])
    # Coverage may arrive unmerged and out of order.
    assert complete_buckets(Timeframe.d1, days, friday + cov[::-1], xnys).tolist() == [True] * 5
    assert complete_buckets(Timeframe.d1, days, cov, xnys).tolist() == [True, True, True, True, False]
    assert complete_buckets(Timeframe.d1, days[:0], cov, xnys).tolist() == []


# -- properties ------------------------------------------------------------------------------------

EXT_OPEN = utc("2024-11-04 09:00")  # 04:00 EST, the first Monday after the DST change


@st.composite
def minute_bars(draw: st.DrawFn) -> BarBatch:
    minutes = sorted(draw(st.sets(st.integers(0, 16 * 60 - 1), min_size=1, max_size=120)))
    rows: list[Row] = []
    for m in minutes:
        o, c = draw(st.integers(100, 200)), draw(st.integers(100, 200))
        high, low = max(o, c) + draw(st.integers(0, 5)), min(o, c) - draw(st.integers(0, 5))
        vwap = draw(st.none() | st.integers(low, high).map(float))
        trades = draw(st.none() | st.integers(0, 50))
        rows.append((EXT_OPEN + 60 * m, o, high, low, c, float(draw(st.integers(1, 1000))), vwap, trades))
    return BarBatch.from_rows("X", Timeframe.m1, "t", rows)


def assert_same_bars(a: BarBatch, b: BarBatch) -> None:
    assert a.ts.tolist() == b.ts.tolist()
    for col in ("open", "high", "low", "close", "volume"):
        assert getattr(a, col).tolist() == getattr(b, col).tolist(), col
    np.testing.assert_allclose(a.vwap, b.vwap, rtol=1e-12, equal_nan=True)
    assert a.trade_count.tolist() == b.trade_count.tolist()


@settings(max_examples=80, deadline=None)
@given(minute_bars())
def test_resampling_in_steps_equals_resampling_at_once(batch: BarBatch) -> None:
    xnys = get_calendar("XNYS")
    m15 = resample(batch, Timeframe.m15, xnys, provider="r")
    for target in (Timeframe.h1, Timeframe.h4, Timeframe.d1):
        direct = resample(batch, target, xnys, provider="r")
        assert_same_bars(direct, resample(m15, target, xnys, provider="r"))
        assert direct.volume.sum() == batch.volume.sum()
        assert direct.high.max() == batch.high.max()
        assert direct.low.min() == batch.low.min()
        assert xnys.is_aligned(target, direct.ts).all()
    day = resample(batch, Timeframe.d1, xnys, provider="r")
    assert day.ts.tolist() == [utc("2024-11-04 05:00")]  # one New York day, EST
    assert day.open.tolist() == [batch.open[0]]
    assert day.close.tolist() == [batch.close[-1]]
