"""Half-open time intervals ``[start, end)`` in Unix seconds, and sets of them.

Coverage is a set of fetched intervals; a gap is a requested window minus
coverage, intersected with trading time. All functions take and return
*normalized* lists: sorted by start, non-empty, neither overlapping nor
touching (touching intervals are merged). They are linear sweeps, so gap
detection stays cheap whatever the size of the coverage table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from barfill.errors import InvalidInput


class Interval(NamedTuple):
    """``[start, end)`` in Unix seconds (UTC); ``start < end``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def interval(start: int, end: int, *, field: str = "window") -> Interval:
    """Build an interval, refusing an empty or inverted one."""
    if end <= start:
        raise InvalidInput(field, f"start before end, got start={start} end={end}")
    return Interval(start, end)


def normalize(items: Iterable[tuple[int, int]]) -> list[Interval]:
    """Sort, drop empty intervals, merge overlapping and touching ones."""
    out: list[Interval] = []
    for start, end in sorted(i for i in items if i[1] > i[0]):
        if out and start <= out[-1].end:
            if end > out[-1].end:
                out[-1] = Interval(out[-1].start, end)
        else:
            out.append(Interval(start, end))
    return out


def union(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    return normalize([*a, *b])


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """``a − b``: the parts of ``a`` not in ``b``. Both normalized."""
    out: list[Interval] = []
    j = 0
    for start, end in a:
        cur = start
        while j < len(b) and b[j].end <= cur:
            j += 1
        k = j
        while k < len(b) and b[k].start < end:
            if b[k].start > cur:
                out.append(Interval(cur, b[k].start))
            cur = max(cur, b[k].end)
            if cur >= end:
                break
            k += 1
        if cur < end:
            out.append(Interval(cur, end))
    return out


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """``a ∩ b``. Both normalized."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i].start, b[j].start)
        end = min(a[i].end, b[j].end)
        if start < end:
            out.append(Interval(start, end))
        if a[i].end < b[j].end:
            i += 1
        else:
            j += 1
    return out


def total(items: Sequence[Interval]) -> int:
    """Total length in seconds."""
    return sum(i.end - i.start for i in items)


def contains(items: Sequence[Interval], ts: int) -> bool:
    """Whether ``ts`` lies in one of the intervals (binary search)."""
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        if items[mid].end <= ts:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(items) and items[lo].start <= ts
