"""The bad-bar rule (domain.badbars): spikes that revert, empty bars in liquid sessions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain.badbars import (
    LIQUID_MEDIAN_VOLUME,
    SPIKE,
    ZERO_VOLUME,
    empty_in_liquid_session,
    flag_reasons,
    spikes,
)


def _flat(n: int, price: float = 100.0) -> np.ndarray:
    return np.full(n, price, dtype=np.float64)


def test_a_100x_one_bar_spike_is_flagged_and_only_it() -> None:
    close = _flat(7)
    close[3] = 10_000.0
    high, low = close + 0.5, close - 0.5
    assert spikes(high, low, close).tolist() == [False, False, False, True, False, False, False]


def test_a_bad_low_print_is_a_spike_too() -> None:
    close = _flat(5)
    low = close - 0.5
    low[2] = 0.5  # 0.005x the neighbours: a decimal error in the low only
    assert spikes(close + 0.5, low, close).tolist() == [False, False, True, False, False]


def test_a_4_to_1_split_step_is_not_flagged() -> None:
    close = np.array([100.0, 101.0, 100.0, 25.0, 25.2, 25.1])
    assert not spikes(close + 0.1, close - 0.1, close).any()


def test_a_20_to_1_split_step_is_not_flagged_either() -> None:
    # Beyond 10x, but it does not revert: the neighbours of each bar at the step disagree.
    close = np.array([200.0, 200.0, 10.0, 10.0])
    assert not spikes(close, close, close).any()


def test_a_9x_excursion_is_not_a_spike() -> None:
    close = np.array([10.0, 10.0, 90.0, 10.0, 10.0])
    assert not spikes(close, close, close).any()


def test_edges_are_never_spikes() -> None:
    close = np.array([10_000.0, 100.0, 100.0, 10_000.0])
    assert not spikes(close, close, close).any()


def test_zero_volume_in_a_liquid_session_only() -> None:
    close = _flat(8)
    volume = np.array([5_000.0, 0.0, 4_000.0, 6_000.0, 20.0, 0.0, 10.0, 30.0])
    sessions = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    got = flag_reasons(close, close, close, volume, sessions)
    assert got.tolist() == [None, ZERO_VOLUME, None, None, None, None, None, None]


def test_zero_volume_outside_regular_hours_and_for_day_bars_is_kept() -> None:
    close = _flat(4)
    volume = np.array([5_000.0, 0.0, 5_000.0, 5_000.0])
    assert flag_reasons(close, close, close, volume, np.array([-1, -1, 3, 3]))[1] is None
    assert flag_reasons(close, close, close, volume, None).tolist() == [None] * 4


def test_a_spike_that_is_also_empty_is_a_spike() -> None:
    close = _flat(5)
    close[2] = 10_000.0
    volume = np.array([5_000.0, 5_000.0, 0.0, 5_000.0, 5_000.0])
    assert flag_reasons(close, close, close, volume, np.zeros(5, dtype=np.int64))[2] == SPIKE


def _per_session(volume: np.ndarray, session: np.ndarray) -> list[bool]:
    """The zero-volume rule spelled out one session at a time (np.median of each)."""
    out = []
    for vol, key in zip(volume.tolist(), session.tolist(), strict=True):
        same = volume[session == key]
        out.append(key >= 0 and vol == 0 and float(np.median(same)) >= LIQUID_MEDIAN_VOLUME)
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-1, 4),
            st.sampled_from([0.0, 0.0, 500.0, 999.0, 1000.0, 1001.0, 5000.0, float("nan")]),
        ),
        max_size=40,
    )
)
def test_the_sessions_medians_taken_at_once_equal_each_sessions_own(rows: list[tuple[int, float]]) -> None:
    rows.sort(key=lambda r: r[0] if r[0] >= 0 else 99)  # sessions in order, out-of-session bars last
    session = np.array([r[0] for r in rows], dtype=np.int64)
    volume = np.array([r[1] for r in rows], dtype=np.float64)
    assert empty_in_liquid_session(volume, session).tolist() == _per_session(volume, session)
