"""The sliding log of grants: pure arithmetic, on a simulated clock, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain import sliding_log
from barfill.domain.capabilities import RateLimit
from barfill.domain.sliding_log import Log
from tests.integration.providers.servers import most_in_any_window

T0 = 1_700_000_000.0


def _greedy(log: Log, limit: RateLimit, count: int, now: float = T0) -> list[float]:
    """Grant instants of ``count`` requests, each asked for as soon as the log allows."""
    grants: list[float] = []
    while len(grants) < count:
        d, _ = log.take(now, limit)
        if d.granted:
            grants.append(now)
        else:
            assert d.wait_s > 0
            now += d.wait_s
    return grants


def test_the_first_n_go_a_stagger_apart_then_n_per_window() -> None:
    limit = RateLimit(requests=4, period_s=1.0)
    window, g = sliding_log.window_s(limit), sliding_log.stagger_s(limit)
    assert (window, g) == pytest.approx((1.03, 1.03 / 4 / 2))
    grants = _greedy(Log({}), limit, 12)
    for burst in range(3):
        expected = [T0 + burst * window + i * g for i in range(4)]
        assert grants[4 * burst : 4 * burst + 4] == pytest.approx(expected)


def test_the_stagger_is_half_the_pace_at_most_a_quarter_second() -> None:
    assert sliding_log.stagger_s(RateLimit(20, 1.0)) == pytest.approx(1.03 / 20 / 2)
    assert sliding_log.stagger_s(RateLimit(100, 1.0)) == pytest.approx(1.03 / 100 / 2)
    assert sliding_log.stagger_s(RateLimit(5, 60.0)) == sliding_log.MAX_STAGGER_S == 0.25


def test_refusal_says_when_the_slot_opens_and_changes_nothing() -> None:
    limit = RateLimit(requests=2, period_s=60.0)
    log = Log({})
    _greedy(log, limit, 2)
    d, seq = log.take(T0 + 10.0, limit)
    assert not d.granted and seq == -1
    assert d.wait_s == pytest.approx(sliding_log.window_s(limit) - 10.0)
    assert log.seq == 2
    d, seq = log.take(T0 + sliding_log.window_s(limit), limit)
    assert d.granted and seq == 2


def test_idle_time_refills_exactly_n() -> None:
    limit = RateLimit(requests=3, period_s=1.0)
    log = Log({})
    _greedy(log, limit, 7)
    later = T0 + 3600.0
    g = sliding_log.stagger_s(limit) + 1e-6  # a stagger apart, past float rounding
    decisions = [log.take(later + i * g, limit)[0].granted for i in range(5)]
    assert decisions == [True, True, True, False, False]


def test_a_penalty_blocks_everyone_until_it_ends_and_never_shortens() -> None:
    limit = RateLimit(requests=10, period_s=1.0)
    log = Log({})
    log.penalize(T0, 30.0)
    log.penalize(T0, 5.0)  # a shorter penalty never shortens a longer one
    d, _ = log.take(T0 + 29.9, limit)
    assert not d.granted and d.wait_s == pytest.approx(0.1, abs=1e-6)
    g = sliding_log.stagger_s(limit) + 1e-6  # a stagger apart, past float rounding
    assert [log.take(T0 + 30.0 + i * g, limit)[0].granted for i in range(11)] == [True] * 10 + [False]
    assert sliding_log.penalize(None, T0, -5.0) == T0  # a negative Retry-After is ignored


def test_a_grant_sent_late_holds_back_the_grant_n_after_it() -> None:
    limit = RateLimit(requests=2, period_s=1.0)
    window, g = sliding_log.window_s(limit), sliding_log.stagger_s(limit)
    log = Log({})
    _, first = log.take(T0, limit)
    log.take(T0 + g, limit)
    log.defer(first, 0.2)  # grant 0 left 0.2 s late
    d, _ = log.take(T0 + window, limit)
    assert not d.granted and d.wait_s == pytest.approx(0.2)
    log.defer(first, 5.0)  # deferring a grant the ring still holds keeps adding
    log.take(T0 + 10.0, limit)
    log.take(T0 + 11.0, limit)
    log.defer(first, 99.0)  # the ring has moved past grant 0: nothing changes
    assert sorted(seq for seq, _ in log.slots.values()) == [2, 3]


def test_a_late_previous_grant_holds_back_the_next_by_the_stagger() -> None:
    limit = RateLimit(requests=4, period_s=1.0)
    log = Log({})
    _, first = log.take(T0, limit)
    log.defer(first, 0.5)
    d, _ = log.take(T0 + 0.1, limit)
    assert not d.granted and d.wait_s == pytest.approx(0.4 + sliding_log.stagger_s(limit))


def test_a_smaller_n_over_waits_once_never_over_sends() -> None:
    wide, narrow = RateLimit(requests=10, period_s=1.0), RateLimit(requests=4, period_s=1.0)
    log = Log({})
    grants = _greedy(log, wide, 7)  # grants 0-6 at T0, the ring laid out for N = 10
    grants += _greedy(log, narrow, 8, now=T0 + 0.5)
    # Grant 7 finds grant 3 (7 - 4) in slot 3; the next ones find a slot of the old layout
    # and wait a whole window after the latest grant instead.
    assert most_in_any_window(grants[7:], 1.0) <= 4
    assert all(b - a >= 1.0 for a, b in zip(grants[3:], grants[7:], strict=False))


@pytest.mark.parametrize(
    ("limit", "count"),
    [
        (RateLimit(100, 1.0), 450),
        (RateLimit(5, 60.0), 17),
        (RateLimit(1, 60.0), 4),
        (RateLimit(1000, 1.0), 2500),
    ],
)
def test_big_and_small_limits_keep_n_per_window_and_the_pace(limit: RateLimit, count: int) -> None:
    grants = _greedy(Log({}), limit, count)
    n, g = limit.requests, sliding_log.stagger_s(limit)
    assert most_in_any_window(grants, limit.period_s) <= n
    assert grants[:n] == pytest.approx([T0 + i * g for i in range(n)], abs=1e-4)
    # Any N + 1 consecutive grants are the period and the margin apart: N per window_s.
    assert min(b - a for a, b in zip(grants, grants[n:], strict=False)) == pytest.approx(
        sliding_log.window_s(limit)
    )
    last = ((count - 1) // n) * sliding_log.window_s(limit) + ((count - 1) % n) * g
    assert grants[-1] - T0 == pytest.approx(last, abs=1e-4)  # float steps on a 1.7e9 s clock


@settings(max_examples=200, deadline=None)
@given(
    requests=st.integers(1, 30),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["take", "take", "take", "late", "penalty"]),
            st.floats(0.0, 0.4, allow_nan=False),
            st.floats(0.0, 0.03, allow_nan=False),
        ),
        min_size=1,
        max_size=150,
    ),
)
def test_arrivals_within_the_margin_of_their_grant_never_fill_a_window(
    requests: int, steps: list[tuple[str, float, float]]
) -> None:
    """Whatever the asking pattern, penalties and late sends, a strict server never sees N + 1."""
    limit = RateLimit(requests=requests, period_s=1.0)
    margin = sliding_log.send_margin_s(limit)
    log = Log({})
    now = T0
    arrivals: list[float] = []
    last = -1
    for kind, gap, jitter in steps:
        now += gap
        if kind == "penalty":
            log.penalize(now, gap)
            continue
        if kind == "late" and last >= 0:
            log.defer(last, gap)  # grant ``last`` is sent ``gap`` late
            arrivals[-1] += gap
            continue
        d, seq = log.take(now, limit)
        if d.granted:
            arrivals.append(now + min(jitter, margin))
            last = seq
        else:
            assert d.wait_s > 0
    assert most_in_any_window(sorted(arrivals), limit.period_s) <= requests
