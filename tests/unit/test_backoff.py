"""Exponential backoff with full jitter: the ceiling doubles, is capped, and draws stay under it."""

from __future__ import annotations

import random

import pytest

from barfill.domain.backoff import backoff_ceiling, backoff_delay


def test_ceiling_doubles_per_attempt_then_caps() -> None:
    assert [backoff_ceiling(a, 2.0, 30.0) for a in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_huge_attempt_does_not_overflow() -> None:
    assert backoff_ceiling(10_000, 2.0, 600.0) == 600.0
    assert 0.0 <= backoff_delay(10_000, 2.0, 600.0, random.Random(1)) <= 600.0


def test_delay_is_full_jitter_under_the_ceiling() -> None:
    rng = random.Random(42)
    draws = [backoff_delay(4, 1.0, 600.0, rng) for _ in range(2_000)]
    assert all(0.0 <= d <= 8.0 for d in draws)
    # Full jitter spreads over the whole range, not around the ceiling.
    assert min(draws) < 0.1
    assert max(draws) > 7.9
    assert 3.5 < sum(draws) / len(draws) < 4.5


def test_same_seed_same_delays() -> None:
    a = [backoff_delay(n, 2.0, 600.0, random.Random(7)) for n in range(1, 10)]
    b = [backoff_delay(n, 2.0, 600.0, random.Random(7)) for n in range(1, 10)]
    assert a == b
    assert len(set(a)) == len(a)


def test_zero_base_means_retry_at_once() -> None:
    assert backoff_delay(3, 0.0, 600.0, random.Random(1)) == 0.0


@pytest.mark.parametrize(
    ("attempt", "base", "cap"), [(0, 1.0, 10.0), (-1, 1.0, 10.0), (1, -1.0, 10.0), (1, 1.0, -5.0)]
)
def test_bad_arguments_are_refused(attempt: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, base, cap, random.Random(1))
