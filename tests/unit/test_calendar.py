"""Calendar ground truth: known facts about XNYS and 24/7, as hard values (UTC unless said)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput


def utc(text: str) -> int:
    """``YYYY-MM-DD HH:MM`` in UTC, as Unix seconds."""
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())


def day(date: str) -> tuple[int, int]:
    """05:00 UTC to 05:00 UTC: the New York day (01:00-01:00 in summer), clear of the night before."""
    return utc(f"{date} 05:00"), utc(f"{date} 05:00") + 86_400


@pytest.fixture(scope="module")
def xnys() -> TradingCalendar:
    return get_calendar("XNYS")


@pytest.fixture(scope="module")
def crypto() -> TradingCalendar:
    return get_calendar("24/7")


@pytest.mark.parametrize(
    "date",
    [
        "2025-01-09",  # national day of mourning (President Carter)
        "2024-06-19",  # Juneteenth
        "2024-07-04",
        "2024-12-25",
        "2024-03-09",  # Saturday
    ],
)
def test_closed_days_have_no_trading_time(xnys: TradingCalendar, date: str) -> None:
    assert xnys.trading_intervals(*day(date)) == []
    assert xnys.trading_intervals(*day(date), extended=True) == []
    assert xnys.session_at(utc(f"{date} 16:00")) is None


def test_regular_session_in_winter_and_summer(xnys: TradingCalendar) -> None:
    assert xnys.trading_intervals(*day("2025-01-10")) == [
        Interval(utc("2025-01-10 14:30"), utc("2025-01-10 21:00"))
    ]
    assert xnys.trading_intervals(*day("2024-06-18")) == [
        Interval(utc("2024-06-18 13:30"), utc("2024-06-18 20:00"))
    ]


def test_half_day_after_thanksgiving_closes_at_1800_utc(xnys: TradingCalendar) -> None:
    assert xnys.trading_intervals(*day("2024-11-29")) == [
        Interval(utc("2024-11-29 14:30"), utc("2024-11-29 18:00"))
    ]
    # Extended hours: 04:00 ET to four hours after the early close (17:00 ET).
    assert xnys.trading_intervals(*day("2024-11-29"), extended=True) == [
        Interval(utc("2024-11-29 09:00"), utc("2024-11-29 22:00"))
    ]
    i = xnys.session_at(utc("2024-11-29 15:00"))
    assert i is not None
    assert xnys.bars_per_session(Timeframe.m1, i, i + 1).tolist() == [210]
    assert xnys.bars_per_session(Timeframe.h1, i, i + 1).tolist() == [4]  # 09:00 10:00 11:00 12:00 ET


def test_bars_per_regular_session(xnys: TradingCalendar) -> None:
    i = xnys.session_at(utc("2024-07-01 15:00"))
    assert i is not None
    got = {tf: int(xnys.bars_per_session(tf, i, i + 1)[0]) for tf in Timeframe}
    assert got == {
        Timeframe.m1: 390,
        Timeframe.m5: 78,
        Timeframe.m15: 26,
        Timeframe.m30: 13,
        Timeframe.h1: 7,  # 09:00 ... 15:00 ET
        Timeframe.h4: 2,  # 08:00 and 12:00 ET
        Timeframe.d1: 1,
        Timeframe.w1: 1,
    }
    assert int(xnys.bars_per_session(Timeframe.m1, i, i + 1, extended=True)[0]) == 960


def test_2024_has_252_sessions(xnys: TradingCalendar) -> None:
    assert len(xnys.sessions(utc("2024-01-01 00:00"), utc("2025-01-01 00:00"))) == 252


def test_h1_labels_around_spring_forward(xnys: TradingCalendar) -> None:
    # Friday 2024-03-08 is EST (UTC-5), Monday 2024-03-11 is EDT (UTC-4): labels stay 09:00-15:00 ET.
    friday = xnys.bar_opens(Timeframe.h1, *day("2024-03-08"))
    monday = xnys.bar_opens(Timeframe.h1, *day("2024-03-11"))
    assert friday.tolist() == [utc(f"2024-03-08 {h:02d}:00") for h in range(14, 21)]
    assert monday.tolist() == [utc(f"2024-03-11 {h:02d}:00") for h in range(13, 20)]


def test_h1_and_h4_buckets_around_fall_back(xnys: TradingCalendar) -> None:
    # 2024-11-01 (EDT) and 2024-11-04 (EST): 09:45 ET falls in the 09:00 ET bar.
    ts = np.asarray([utc("2024-11-01 13:45"), utc("2024-11-04 14:45")])
    assert xnys.bucket(Timeframe.h1, ts).tolist() == [utc("2024-11-01 13:00"), utc("2024-11-04 14:00")]
    assert xnys.bucket(Timeframe.h4, ts).tolist() == [utc("2024-11-01 12:00"), utc("2024-11-04 13:00")]
    # On the night itself 01:30 EDT and 01:30 EST are different h1 bars, both in the 00:00 EDT h4 bar.
    night = np.asarray([utc("2024-11-03 05:30"), utc("2024-11-03 06:30"), utc("2024-11-03 08:30")])
    assert xnys.bucket(Timeframe.h1, night).tolist() == [
        utc("2024-11-03 05:00"),
        utc("2024-11-03 06:00"),
        utc("2024-11-03 08:00"),
    ]
    assert xnys.bucket(Timeframe.h4, night).tolist() == [utc("2024-11-03 04:00")] * 3


def test_d1_labels_are_new_york_midnight(xnys: TradingCalendar) -> None:
    ts = np.asarray([utc("2024-07-01 19:59"), utc("2024-12-02 14:30"), utc("2024-03-10 12:00")])
    assert xnys.bucket(Timeframe.d1, ts).tolist() == [
        utc("2024-07-01 04:00"),
        utc("2024-12-02 05:00"),
        utc("2024-03-10 05:00"),  # spring-forward day: midnight was still EST
    ]
    i = xnys.session_at(utc("2024-07-01 15:00"))
    assert i is not None
    assert int(xnys.midnights[i]) == utc("2024-07-01 04:00")
    assert xnys.bar_opens(Timeframe.d1, *day("2024-07-01")).tolist() == [utc("2024-07-01 04:00")]


def test_w1_labels_are_monday_new_york_midnight(xnys: TradingCalendar) -> None:
    ts = np.asarray([utc("2024-11-01 15:00"), utc("2024-11-03 12:00"), utc("2024-11-04 15:00")])
    assert xnys.bucket(Timeframe.w1, ts).tolist() == [
        utc("2024-10-28 04:00"),
        utc("2024-10-28 04:00"),  # Sunday belongs to the week that began on Monday (EDT)
        utc("2024-11-04 05:00"),
    ]


def test_is_aligned(xnys: TradingCalendar) -> None:
    ts = np.asarray([utc("2024-07-01 13:00"), utc("2024-07-01 13:30"), utc("2024-07-01 12:00")])
    assert xnys.is_aligned(Timeframe.h1, ts).tolist() == [True, False, True]
    assert xnys.is_aligned(Timeframe.h4, ts).tolist() == [False, False, True]


def test_bar_end_clips_to_the_close(xnys: TradingCalendar) -> None:
    labels = np.asarray([utc("2024-07-01 19:00"), utc("2024-11-29 17:00"), utc("2024-07-01 13:00")])
    assert xnys.bar_end(Timeframe.h1, labels).tolist() == [
        utc("2024-07-01 20:00"),
        utc("2024-11-29 18:00"),  # half day
        utc("2024-07-01 14:00"),
    ]


def test_24_7_has_24_h1_bars_a_day(crypto: TradingCalendar) -> None:
    lo, hi = utc("2024-03-10 00:00"), utc("2024-03-11 00:00")
    assert crypto.bar_opens(Timeframe.h1, lo, hi).tolist() == list(range(lo, hi, 3600))
    i = crypto.session_at(lo + 3600)
    assert i is not None
    assert int(crypto.bars_per_session(Timeframe.h1, i, i + 1)[0]) == 24
    assert int(crypto.bars_per_session(Timeframe.m1, i, i + 1)[0]) == 1440
    assert crypto.trading_intervals(lo, lo + 3 * 86_400) == [Interval(lo, lo + 3 * 86_400)]


def test_window_outside_the_calendar_is_refused(xnys: TradingCalendar) -> None:
    with pytest.raises(InvalidInput, match="window: expected dates within the XNYS calendar"):
        xnys.trading_intervals(utc("1990-01-01 00:00"), utc("1990-02-01 00:00"))


def test_unknown_calendar_name() -> None:
    with pytest.raises(InvalidInput, match="calendar"):
        TradingCalendar("NOPE")


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["XNYS", "24/7"]),
    timeframe=st.sampled_from(list(Timeframe)),
    extended=st.booleans(),
    start=st.integers(utc("2023-01-01 00:00"), utc("2025-12-31 00:00")),
    length=st.integers(1, 400 * 86_400),
)
def test_bar_count_is_the_number_of_bar_opens(
    name: str, timeframe: Timeframe, extended: bool, start: int, length: int
) -> None:
    cal = get_calendar(name)
    expected = len(cal.bar_opens(timeframe, start, start + length, extended=extended))
    assert cal.bar_count(timeframe, start, start + length, extended=extended) == expected
