"""Re-verification rule (domain.verify): due times, session spans, coalescing, bar diffs."""

from __future__ import annotations

import dataclasses

import numpy as np

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.finality import session_final_at
from barfill.domain.timeframes import Timeframe
from barfill.domain.verify import (
    coalesce,
    diff,
    due_at,
    per_session,
    session_span,
    sessions_in,
    values_of,
    verifiable,
)
from barfill.providers.synthetic import SyntheticProvider
from tests.e2e.helpers import ts

CAL = get_calendar("XNYS")
CAPS = dataclasses.replace(SyntheticProvider(calendar=CAL).capabilities, name="polygon")


def _index(date: str) -> int:
    return int(np.searchsorted(CAL.midnights, ts(date) + 6 * 3600)) - 1


def test_due_counts_trading_sessions_not_days() -> None:
    fri = _index("2024-03-08")
    # 3 sessions after Friday Mar 8: Mon 11, Tue 12, Wed 13; due once Wednesday is final.
    assert due_at(CAPS, CAL, fri, 3) == session_final_at(CAPS, CAL, _index("2024-03-13"))
    assert due_at(CAPS, CAL, fri, 0) == session_final_at(CAPS, CAL, fri)


def test_a_session_span_holds_its_d1_label_and_every_extended_bar() -> None:
    i = _index("2024-03-12")
    lo, hi = session_span(CAL, i, i)
    assert lo == int(CAL.midnights[i]) and hi == int(CAL.ext_closes[i])
    assert list(sessions_in(CAL, lo, hi)) == [i]
    labels = CAL.bar_opens(Timeframe.m15, lo, hi, extended=True)
    assert len(labels) and labels.min() >= lo and labels.max() < hi


def test_coalesce_joins_consecutive_sessions_within_a_page() -> None:
    assert coalesce([5, 3, 4, 8, 9, 11], lambda a, b: True) == [(3, 5), (8, 9), (11, 11)]
    assert coalesce([1, 2, 3, 4], lambda a, b: b - a < 2) == [(1, 2), (3, 4)]


def test_w1_is_not_verified() -> None:
    assert verifiable(Timeframe.d1) and verifiable(Timeframe.m1) and not verifiable(Timeframe.w1)


def _batch(rows: list[tuple[int, float, float]]) -> BarBatch:
    return BarBatch.from_rows(
        "X", Timeframe.m15, "p", [(t, c, c + 1, c - 1, c, v, None, None) for t, c, v in rows]
    )


def test_diff_finds_changed_added_and_removed_bars_only() -> None:
    old = _batch([(0, 10.0, 100.0), (900, 11.0, 100.0), (1800, 12.0, 100.0), (2700, 13.0, 100.0)])
    new = _batch([(0, 10.0, 100.0), (900, 11.5, 100.0), (2700, 13.0, 150.0), (3600, 14.0, 100.0)])
    d = diff(old, new)
    assert new.ts[d.changed_new].tolist() == [900, 2700]
    assert old.ts[d.changed_old].tolist() == [900, 2700]
    assert new.ts[d.added].tolist() == [3600]
    assert old.ts[d.removed].tolist() == [1800]
    assert new.ts[d.written()].tolist() == [900, 2700, 3600]
    assert len(d) == 4
    assert values_of(new, 1) == {
        "open": 11.5,
        "high": 12.5,
        "low": 10.5,
        "close": 11.5,
        "volume": 100.0,
        "vwap": None,
        "trade_count": None,
    }


def test_identical_bars_with_unknown_vwap_are_unchanged() -> None:
    a = _batch([(0, 10.0, 100.0), (900, 11.0, 100.0)])
    assert len(diff(a, a)) == 0


def test_corrections_are_counted_per_session() -> None:
    fri, mon = _index("2024-03-08"), _index("2024-03-11")
    got = per_session(CAL, [ts("2024-03-08T15:00"), ts("2024-03-08T16:00"), ts("2024-03-11T15:00")])
    assert got == {int(CAL.midnights[fri]): 2, int(CAL.midnights[mon]): 1}
