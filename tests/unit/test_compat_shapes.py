"""The original backend's shapes and request parsing (pure): thresholds, splits, rounding, aliases."""

from __future__ import annotations

import pytest

from barfill.domain.timeframes import Timeframe
from barfill.server import compat_shapes as shapes
from barfill.server.compat_shapes import CompatError
from barfill.store.compat_reads import ChartBars

HOUR, DAY = 3_600, 86_400
NOW = 1_767_225_600 + 15 * HOUR  # 2026-01-01T15:00:00Z


def _bars(ts: list[int]) -> ChartBars:
    n = len(ts)
    return ChartBars(ts, [1.0] * n, [2.0] * n, [0.5] * n, [1.5] * n, [10.0] * n, ["p"] * n)


@pytest.mark.parametrize(
    ("age_s", "stale", "recent", "age_hours"),
    [
        (0, False, True, 0),
        (4 * HOUR - 1, False, True, 3),
        (4 * HOUR, False, False, 4),
        (24 * HOUR, False, False, 24),
        (24 * HOUR + 1, True, False, 24),
    ],
)
def test_data_quality_thresholds(age_s: int, stale: bool, recent: bool, age_hours: int) -> None:
    newest = NOW - age_s
    q = shapes.data_quality([newest - 10 * DAY, newest], now=NOW)
    assert (q["isStale"], q["hasRecentData"], q["dataAgeHours"]) == (stale, recent, age_hours)
    assert q["historicalDepthDays"] == 10 and q["barCount"] == 2 and q["sufficientForML"] is False


def test_data_quality_without_bars_is_stale_and_ml_needs_250() -> None:
    empty = shapes.data_quality([], now=NOW)
    assert empty["isStale"] is True and empty["barCount"] == 0 and empty["dataAgeHours"] is None
    assert shapes.data_quality(list(range(0, 250 * 60, 60)), now=NOW)["sufficientForML"] is True
    assert shapes.data_quality(list(range(0, 249 * 60, 60)), now=NOW)["sufficientForML"] is False


def test_layers_split_by_utc_date_and_d1_is_all_historical() -> None:
    today = NOW - NOW % DAY
    chart = _bars([today - 2 * HOUR, today - HOUR, today, today + HOUR])
    historical, intraday = shapes.split_layers(chart, Timeframe.h1, {today - 2 * HOUR, today}, now=NOW)
    assert [b["ts"] for b in historical] == ["2025-12-31T22:00:00Z", "2025-12-31T23:00:00Z"]
    assert [b["ts"] for b in intraday] == ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"]
    assert [b["data_status"] for b in historical + intraday] == ["verified", "provisional"] * 2
    assert [b["is_intraday"] for b in historical + intraday] == [False, False, True, True]
    daily = _bars([today - DAY, today])
    hist_d1, intra_d1 = shapes.split_layers(daily, Timeframe.d1, set(), now=NOW)
    assert len(hist_d1) == 2 and intra_d1 == []


def test_layer_provider_is_the_newest_bars_or_none() -> None:
    chart = ChartBars([1, 2], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], ["a", "b"])
    data = [shapes.bar(chart, i, final=True) for i in range(2)]
    assert shapes.layer(data)["provider"] == "b"
    assert shapes.layer([]) == {
        "count": 0,
        "provider": "none",
        "data": [],
        "oldestBar": None,
        "newestBar": None,
    }
    assert shapes.layer(data, provider="ml_forecast")["provider"] == "ml_forecast"


def test_backfill_percent_rounds_half_up_and_is_omitted_without_slices() -> None:
    def pct(done: int, total: int) -> int | None:
        p = shapes.backfill_progress(
            total=total, succeeded=done, running=0, queued=total - done, failed=0, rows_written=0
        )
        return None if p is None else p["progress_percent"]

    assert (pct(1, 8), pct(3, 8), pct(1, 3), pct(2, 3), pct(8, 8)) == (13, 38, 33, 67, 100)
    assert pct(0, 0) is None


@pytest.mark.parametrize(
    ("token", "canonical"),
    [("m15", "m15"), ("15m", "m15"), ("15min", "m15"), ("1H", "h1"), ("hour", "h1"), ("4h", "h4"),
     ("1d", "d1"), ("daily", "d1"), ("1w", "w1"), ("weekly", "w1"), (None, "d1"), ("", "d1")],
)  # fmt: skip
def test_both_timeframe_spellings(token: str | None, canonical: str) -> None:
    assert shapes.parse_timeframe(token).value == canonical


def test_unknown_timeframe_lists_the_valid_ones() -> None:
    with pytest.raises(CompatError) as e:
        shapes.parse_timeframe("2h")
    assert e.value.status == 400 and "Invalid timeframe: 2h" in e.value.message
    assert all(t.value in e.value.message for t in Timeframe)


def test_numbers_clamp_or_refuse() -> None:
    assert shapes.int_field({"pageSize": 5000}, "pageSize", 400, lo=1, hi=950, clamp=True) == 950
    assert shapes.int_field({"pageSize": "0"}, "pageSize", 400, lo=1, hi=950, clamp=True) == 1
    assert shapes.int_field({}, "pageSize", 400, lo=1, hi=950, clamp=True) == 400
    for bad in (7.5, 0, True, "x", [3], float("inf")):
        with pytest.raises(CompatError):
            shapes.int_field({"window_days": bad}, "window_days", 7, lo=1, hi=100)


def test_before_takes_unix_seconds_or_iso() -> None:
    assert shapes.before_field({"before": 1_767_225_600}) == 1_767_225_600
    assert shapes.before_field({"before": "1767225600"}) == 1_767_225_600
    assert shapes.before_field({"before": "2026-01-01T00:00:00Z"}) == 1_767_225_600
    assert shapes.before_field({"before": "2026-01-01T01:00:00+01:00"}) == 1_767_225_600
    assert shapes.before_field({}) is None
    for bad in ("2026-01-01T00:00:00", "soon", -5, 1e300, True):
        with pytest.raises(CompatError):
            shapes.before_field({"before": bad})


def test_ids_are_uuid_shaped_and_keep_the_decimal_id() -> None:
    assert shapes.uuid_of(42) == "00000000-0000-4000-8000-000000000042"


def test_bar_cap_is_950_for_every_timeframe() -> None:
    assert {shapes.bar_cap(tf) for tf in Timeframe} == {950}


def test_a_chart_is_stale_by_age_unless_it_reaches_the_last_close_of_a_closed_market() -> None:
    close = NOW - 3 * HOUR
    h1 = Timeframe.h1

    def stale(newest: int | None, *, market_open: bool) -> bool:
        return shapes.is_stale(newest, h1, now=NOW, market_open=market_open, last_close=close)

    assert stale(None, market_open=False) is True
    assert stale(NOW - 2 * HOUR, market_open=True) is False  # within h1's 2 h
    assert stale(NOW - 2 * HOUR - 1, market_open=True) is True
    assert stale(close - HOUR, market_open=False) is False  # the bar closing at the close is stored
    assert stale(close - 2 * HOUR, market_open=False) is True  # the last bar before the close is missing
