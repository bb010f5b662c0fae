"""The live-edge rule on fixed clocks: regular day, early close, holiday, DST, flat files, weekend."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.finality import (
    Finality,
    classify,
    final_at,
    final_until,
    last_complete_end,
    servable_until,
    split,
)
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe

NY = ZoneInfo("America/New_York")
CAL = get_calendar("XNYS")
TF = Timeframe
HTTP = Capabilities(name="polygon", timeframes=frozenset(Timeframe), page_limit=50_000)
REALTIME = Capabilities(name="alpaca", timeframes=frozenset(Timeframe), page_limit=10_000, realtime=True)
FLAT = Capabilities(
    name="flatfiles",
    timeframes=frozenset({Timeframe.m1, Timeframe.d1}),
    page_limit=1_000_000,
    published_at_local_s=86_400 + 7 * 3600,
)


def ny(day: str, hhmm: str) -> int:
    h, m = (int(x) for x in hhmm.split(":"))
    return int(datetime.combine(date.fromisoformat(day), time(h, m), NY).timestamp())


def midnight(day: str) -> int:
    return ny(day, "00:00")


def session(day: str) -> Interval:
    """The d1 range of one session date: [its midnight, the next calendar day's midnight)."""
    d = date.fromisoformat(day)
    nxt = date.fromordinal(d.toordinal() + 1).isoformat()
    return Interval(midnight(day), midnight(nxt))


# -- a regular Tuesday, 2025-11-25 -----------------------------------------------------------------

TUE = "2025-11-25"


@pytest.mark.parametrize("hhmm", ["09:30", "15:59", "16:00", "19:59"])
def test_regular_session_is_not_final_before_the_extended_close(hhmm: str) -> None:
    now = ny(TUE, hhmm)
    assert final_until(HTTP, CAL, now) == midnight(TUE)
    s = session(TUE)
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, now) is Finality.pending
    assert classify(HTTP, CAL, TF.m15, s.start, ny(TUE, "09:45"), now) is Finality.pending
    # Yesterday is final all day.
    y = session("2025-11-24")
    assert classify(HTTP, CAL, TF.d1, y.start, y.end, now) is Finality.final


def test_regular_session_is_final_at_the_extended_close() -> None:
    now = ny(TUE, "20:00")
    assert final_until(HTTP, CAL, now) == midnight("2025-11-26")
    s = session(TUE)
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, now) is Finality.final
    assert final_at(HTTP, CAL, s.end) == now
    assert final_at(HTTP, CAL, ny(TUE, "09:45")) == now  # any range ending inside the session


@pytest.mark.parametrize(
    ("hhmm", "m15_until", "d1_final"),
    [
        ("09:30", "09:30", False),  # the 09:30 bar is forming: nothing of today is servable
        ("15:59", "15:45", False),
        ("16:00", "16:00", True),  # the day bar is complete at the regular close
        ("19:59", "19:45", True),
    ],
)
def test_realtime_provider_serves_complete_bars_provisionally(
    hhmm: str, m15_until: str, d1_final: bool
) -> None:
    now = ny(TUE, hhmm)
    assert servable_until(REALTIME, CAL, TF.m15, now) == ny(TUE, m15_until)
    s = session(TUE)
    expected = Finality.provisional if d1_final else Finality.pending
    assert classify(REALTIME, CAL, TF.d1, s.start, s.end, now) is expected
    # A non-realtime provider never serves a range that is not final.
    assert servable_until(HTTP, CAL, TF.m15, now) == midnight(TUE)


def test_last_complete_end_never_includes_a_forming_bar() -> None:
    assert last_complete_end(CAL, TF.m15, ny(TUE, "11:07")) == ny(TUE, "11:00")
    assert last_complete_end(CAL, TF.m15, ny(TUE, "11:15")) == ny(TUE, "11:15")
    assert last_complete_end(CAL, TF.h1, ny(TUE, "11:07")) == ny(TUE, "11:00")
    assert last_complete_end(CAL, TF.d1, ny(TUE, "15:59")) == midnight(TUE)
    assert last_complete_end(CAL, TF.d1, ny(TUE, "16:00")) == midnight("2025-11-26")


def test_split_cuts_at_the_boundaries() -> None:
    now = ny(TUE, "11:07")
    window = [Interval(ny("2025-11-24", "09:30"), ny(TUE, "11:00"))]
    parts = split(REALTIME, CAL, TF.m15, window, now)
    assert parts[Finality.final] == [Interval(ny("2025-11-24", "09:30"), midnight(TUE))]
    assert parts[Finality.provisional] == [Interval(midnight(TUE), ny(TUE, "11:00"))]
    assert parts[Finality.pending] == []
    http = split(HTTP, CAL, TF.m15, window, now)
    assert http[Finality.provisional] == []
    assert http[Finality.pending] == [Interval(midnight(TUE), ny(TUE, "11:00"))]


# -- early close, holiday, weekend -----------------------------------------------------------------


