"""validate_bars: each rule on its own, the report format, and drop_forming."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.domain.validate import MAX_EXAMPLES, drop_forming, validate_bars

CAL = get_calendar("XNYS")
NY = ZoneInfo("America/New_York")


def ny(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, tzinfo=NY).timestamp())


OPEN = ny(2024, 3, 11, 9, 30)  # 13:30Z, the first session after DST began
START, END = ny(2024, 3, 11), ny(2024, 3, 12)
LATER = float(ny(2024, 4, 1))


def m5(n: int = 6, **changes: tuple[int, float]) -> BarBatch:
    """``n`` valid m5 bars from the open; ``changes`` sets ``column=(index, value)``."""
    ts = OPEN + 300 * np.arange(n, dtype=np.int64)
    cols = {
        "open": np.full(n, 10.0),
        "high": np.full(n, 11.0),
        "low": np.full(n, 9.0),
        "close": np.full(n, 10.5),
        "volume": np.full(n, 100.0),
        "vwap": np.full(n, 10.2),
    }
    for name, (i, value) in changes.items():
        if name == "ts":
            ts[i] = int(value)
        else:
            cols[name][i] = value
    return BarBatch(
        "AAPL",
        Timeframe.m5,
        "test",
        ts,
        cols["open"],
        cols["high"],
        cols["low"],
        cols["close"],
        cols["volume"],
        cols["vwap"],
    )


def check(batch: BarBatch, **kw: object) -> list[str]:
    args: dict[str, object] = {"start": START, "end": END, "calendar": CAL, "now": LATER} | kw
    return validate_bars(batch, **args)  # type: ignore[arg-type]


def test_valid_batch_and_empty_batch() -> None:
    assert check(m5()) == []
    assert check(BarBatch.empty("AAPL", Timeframe.m5, "test")) == []


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"high": (2, 10.4)}, "high"),  # below close 10.5
        ({"low": (2, 10.1)}, "low"),  # above open 10.0
        ({"high": (2, 8.0), "low": (2, 8.5)}, "high"),
        ({"volume": (2, -1.0)}, "volume"),
        ({"open": (2, float("nan"))}, "finite"),
        ({"close": (2, float("inf"))}, "finite"),
        ({"volume": (2, float("nan"))}, "finite"),
        ({"vwap": (2, float("inf"))}, "finite"),
        ({"low": (2, 0.0)}, "positive"),
        ({"ts": (2, OPEN + 2 * 300 + 60)}, "aligned"),
    ],
)
def test_each_rule_names_the_bar(changes: dict[str, tuple[int, float]], rule: str) -> None:
    batch = m5(6, **changes)
    reasons = check(batch)
    assert reasons, changes
    bad_ts = "2024-03-11T13:40:00Z" if rule != "aligned" else "2024-03-11T13:41:00Z"
    assert any(r.startswith(f"{bad_ts} {rule}:") for r in reasons), reasons


def test_low_above_high_is_reported_as_range() -> None:
    reasons = check(m5(high=(1, 9.0), low=(1, 12.0), open=(1, 10.0), close=(1, 10.0)))
    assert any(" range: " in r for r in reasons)


def test_nan_is_reported_once() -> None:
    reasons = check(m5(high=(0, float("nan"))))
    assert len(reasons) == 1 and " finite: " in reasons[0]


def test_window_is_half_open() -> None:
    batch = m5()
    first, last = int(batch.ts[0]), int(batch.ts[-1])
    assert check(batch, start=first, end=last + 1) == []
    reasons = check(batch, start=first + 1, end=last)
    assert [r.split(" ")[:2] for r in reasons] == [
        ["2024-03-11T13:30:00Z", "window:"],
        ["2024-03-11T13:55:00Z", "window:"],
    ]


def test_duplicates_and_disorder() -> None:
    dup = m5(ts=(3, OPEN + 2 * 300))
    assert any(r.startswith("2024-03-11T13:40:00Z order:") for r in check(dup))
    swapped = m5(ts=(1, OPEN + 2 * 300))
    swapped.ts[2] = OPEN + 300
    assert any(" order: " in r for r in check(swapped))


def test_forming_bar_only_when_final() -> None:
    batch = m5()
    now = float(int(batch.ts[-1]) + 120)  # the last bar has two of its five minutes
    reasons = check(batch, now=now)
    assert reasons == [
        f"2024-03-11T13:55:00Z forming: bar not complete yet (ends after now) (ts={int(batch.ts[-1])})"
    ]
    assert check(batch, now=now, final=False) == []
    assert check(batch, now=float(int(batch.ts[-1]) + 300)) == []  # complete at its end


def test_daily_labels_follow_the_local_midnight() -> None:
    def d1(ts: int) -> BarBatch:
        return BarBatch.from_rows("AAPL", Timeframe.d1, "t", [(ts, 10.0, 11.0, 9.0, 10.5, 1e6, None, None)])

    assert check(d1(ny(2024, 3, 11)), end=END) == []  # 04:00Z after DST
    reasons = check(d1(ny(2024, 3, 11) + 3600), end=END)
    assert any(" aligned: " in r for r in reasons)
    # The session closes at 16:00 New York: a d1 bar is forming until then.
    assert any(" forming: " in r for r in check(d1(START), end=END, now=float(ny(2024, 3, 11, 15))))
    assert check(d1(START), end=END, now=float(ny(2024, 3, 11, 16))) == []


def test_examples_are_capped_per_rule() -> None:
    n = MAX_EXAMPLES + 15
    batch = m5(n)
    batch.volume[:] = -5.0
    reasons = check(batch)
    assert len(reasons) == MAX_EXAMPLES + 1
    assert reasons[-1] == "volume: 15 more bars fail (volume < 0)"


def test_drop_forming_keeps_complete_bars_on_a_half_day() -> None:
    close = ny(2024, 11, 29, 13)
    ts = np.asarray([close - 120, close - 60], dtype=np.int64)
    batch = BarBatch("AAPL", Timeframe.m1, "t", ts, *(np.full(2, x) for x in (10.0, 11.0, 9.0, 10.0, 1.0)))
    assert drop_forming(batch, CAL, now=float(close - 30)).ts.tolist() == [close - 120]
    assert drop_forming(batch, CAL, now=float(close)).ts.tolist() == ts.tolist()
    h1 = BarBatch(
        "AAPL", Timeframe.h1, "t", np.asarray([close - 3600]), *(np.full(1, 10.0) for _ in range(5))
    )
    # The 12:00 h1 bar of a half day is complete at the 13:00 close.
    assert len(drop_forming(h1, CAL, now=float(close))) == 1
    assert len(drop_forming(h1, CAL, now=float(close - 1))) == 0


def test_a_final_batch_holds_no_bar_of_a_session_not_final_yet() -> None:
    """The live-edge rule at validation: bars at or after ``final_until`` could still change."""
    # At 17:00 New York every m5 bar of the session is complete, but the session is final at 20:00.
    at_17 = float(ny(2024, 3, 11, 17))
    assert check(m5(), now=at_17) == []  # a provisional (intraday) batch is fine
    reasons = check(m5(2), now=at_17, final_until=START)
    why = "not_final: bar of a session not final before 2024-03-11T04:00:00Z"
    assert reasons == [
        f"2024-03-11T13:30:00Z {why} (ts={OPEN})",
        f"2024-03-11T13:35:00Z {why} (ts={OPEN + 300})",
    ]
    assert check(m5(), now=float(ny(2024, 3, 11, 20)), final_until=END) == []
