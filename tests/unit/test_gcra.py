"""GCRA arithmetic: grants, spacing, bursts and penalties, with no clock and no I/O."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain import gcra
from barfill.domain.capabilities import RateLimit

T0 = 1_700_000_000.0


def test_first_request_is_granted_and_books_one_interval() -> None:
    limit = RateLimit(requests=5, period_s=60.0)
    d = gcra.decide(None, T0, limit)
    assert d.granted and d.wait_s == 0.0
    assert d.tat == pytest.approx(T0 + 12.0 * (1 + gcra.SEND_MARGIN))  # 12 s, widened by the margin


def test_second_request_at_the_same_instant_waits_one_interval() -> None:
    limit = RateLimit(requests=5, period_s=60.0)
    first = gcra.decide(None, T0, limit)
    second = gcra.decide(first.tat, T0 + 2.0, limit)
    assert not second.granted
    assert second.wait_s == pytest.approx(first.tat - T0 - 2.0)
    assert second.tat == first.tat  # a refusal changes nothing


def test_burst_grants_back_to_back_then_spaces() -> None:
    limit = RateLimit(requests=10, period_s=1.0, burst=3)
    tat: float | None = None
    granted = 0
    for _ in range(5):
        d = gcra.decide(tat, T0, limit)
        if d.granted:
            granted += 1
            tat = d.tat
    assert granted == 3
    assert tat is not None
    refused = gcra.decide(tat, T0, limit)
    assert refused.wait_s == pytest.approx(gcra.spacing_s(limit), abs=1e-6)
    later = gcra.decide(tat, T0 + refused.wait_s, limit)
    assert later.granted


def test_idle_time_refills_at_most_one_burst() -> None:
    limit = RateLimit(requests=10, period_s=1.0, burst=2)
    tat = gcra.decide(None, T0, limit).tat
    now = T0 + 3600.0  # an hour idle
    grants = 0
    for _ in range(10):
        d = gcra.decide(tat, now, limit)
        if d.granted:
            grants += 1
            tat = d.tat
    assert grants == 2


def test_penalty_blocks_everyone_until_it_ends_even_with_a_burst() -> None:
    limit = RateLimit(requests=10, period_s=1.0, burst=4)
    tat = gcra.penalize(None, T0, 30.0, limit)
    assert not gcra.decide(tat, T0 + 29.9, limit).granted
    assert gcra.decide(tat, T0 + 29.9, limit).wait_s == pytest.approx(0.1, abs=1e-6)  # the penalty's end
    assert gcra.decide(tat, T0 + 30.0, limit).granted


def test_penalty_never_moves_the_arrival_time_back() -> None:
    limit = RateLimit(requests=1, period_s=100.0)
    assert gcra.penalize(T0 + 500.0, T0, 10.0, limit) == T0 + 500.0
    assert gcra.penalize(T0, T0, 10.0) == T0 + 10.0
    assert gcra.penalize(T0, T0, -5.0) == T0  # a negative Retry-After is ignored


def test_max_granted_in_window() -> None:
    # With burst 1 a closed window of one period holds at most N grants: strict, margin included.
    assert gcra.max_granted_in_window(1.0, RateLimit(20, 1.0)) == 20
    assert gcra.max_granted_in_window(1.0, RateLimit(4, 1.0)) == 4
    assert gcra.max_granted_in_window(60.0, RateLimit(5, 60.0)) == 5
    assert gcra.max_granted_in_window(1.0, RateLimit(16, 1.0, burst=2)) == 17


@pytest.mark.parametrize("n", [1, 2, 4, 5, 20, 49, 100])
def test_n_plus_one_grants_span_more_than_a_period_by_the_margin(n: int) -> None:
    """Grant k and grant k+N are period + margin apart: a request sent within the margin of its
    grant can never put N + 1 arrivals in one strict window of the period."""
    limit = RateLimit(requests=n, period_s=1.0)
    now, tat = T0, None
    grants: list[float] = []
    while len(grants) <= n:
        d = gcra.decide(tat, now, limit)
        if d.granted:
            grants.append(now)
            tat = d.tat
        else:
            now += d.wait_s
    assert grants[n] - grants[0] == pytest.approx(1.0 + gcra.send_margin_s(limit), abs=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    requests=st.integers(1, 50),
    burst=st.integers(1, 8),
    gaps=st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=1, max_size=200),
)
def test_no_window_ever_holds_more_than_the_bound(requests: int, burst: int, gaps: list[float]) -> None:
    limit = RateLimit(requests=requests, period_s=1.0, burst=burst)
    now, tat = T0, None
    grants: list[float] = []
    for gap in gaps:
        now += gap
        d = gcra.decide(tat, now, limit)
        if d.granted:
            grants.append(now)
            tat = d.tat
        else:
            assert d.wait_s > 0
    bound = gcra.max_granted_in_window(1.0, limit)
    j = 0
    for i, t in enumerate(grants):
        while grants[j] < t - 1.0:
            j += 1
        assert i - j + 1 <= bound


def test_a_greedy_client_gets_exactly_the_rate() -> None:
    limit = RateLimit(requests=20, period_s=1.0)
    now, tat = T0, None
    sent = 0
    while now < T0 + 9.975:  # half an interval short of 10 s: immune to float drift
        d = gcra.decide(tat, now, limit)
        if d.granted:
            sent += 1
            tat = d.tat
        else:
            now += d.wait_s
    assert sent == math.floor(9.975 / gcra.spacing_s(limit)) + 1 == 194  # the rate, less the margin
