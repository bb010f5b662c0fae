"""One parser for user times: a date is the exchange's date, and a date-only end includes that day."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.service.ensure import Window, parse_time

NY = "America/New_York"


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("value", "tz", "end", "expected"),
    [
        ("2024-12-31", NY, False, utc("2024-12-31T05:00")),  # 00:00 New York (EST)
        ("2024-12-31", NY, True, utc("2025-01-01T05:00")),  # inclusive: 00:00 of the next date
        (date(2024, 12, 31), NY, True, utc("2025-01-01T05:00")),
        ("2024-07-04", NY, True, utc("2024-07-05T04:00")),  # EDT
        ("2024-03-09", NY, True, utc("2024-03-10T05:00")),  # the night DST starts: still EST at 00:00
        ("2024-12-31", "Asia/Tokyo", True, utc("2024-12-31T15:00")),
        ("2024-12-31", "UTC", True, utc("2025-01-01T00:00")),
        ("2024-12-31T00:00:00Z", NY, True, utc("2024-12-31T00:00")),  # an ISO time stays exclusive
        ("2024-12-31T16:00-05:00", NY, True, utc("2024-12-31T21:00")),
        (datetime(2024, 12, 31, tzinfo=UTC), NY, True, utc("2024-12-31T00:00")),
        (1_735_603_200, NY, True, 1_735_603_200),
    ],
)
def test_dates_are_exchange_dates_and_a_date_end_is_inclusive(
    value: object, tz: str, end: bool, expected: int
) -> None:
    assert parse_time(value, "end" if end else "start", tz=tz, end=end) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["2024-13-01", "2024-12-31T10:00", "tomorrow", True])
def test_bad_times_name_the_field(value: object) -> None:
    with pytest.raises(InvalidInput, match="^end:"):
        parse_time(value, "end", tz=NY, end=True)  # type: ignore[arg-type]


def test_a_one_day_window_is_that_whole_day() -> None:
    w = Window.parse(Timeframe.h1, start="2024-12-31", end="2024-12-31", tz=NY)
    assert (w.start, w.end) == (utc("2024-12-31T05:00"), utc("2025-01-01T05:00"))
    with pytest.raises(InvalidInput, match="^end:"):
        Window.parse(Timeframe.h1, start="2024-12-31", end="2024-12-30", tz=NY)
