"""GCRA arithmetic (the HTTP API's per-key limit): grants, spacing and bursts, with no clock and no I/O."""

from __future__ import annotations

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
    assert d.tat == pytest.approx(T0 + 12.0)


def test_second_request_at_the_same_instant_waits_one_interval() -> None:
    limit = RateLimit(requests=5, period_s=60.0)
    first = gcra.decide(None, T0, limit)
    second = gcra.decide(first.tat, T0 + 2.0, limit)
    assert not second.granted
    assert second.wait_s == pytest.approx(10.0)
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
    assert refused.wait_s == pytest.approx(0.1, abs=1e-6)
    assert gcra.decide(tat, T0 + refused.wait_s, limit).granted


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


@settings(max_examples=200, deadline=None)
@given(
    requests=st.integers(1, 50),
    burst=st.integers(1, 8),
    gaps=st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=1, max_size=200),
)
def test_no_window_ever_holds_more_than_the_rate_plus_the_burst(
    requests: int, burst: int, gaps: list[float]
) -> None:
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
    j = 0
    for i, t in enumerate(grants):
        while grants[j] < t - 1.0:
            j += 1
        assert i - j + 1 <= requests + burst
