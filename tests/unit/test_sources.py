"""One source per range: the pure selection rule (domain/sources.py)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain.bars import Basis, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.sources import (
    Precedence,
    range_labels,
    range_span,
    range_timeframe,
    select_sources,
    source_key,
)
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

PROVIDERS = ["polygon", "alpaca", "tradier", "yahoo", "resample:m1", "resample:m15"]
NATIVE = [p for p in PROVIDERS if not p.startswith("resample:")]

rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 4),  # range
        st.sampled_from(PROVIDERS),
        st.sampled_from([layer.value for layer in Layer]),
        st.sampled_from([b.value for b in Basis]),
        st.floats(0, 100),  # fetched_at
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    rows=rows_strategy,
    order=st.permutations(NATIVE),
    split_at=st.integers(0, len(NATIVE)),
    asked=st.none() | st.sampled_from(list(Basis)),
)
def test_one_source_per_range_by_precedence_and_one_basis(
    rows: list[tuple[int, str, str, str, float]],
    order: list[str],
    split_at: int,
    asked: Basis | None,
) -> None:
    # A partial order: some providers are left out and must rank after, alphabetically.
    prec = Precedence(historical=tuple(order[:split_at]), intraday=tuple(reversed(order[:split_at])))
    ranges = [r[0] for r in rows]
    sel = select_sources(
        ranges,
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        precedence=prec,
        basis=asked,
        fetched_at=[r[4] for r in rows],
    )
    assert len(sel.keep) == len(rows)
    if asked is not None:
        assert sel.basis == asked
    elif rows:
        best = min(source_key(r[1], r[2], prec) for r in rows)
        best_rows = [r for r in rows if source_key(r[1], r[2], prec) == best]
        assert sel.basis == Basis(max(best_rows, key=lambda r: r[4])[3])
    kept_by_range: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for r, keep in zip(rows, sel.keep.tolist(), strict=True):
        if keep:
            assert r[3] == sel.basis  # never two bases in one read
            kept_by_range[r[0]].add((r[1], r[2]))
    for label in set(ranges):
        same_basis = [r for r in rows if r[0] == label and r[3] == sel.basis]
        kept = kept_by_range[label]
        if not same_basis:
            assert not kept
            continue
        assert len(kept) == 1  # never two sources in one range
        (chosen,) = kept
        # Precedence honoured: nothing of the read's basis in this range ranks better.
        assert source_key(chosen[0], chosen[1], prec) == min(source_key(r[1], r[2], prec) for r in same_basis)
        # Every bar of the chosen source in the range is returned, none left out.
        assert all(
            keep
            for r, keep in zip(rows, sel.keep.tolist(), strict=True)
            if r[0] == label and (r[1], r[2]) == chosen and r[3] == sel.basis
        )
    assert set(sel.sources) == set().union(*kept_by_range.values()) if kept_by_range else sel.sources == ()


def test_documented_order() -> None:
    prec = Precedence(historical=("polygon", "alpaca"), intraday=("tradier", "alpaca"))
    sources = [
        ("resample:m15", "intraday"),
        ("zeta", "historical"),
        ("alpaca", "intraday"),
        ("resample:m15", "historical"),
        ("model", "forecast"),
        ("polygon", "intraday"),
        ("resample:m1", "historical"),
        ("alpaca", "historical"),
        ("tradier", "intraday"),
        ("beta", "historical"),
        ("polygon", "historical"),
    ]
    ranked = sorted(sources, key=lambda s: source_key(s[0], s[1], prec))
    assert ranked == [
        ("polygon", "historical"),  # historical native, configured order
        ("alpaca", "historical"),
        ("beta", "historical"),  # not in the order: after, alphabetically
        ("zeta", "historical"),
        ("resample:m1", "historical"),  # historical resampled, finest source first
        ("resample:m15", "historical"),
        ("tradier", "intraday"),  # intraday native, realtime order
        ("alpaca", "intraday"),
        ("polygon", "intraday"),
        ("resample:m15", "intraday"),
        ("model", "forecast"),  # forecast last: only where nothing real exists
    ]


def test_whole_range_from_one_source_even_where_the_best_has_gaps() -> None:
    # Range 7: polygon has 2 of 4 bars, alpaca all 4; polygon's 2 are the answer (no fill-in).
    providers = ["polygon", "polygon", "alpaca", "alpaca", "alpaca", "alpaca", "alpaca"]
    sel = select_sources(
        [7, 7, 7, 7, 7, 7, 8],
        providers,
        ["historical"] * 7,
        ["raw"] * 7,
        precedence=["polygon", "alpaca"],
    )
    assert sel.keep.tolist() == [True, True, False, False, False, False, True]
    assert sel.sources == (("polygon", "historical"), ("alpaca", "historical"))
    assert sel.providers == ("polygon", "alpaca") and sel.basis == Basis.raw


def test_basis_of_the_best_source_excludes_other_bases_even_where_nothing_else_exists() -> None:
    sel = select_sources(
        [1, 2, 2],
        ["yahoo", "polygon", "yahoo"],
        ["historical"] * 3,
        ["split", "raw", "split"],
        precedence=["polygon", "yahoo"],
    )
    # Range 1 has only split-adjusted Yahoo bars: left out, not mixed into a raw read.
    assert sel.basis == Basis.raw and sel.keep.tolist() == [False, True, False]
    asked = select_sources(
        [1, 2, 2],
        ["yahoo", "polygon", "yahoo"],
        ["historical"] * 3,
        ["split", "raw", "split"],
        precedence=["polygon", "yahoo"],
        basis="split",
    )
    assert asked.basis == Basis.split_adjusted and asked.keep.tolist() == [True, False, True]


def test_a_source_whose_basis_changed_reads_its_latest_basis() -> None:
    sel = select_sources(
        [1, 2],
        ["polygon", "polygon"],
        ["historical", "historical"],
        ["raw", "split"],
        fetched_at=[5.0, 9.0],
    )
    assert sel.basis == Basis.split_adjusted and sel.keep.tolist() == [False, True]


def test_empty_and_bad_input() -> None:
    empty = select_sources([], [], [], [])
    assert empty.keep.tolist() == [] and empty.basis is None and empty.sources == ()
    assert select_sources([], [], [], [], basis="all").basis == Basis.all_adjusted
    with pytest.raises(InvalidInput, match="basis"):
        select_sources([1], ["a"], ["historical"], ["raw"], basis="adjusted")
    with pytest.raises(InvalidInput, match="rows"):
        select_sources([1, 2], ["a"], ["historical"], ["raw"])
    with pytest.raises(InvalidInput, match="precedence"):
        Precedence.of("polygon")
    assert Precedence.of(["a", "b"]) == Precedence(("a", "b"), ("a", "b"))
    assert Precedence.of(None) == Precedence()


def test_ranges_are_sessions_and_weeks_on_the_exchange_clock() -> None:
    cal = get_calendar("XNYS")
    tue = 1_710_216_000  # 2024-03-12 00:00 New York (EDT, UTC-4)
    # 09:00 (pre-market part of an h1 bar), 15:00 and 19:00 (post-market) share one session.
    ts = np.array([tue + 9 * 3600, tue + 15 * 3600, tue + 19 * 3600, tue + 86_400 + 9 * 3600])
    assert range_labels(cal, Timeframe.d1, ts).tolist() == [tue, tue, tue, tue + 86_400]
    monday = tue - 86_400
    assert range_labels(cal, Timeframe.w1, ts).tolist() == [monday] * 4
    assert range_timeframe(Timeframe.h1) == Timeframe.d1 and range_timeframe(Timeframe.w1) == Timeframe.w1
    # A partial read widens to whole sessions; "everything" bounds stay as they are.
    assert range_span(cal, Timeframe.d1, tue + 10 * 3600, tue + 11 * 3600) == (tue, tue + 86_400)
    assert range_span(cal, Timeframe.w1, tue + 10 * 3600, tue + 11 * 3600) == (monday, monday + 7 * 86_400)
    assert range_span(cal, Timeframe.d1, 0, 2**62) == (0, 2**62)