def test_early_close_day_is_final_at_17_00() -> None:
    day = "2025-11-28"  # the day after Thanksgiving closes at 13:00
    s = session(day)
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, ny(day, "16:59")) is Finality.pending
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, ny(day, "17:00")) is Finality.final
    assert final_at(HTTP, CAL, s.end) == ny(day, "17:00")
    # Realtime: the day bar is complete at the 13:00 close.
    assert classify(REALTIME, CAL, TF.d1, s.start, s.end, ny(day, "13:00")) is Finality.provisional


def test_holiday_holds_nothing_pending() -> None:
    now = ny("2025-11-27", "12:00")  # Thanksgiving: closed
    assert final_until(HTTP, CAL, now) == midnight("2025-11-28")
    s = session("2025-11-26")
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, now) is Finality.final


def test_weekend_after_friday() -> None:
    fri = "2025-11-21"
    s = session(fri)
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, ny(fri, "19:59")) is Finality.pending
    sat = ny("2025-11-22", "12:00")
    assert final_until(HTTP, CAL, sat) == midnight("2025-11-24")  # Monday: nothing trades in between
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, sat) is Finality.final
    # The w1 bar of that week is final too; next week's is not before its last session.
    week = Interval(midnight("2025-11-17"), midnight("2025-11-24"))
    assert classify(HTTP, CAL, TF.w1, week.start, week.end, sat) is Finality.final
    wed = ny("2025-11-26", "21:00")
    assert final_until(HTTP, CAL, wed, TF.w1) == midnight("2025-11-24")  # floored to the Monday
    assert final_until(HTTP, CAL, wed) == midnight("2025-11-28")


# -- DST weekends ----------------------------------------------------------------------------------


@pytest.mark.parametrize("monday", ["2025-03-10", "2025-11-03"])
def test_dst_weekend_keeps_20_00_local(monday: str) -> None:
    s = session(monday)
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, ny(monday, "19:59")) is Finality.pending
    assert classify(HTTP, CAL, TF.d1, s.start, s.end, ny(monday, "20:00")) is Finality.final
    assert final_at(HTTP, CAL, s.end) == ny(monday, "20:00")


def test_dst_utc_hours_differ_across_the_change() -> None:
    # 20:00 New York is 01:00 UTC before 2025-03-09 and 00:00 UTC after it.
    assert final_at(HTTP, CAL, session("2025-03-07").end) % 86_400 == 3600
    assert final_at(HTTP, CAL, session("2025-03-10").end) % 86_400 == 0
    assert final_at(HTTP, CAL, session("2025-10-31").end) % 86_400 == 0
    assert final_at(HTTP, CAL, session("2025-11-03").end) % 86_400 == 3600


# -- flat files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "published_on"),
    [
        ("2025-11-25", "2025-11-26"),  # Tuesday: Wednesday 07:00
        ("2025-11-21", "2025-11-22"),  # Friday: Saturday 07:00
        ("2025-11-28", "2025-11-29"),  # early close: still the next morning
        ("2025-03-07", "2025-03-08"),  # the Friday before DST starts
        ("2025-10-31", "2025-11-01"),  # the Friday before DST ends
    ],
)
def test_flat_files_are_final_once_published_next_morning(day: str, published_on: str) -> None:
    s = session(day)
    for now in (ny(day, "20:00"), ny(published_on, "06:59")):
        assert classify(FLAT, CAL, TF.d1, s.start, s.end, now) is Finality.pending
        assert classify(HTTP, CAL, TF.d1, s.start, s.end, now) is Finality.final
    assert classify(FLAT, CAL, TF.d1, s.start, s.end, ny(published_on, "07:00")) is Finality.final
    assert final_at(FLAT, CAL, s.end) == ny(published_on, "07:00")


def test_flat_files_boundary_lags_a_day_before_publication() -> None:
    now = ny("2025-11-26", "06:00")
    assert final_until(FLAT, CAL, now) == midnight("2025-11-25")
    assert final_until(HTTP, CAL, now) == midnight("2025-11-26")
    assert final_until(FLAT, CAL, ny("2025-11-26", "07:00")) == midnight("2025-11-26")


def test_final_until_agrees_with_final_at() -> None:
    """``end <= final_until(now)`` iff ``final_at(end) <= now``, for every provider kind and hour."""
    ends = [session(d).end for d in ("2025-11-21", "2025-11-25", "2025-11-26", "2025-11-28", "2025-12-01")]
    ends += [ny("2025-11-25", "10:00"), ny("2025-11-28", "12:45")]
    for caps in (HTTP, REALTIME, FLAT):
        for day in ("2025-11-25", "2025-11-26", "2025-11-27", "2025-11-28", "2025-11-29", "2025-11-30"):
            for hour in range(0, 24):
                now = ny(day, f"{hour:02d}:00")
                bound = final_until(caps, CAL, now)
                for end in ends:
                    assert (end <= bound) == (final_at(caps, CAL, end) <= now), (caps.name, day, hour, end)
