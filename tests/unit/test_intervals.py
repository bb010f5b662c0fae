"""Interval arithmetic, checked against a brute-force model: the set of integer instants covered."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain.intervals import (
    Interval,
    contains,
    intersect,
    interval,
    normalize,
    subtract,
    total,
    union,
)
from barfill.errors import InvalidInput

raw = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=8)
normalized = raw.map(normalize)
fast = settings(max_examples=150, deadline=None)


def points(items: list[Interval]) -> set[int]:
    """Brute force: every integer second the intervals cover."""
    return {t for a, b in items for t in range(a, b)}


def is_normalized(items: list[Interval]) -> bool:
    return all(a < b for a, b in items) and all(
        x.end < y.start for x, y in zip(items, items[1:], strict=False)
    )


@fast
@given(raw)
def test_normalize_is_normalized_idempotent_and_keeps_points(items: list[tuple[int, int]]) -> None:
    out = normalize(items)
    assert is_normalized(out)
    assert normalize(out) == out
    assert points(out) == {t for a, b in items for t in range(a, b)}


@fast
@given(normalized, normalized)
def test_union_intersect_subtract_match_sets(a: list[Interval], b: list[Interval]) -> None:
    pa, pb = points(a), points(b)
    assert points(union(a, b)) == pa | pb
    assert points(intersect(a, b)) == pa & pb
    assert points(subtract(a, b)) == pa - pb
    for out in (union(a, b), intersect(a, b), subtract(a, b)):
        assert is_normalized(out)


@fast
@given(normalized, normalized)
def test_laws(a: list[Interval], b: list[Interval]) -> None:
    diff, common = subtract(a, b), intersect(a, b)
    assert intersect(diff, b) == []
    assert union(diff, common) == a
    assert intersect(a, b) == intersect(b, a)
    assert union(a, b) == union(b, a)
    assert subtract(a, a) == []
    assert subtract(a, []) == a
    assert total(union(a, b)) == total(a) + total(b) - total(common)


@fast
@given(normalized, st.integers(-5, 65))
def test_contains_agrees_with_brute_force(items: list[Interval], ts: int) -> None:
    assert contains(items, ts) is (ts in points(items))


def test_touching_intervals_merge_and_empty_ones_vanish() -> None:
    assert normalize([(5, 10), (0, 5), (12, 12), (20, 15)]) == [Interval(0, 10)]


def test_half_open_bounds() -> None:
    assert contains([Interval(10, 20)], 10)
    assert not contains([Interval(10, 20)], 20)
    assert subtract([Interval(0, 10)], [Interval(3, 5)]) == [Interval(0, 3), Interval(5, 10)]


@pytest.mark.parametrize(("start", "end"), [(5, 5), (6, 5)])
def test_interval_refuses_empty_or_inverted(start: int, end: int) -> None:
    with pytest.raises(InvalidInput, match="window: expected start before end"):
        interval(start, end)
