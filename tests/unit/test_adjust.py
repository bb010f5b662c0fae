"""Adjust on read: factors checked bar for bar against hand-computed values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from barfill.domain.actions import ActionKind, CorporateAction, dividend, ex_starts, split, split_ratio
from barfill.domain.adjust import Adjust, adjust_columns, factors, parse_adjust, read_basis
from barfill.domain.bars import Basis
from barfill.errors import InvalidInput

TZ = "America/New_York"
# One bar at 15:00 New York on each of four dates.
DATES = [dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6), dt.date(2024, 3, 7)]
TS = ex_starts(DATES, TZ) + 15 * 3600


def test_ex_start_is_local_midnight() -> None:
    # 2024-03-05 00:00 New York (EST, UTC-5) = 05:00 UTC.
    assert ex_starts([dt.date(2024, 3, 5)], TZ).tolist() == [
        int(dt.datetime(2024, 3, 5, 5, tzinfo=dt.UTC).timestamp())
    ]


def test_split_factors_bar_for_bar() -> None:
    actions = [split("X", dt.date(2024, 3, 5), 4.0), split("X", dt.date(2024, 3, 7), 0.5)]
    price, volume = factors(TS, actions, TZ, Adjust.split_adjusted)
    # Bar 0 is before both (4 * 0.5 = 2), bars 1-2 before the reverse split only, bar 3 after both.
    assert price.tolist() == [1 / 2.0, 1 / 0.5, 1 / 0.5, 1.0]
    assert volume.tolist() == [2.0, 0.5, 0.5, 1.0]


def test_raw_gives_ones() -> None:
    price, volume = factors(TS, [split("X", dt.date(2024, 3, 5), 4.0)], TZ, Adjust.raw)
    assert price.tolist() == volume.tolist() == [1.0] * 4


def test_dividends_adjust_all_not_split() -> None:
    actions = [dividend("X", dt.date(2024, 3, 6), 1.0), split("X", dt.date(2024, 3, 5), 2.0)]
    closes = {dt.date(2024, 3, 6): 50.0}  # raw close of 2024-03-05
    p_split, _ = factors(TS, actions, TZ, Adjust.split_adjusted, closes)
    p_all, v_all = factors(TS, actions, TZ, Adjust.all_adjusted, closes)
    assert p_split.tolist() == [0.5, 1.0, 1.0, 1.0]
    m = 1 - 1.0 / 50.0
    assert p_all.tolist() == pytest.approx([0.5 * m, m, 1.0, 1.0], rel=1e-15)
    assert v_all.tolist() == [2.0, 1.0, 1.0, 1.0]  # dividends never touch volume


def test_dividend_without_reference_close_gives_no_factor() -> None:
    actions = [dividend("X", dt.date(2024, 3, 6), 1.0)]
    price, _ = factors(TS, actions, TZ, Adjust.all_adjusted, {})
    assert price.tolist() == [1.0] * 4


def test_adjust_columns_continuous_across_a_split() -> None:
    # Raw: 400, 404 before a 4:1 split, then 101, 102.
    cols = {
        "ts": TS,
        "open": np.array([400.0, 404.0, 101.0, 102.0]),
        "high": np.array([400.0, 404.0, 101.0, 102.0]),
        "low": np.array([400.0, 404.0, 101.0, 102.0]),
        "close": np.array([400.0, 404.0, 101.0, 102.0]),
        "volume": np.array([10.0, 20.0, 80.0, 90.0]),
        "trade_count": np.array([1, 2, 3, 4]),
    }
    out, basis = adjust_columns(cols, Basis.raw, Adjust.split_adjusted, [split("X", DATES[2], 4.0)], TZ)
    assert basis == Basis.split_adjusted
    assert out["close"].tolist() == [100.0, 101.0, 101.0, 102.0]
    assert out["volume"].tolist() == [40.0, 80.0, 80.0, 90.0]
    assert out["trade_count"].tolist() == [1, 2, 3, 4]
    same, b = adjust_columns(cols, Basis.raw, None, [split("X", DATES[2], 4.0)], TZ)
    assert b == Basis.raw and same["close"].tolist() == [400.0, 404.0, 101.0, 102.0]


def test_adjusted_bars_are_never_converted() -> None:
    cols = {"ts": TS, "close": np.ones(4)}
    out, basis = adjust_columns(cols, Basis.split_adjusted, Adjust.split_adjusted, [], TZ)
    assert basis == Basis.split_adjusted
    for wanted in (Adjust.raw, Adjust.all_adjusted):
        with pytest.raises(InvalidInput, match="adjust"):
            adjust_columns(cols, Basis.split_adjusted, wanted, [], TZ)
    assert read_basis(Adjust.raw, None) == Basis.raw
    with pytest.raises(InvalidInput, match="basis"):
        read_basis(Adjust.raw, "split")


def test_parse_adjust() -> None:
    assert parse_adjust("SPLIT") == Adjust.split_adjusted
    assert parse_adjust(None) is None
    with pytest.raises(InvalidInput, match="adjust: expected raw, split or all"):
        parse_adjust("dividends")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "split", "ratio": 0.0}, "ratio"),
        ({"kind": "split", "ratio": -2.0}, "ratio"),
        ({"kind": "split", "ratio": float("nan")}, "ratio"),
        ({"kind": "split"}, "ratio"),
        ({"kind": "dividend", "cash": -0.1}, "cash"),
        ({"kind": "dividend"}, "cash"),
        ({"kind": "dividend", "cash": 1.0, "ratio": 2.0}, "ratio"),
        ({"kind": "merger", "cash": 1.0}, "kind"),
    ],
)
def test_bad_actions_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{field}: expected"):
        CorporateAction("X", ex_date=dt.date(2024, 1, 2), **kwargs)  # type: ignore[arg-type]


def test_split_ratio() -> None:
    assert split_ratio(1, 4) == 4.0
    assert split_ratio(10, 1) == 0.1
    with pytest.raises(InvalidInput, match="split_from"):
        split_ratio(0, 4)
    assert CorporateAction("X", ActionKind.dividend, dt.date(2024, 1, 2), cash=0.0).cash == 0.0
