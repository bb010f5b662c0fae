"""The calendar without pandas: schedules kept in a file, time-zone offsets from zoneinfo.

Ground truth is ``exchange_calendars`` and pandas themselves, asked in this
process: the file-backed calendar must agree with them bar for bar.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from barfill.domain import schedules
from barfill.domain.calendar import TradingCalendar
from barfill.domain.schedules import CALENDAR_START, build_schedule, load_schedule
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

TODAY = date(2026, 12, 6)
END = "2027-12-06"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "barfill" / "calendars"


def test_a_schedule_is_built_once_then_read_from_its_file(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_schedule("XNYS", today=TODAY)
    files = list(cache.glob("XNYS-*.npz"))
    assert [f.name for f in files] == [f"XNYS-{CALENDAR_START}-{END}-xcals{xcals.__version__}-f1.npz"]

    def refuse(*_: object) -> None:
        raise AssertionError("built again instead of read from the file")

    monkeypatch.setattr(schedules, "build_schedule", refuse)
    monkeypatch.setattr(schedules, "_build_elsewhere", refuse)
    again = load_schedule("XNYS", today=TODAY)
    assert again.tz == first.tz == "America/New_York"
    assert np.array_equal(again.dates, first.dates)
    assert np.array_equal(again.opens, first.opens) and np.array_equal(again.closes, first.closes)


def test_a_damaged_file_is_rebuilt_and_a_new_day_replaces_the_old_file(cache: Path) -> None:
    load_schedule("XNYS", today=TODAY)
    (path,) = cache.glob("XNYS-*.npz")
    path.write_bytes(b"not a zip")
    assert len(load_schedule("XNYS", today=TODAY).opens) > 6_000
    load_schedule("XNYS", today=date(2026, 12, 7))
    (only,) = cache.glob("*.npz")
    assert "-2027-12-07-" in only.name


def test_the_schedule_matches_exchange_calendars_session_for_session(cache: Path) -> None:
    cal = TradingCalendar("XNYS", schedule=load_schedule("XNYS", today=TODAY))
    truth = xcals.get_calendar("XNYS", start=CALENDAR_START, end=END).schedule
    assert cal.dates.astype(str).tolist() == [d.strftime("%Y-%m-%d") for d in truth.index]
    assert cal.opens.tolist() == [int(t.timestamp()) for t in truth["open"]]
    assert cal.closes.tolist() == [int(t.timestamp()) for t in truth["close"]]
    i = int(np.searchsorted(cal.dates, np.datetime64("2024-11-29")))
    assert int(cal.closes[i]) == int(pd.Timestamp("2024-11-29 13:00", tz="America/New_York").timestamp())


def test_a_helper_process_builds_the_same_schedule(cache: Path) -> None:
    here = build_schedule("XLON", CALENDAR_START, END)
    there = schedules._build_elsewhere("XLON", END)
    assert there is not None
    assert there.name == "XLON" and there.tz == here.tz == "Europe/London"
    assert np.array_equal(there.dates, here.dates)
    assert np.array_equal(there.opens, here.opens) and np.array_equal(there.closes, here.closes)
    with pytest.raises(InvalidInput, match="calendar"):
        schedules._build_elsewhere("NOPE", END)
    assert not list(cache.glob("NOPE*"))


@pytest.mark.parametrize("name", ["XNYS", "XLON", "XASX", "BVMF", "24/7"])
def test_utc_offsets_and_buckets_match_pandas(name: str) -> None:
    cal = TradingCalendar(name)
    rng = np.random.default_rng(7)
    hourly = np.arange(cal.first - 30 * 86_400, cal.last + 30 * 86_400, 3_600, dtype=np.int64)
    # Either side of every change, and far outside the calendar (zoneinfo asked one by one).
    edges = np.concatenate([cal._zone.starts + d for d in (-3_601, -1, 0, 1, 3_600)])
    far = rng.integers(0, 4_102_444_800, 2_000)
    ts = np.concatenate([hourly, edges, far]).astype(np.int64)
    utc = pd.DatetimeIndex(ts.astype("datetime64[s]"), tz="UTC")
    local = utc.tz_convert(cal.tz).tz_localize(None).as_unit("s").asi8
    assert np.array_equal(cal.utc_offset(ts), local - ts)
    # Bucket labels against pandas' own local-clock flooring, across DST changes.
    for tf in (Timeframe.h1, Timeframe.h4, Timeframe.d1):
        floored = pd.DatetimeIndex(local.astype("datetime64[s]")).floor(f"{tf.seconds}s")
        expected = floored.tz_localize(cal.tz, ambiguous="NaT", nonexistent="NaT")
        keep = np.asarray(expected.notna()) & (ts > cal.first) & (ts < cal.last)
        got = cal.bucket(tf, ts[keep])
        assert np.array_equal(got, expected[keep].as_unit("s").asi8), (name, tf)
