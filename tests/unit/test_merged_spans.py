"""derive.merged_spans merges exactly as intervals.normalize does."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from barfill.domain.intervals import normalize
from barfill.service.derive import merged_spans

pairs = st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)), max_size=40)


@given(pairs)
def test_same_as_normalize(items: list[tuple[int, int]]) -> None:
    starts = np.array([a for a, _ in items], dtype=np.int64)
    ends = np.array([b for _, b in items], dtype=np.int64)
    assert merged_spans(starts, ends) == [(i.start, i.end) for i in normalize(items)]


def test_touching_buckets_become_one_span_and_a_gap_splits() -> None:
    starts = np.array([0, 300, 600, 1200], dtype=np.int64)
    assert merged_spans(starts, starts + 300) == [(0, 900), (1200, 1500)]
