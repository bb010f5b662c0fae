"""Timeframe tokens: canonical values, aliases, durations, and the error a typo gets."""

from __future__ import annotations

import pytest

from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m1", Timeframe.m1),
        ("1m", Timeframe.m1),
        ("5m", Timeframe.m5),
        ("15m", Timeframe.m15),
        ("30m", Timeframe.m30),
        ("1h", Timeframe.h1),
        ("H1", Timeframe.h1),
        (" 4h ", Timeframe.h4),
        ("1D", Timeframe.d1),
        ("d1", Timeframe.d1),
        ("1w", Timeframe.w1),
        ("W1", Timeframe.w1),
    ],
)
def test_parse_accepts_tokens_and_aliases(text: str, expected: Timeframe) -> None:
    assert Timeframe.parse(text) is expected


def test_parse_passes_a_timeframe_through() -> None:
    assert Timeframe.parse(Timeframe.h4) is Timeframe.h4


@pytest.mark.parametrize("bad", ["2h", "h", "", "60m", "1mo", "m 1"])
def test_parse_error_names_field_and_lists_every_valid_token(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Timeframe.parse(bad)
    message = str(caught.value)
    assert message.startswith("timeframe: expected")
    for token in ("m1", "m5", "m15", "m30", "h1", "h4", "d1", "w1", "1m", "1h", "1d", "1w"):
        assert token in message
    assert repr(bad) in message
    assert caught.value.field == "timeframe"


def test_canonical_value_is_the_stored_token() -> None:
    assert [t.value for t in Timeframe] == ["m1", "m5", "m15", "m30", "h1", "h4", "d1", "w1"]


@pytest.mark.parametrize(
    ("tf", "seconds", "intraday"),
    [
        (Timeframe.m1, 60, True),
        (Timeframe.m5, 300, True),
        (Timeframe.m15, 900, True),
        (Timeframe.m30, 1800, True),
        (Timeframe.h1, 3600, True),
        (Timeframe.h4, 14400, True),
        (Timeframe.d1, 86400, False),
        (Timeframe.w1, 604800, False),
    ],
)
def test_durations(tf: Timeframe, seconds: int, intraday: bool) -> None:
    assert tf.seconds == seconds
    assert tf.minutes == seconds // 60
    assert tf.intraday is intraday
