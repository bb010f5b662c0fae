"""Gap detection and slice planning: what is missing, and the fewest requests that fetch it.

Decision 3: slices are sized by what a provider can return, not by the
clock. The planner estimates, from the trading calendar, how many units of a
provider's page limit a request would cost and cuts the fewest slices that
fit. Everything here is pure: no I/O, no clock (``now`` is an argument), and
the work is done per session with numpy, never per minute.

Contracts shared by every function:

* Times are Unix seconds, UTC; intervals are half-open ``[start, end)``.
* A *gap* is trading time (regular or extended sessions) not yet covered.
  Gap parts outside the extended trading sessions are closed-market time:
  never planned and never reported as unfillable.
* A slice's bounds are bar labels of the timeframe (``calendar.bucket``):
  providers return bars with ``start <= ts < end``, and the h1 bar holding
  09:30-09:59 New York time is labelled 09:00, so a slice must start at 09:00
  to get it. A slice ends where the bar holding its last gap instant ends.
* Units (what ``page_limit`` counts): for ``PageUnit.bars``, the bars of the
  timeframe that can exist in the slice's whole span (regular sessions, or
  extended ones when the provider serves extended hours); for
  ``PageUnit.base_minutes`` (Polygon), extended-hours minutes for intraday
  timeframes and sessions (day bars) for d1 and w1. Covered trading time a
  slice spans between two gaps costs units too: the provider returns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from barfill.domain.bars import I64
from barfill.domain.calendar import TradingCalendar
from barfill.domain.capabilities import Capabilities, PageUnit
from barfill.domain.intervals import Interval, normalize, subtract
from barfill.domain.resample import bucket_ends
from barfill.domain.slices import PlannedSlice
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

_DAY = 86_400
_MINUTE = 60
# Whole sessions make requests easy to read and retry, but not at any price: when the whole sessions
# that fit reach less than 96 % of the units a cut inside the next session would, a slice goes on.
_MIN_FILL = 0.96


@dataclass(frozen=True)
class Plan:
    """What :func:`plan_slices` decided.

    Attributes:
        slices: requests to make, in time order, neither overlapping nor
            (except at a shared bound) touching; their union holds every
            fillable gap.
        unfillable: gap parts the provider cannot serve: older than its
            history depth for the timeframe, or everything when it lacks the
            timeframe. Another provider may serve them.
    """

    slices: list[PlannedSlice]
    unfillable: list[Interval]


def find_gaps(
    window: Interval,
    coverage: Sequence[Interval],
    calendar: TradingCalendar,
    *,
    extended: bool = False,
) -> list[Interval]:
    """``(window − coverage) ∩ trading time``: what must still be fetched.

    Closed-market time (nights, weekends, holidays, after an early close) is
    never a gap, so a fully fetched history over a holiday is complete.

    Args:
        window: the requested ``[start, end)``.
        coverage: fetched intervals, in any order (merged here).
        calendar: the exchange calendar of the symbol.
        extended: count pre/post-market time (04:00-20:00 New York) as trading time.

    Returns:
        Normalized intervals.
    """
    calendar.check_range(window.start, window.end)
    missing = _arrays(subtract([window], normalize(coverage)))
    if len(missing[0]) == 0:
        return []
    return _intervals(*_overlap(missing, _sessions(calendar, window.start, window.end, extended)))


def plan_slices(
    gaps: Sequence[Interval],
    timeframe: Timeframe,
    caps: Capabilities,
    calendar: TradingCalendar,
    *,
    now: int,
) -> Plan:
    """Cut the fewest slices that fetch ``gaps`` from one provider.

    Walks the gaps in time order and greedily packs whole sessions into a
    slice while the units of the slice's whole span stay within
    ``caps.page_limit`` and its width within ``caps.max_span_days``; a slice
    ends at the end of a session or of a gap. A session is split inside, at
    a bar boundary, when it is too big for a page on its own, or when the
    whole sessions that fit would reach less than 96 % of the units a split
    reaches (a page of fewer than ~25 sessions, or a span limit that ends
    mid-session): then whole sessions would cost more requests than they
    are worth. Slices never overlap; every slice holds at least one gap bar,
    so none is closed-market time only; their union holds every fillable
    gap. Slice count stays within a few percent of :func:`ideal_requests`.

    Args:
        gaps: missing trading time (e.g. from :func:`find_gaps`), any order.
        timeframe: the timeframe to fetch.
        caps: the provider's declared abilities.
        calendar: the exchange calendar of the symbol.
        now: the current time (UTC seconds), for the provider's history depth.

    Returns:
        The slices, and the gap parts this provider cannot serve.

    Raises:
        InvalidInput: when a single bar alone exceeds the page limit or the
            widest span (capabilities that cannot serve the timeframe at all).
    """
    fillable, unfillable = _split_fillable(gaps, timeframe, caps, calendar, now)
    if len(fillable[0]) == 0:
        return Plan([], unfillable)
    starts, ends = _needs(fillable, timeframe, calendar)
    model = _UnitModel.build(timeframe, caps, calendar, int(starts[0]), int(ends[-1]))
    return Plan(_greedy(starts, ends, model, timeframe, caps, whole_sessions=True), unfillable)


def ideal_requests(
    gaps: Sequence[Interval],
    timeframe: Timeframe,
    caps: Capabilities,
    calendar: TradingCalendar,
    *,
    now: int,
) -> int:
    """The fewest requests any plan could make for ``gaps``: the baseline benches compare against.

    At least ``ceil(units in the fillable gaps / page_limit)`` and, with
    ``max_span_days``, at least ``ceil(span / max_span)`` per run of gaps
    separated only by closed-market time. Computed exactly: the greedy cover
    that cuts wherever a bar boundary lets it (no preference for whole
    sessions) is optimal among plans whose slices are bar-aligned and within
    both limits, so :func:`plan_slices` can never need fewer. It also counts
    what a slice spanning two gaps pays for the units between them (covered
    bars, or a Polygon slice's pre/post-market minutes), which the plain
    ``units / page_limit`` quotient would miss.
    """
    fillable, _ = _split_fillable(gaps, timeframe, caps, calendar, now)
    if len(fillable[0]) == 0:
        return 0
    starts, ends = _needs(fillable, timeframe, calendar)
    model = _UnitModel.build(timeframe, caps, calendar, int(starts[0]), int(ends[-1]))
    return len(_greedy(starts, ends, model, timeframe, caps, whole_sessions=False))


def estimate_units(
    timeframe: Timeframe, caps: Capabilities, calendar: TradingCalendar, start: int, end: int
) -> int:
    """Units of ``caps.page_limit`` that a request for ``[start, end)`` costs.

    Counts bars (or, for ``base_minutes``, extended-hours minutes or day
    bars) whose label lies in ``[start, end)``, as the provider would.
    """
    if end <= start:
        return 0
    model = _UnitModel.build(timeframe, caps, calendar, start, end)
    counts = model.count(np.asarray([start, end], dtype=np.int64))
    return int(counts[1] - counts[0])


DENSITY_MARGIN = 0.02
"""Head-room over a learned density: a page spanning denser sessions than any seen so far
still stays under the cap (and a page that would not is detected, see the worker)."""


def with_density(caps: Capabilities, ratio: float | None) -> Capabilities:
    """``caps`` with ``page_limit`` scaled to a symbol's learned density (pure).

    ``ratio`` is base aggregates the provider really read per unit this module
    models (:func:`estimate_units`), as learned from its answers (None: never
    observed). A slice of ``u`` modeled units then reads about ``u * ratio``
    base aggregates; with :data:`DENSITY_MARGIN` on top it must stay within the
    real cap, so the modeled limit becomes ``page_limit / (ratio * (1 + margin))``.
    A ratio at or above ``1 / (1 + margin)`` leaves ``caps`` alone: the model
    never grows past the provider's cap in real units.
    """
    if ratio is None or ratio <= 0 or caps.page_unit != PageUnit.base_minutes:
        return caps
    scale = ratio * (1 + DENSITY_MARGIN)
    if scale >= 1.0:
        return caps
    return replace(caps, page_limit=int(caps.page_limit / scale))


def observed_ratio(base_read: int, modeled_units: int) -> float | None:
    """Density of one answer: base aggregates read per modeled unit (None: too small to tell).

    An answer over less than :data:`_MIN_OBSERVED` modeled units (a sliver at
    the live edge, one short session) says little about the symbol: ignored.
    """
    if modeled_units < _MIN_OBSERVED or base_read < 0:
        return None
    return min(base_read / modeled_units, 1.0)


_MIN_OBSERVED = 2_000  # modeled units (about two extended sessions of minutes)


def whole_sessions(calendar: TradingCalendar, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened to the extended bounds of the sessions it meets.

    For a symbol seen to trade only regular hours, an answer over part of a
    session's extended hours read all the minutes that session has: its
    density is measured against whole sessions, as later slices span them.
    """
    i0, i1 = calendar.session_indices(start, end, extended=True)
    if i1 <= i0:
        return start, end
    return min(start, int(calendar.ext_opens[i0])), max(end, int(calendar.ext_closes[i1 - 1]))


# -- internals -------------------------------------------------------------------------------------


def _split_fillable(
    gaps: Sequence[Interval], timeframe: Timeframe, caps: Capabilities, calendar: TradingCalendar, now: int
) -> tuple[tuple[I64, I64], list[Interval]]:
    """Trading-time gaps split into fillable (as arrays) and unfillable parts for this provider."""
    starts, ends = _arrays(gaps)
    if len(starts) == 0:
        return (starts, ends), []
    if np.any(starts[1:] <= ends[:-1]) or np.any(ends <= starts):
        starts, ends = _arrays(normalize(gaps))
    lo, hi = int(starts[0]), int(ends[-1])
    calendar.check_range(lo, hi)
    starts, ends = _overlap((starts, ends), _sessions(calendar, lo, hi, True))
    if len(starts) == 0 or not caps.supports(timeframe):
        return (starts[:0], ends[:0]), _intervals(starts, ends)
    days = caps.history_days.get(timeframe)
    if days is None:
        return (starts, ends), []
    # Round the reach up to a bar boundary: a slice never starts before the provider's reach.
    reach = now - days * _DAY
    label = _label(timeframe, reach, calendar)
    if label != reach:
        reach = int(bucket_ends(timeframe, np.asarray([label], dtype=np.int64), calendar)[0])
    old, new = starts < reach, ends > reach
    unfillable = _intervals(starts[old], np.minimum(ends[old], reach))
    return (np.maximum(starts[new], reach), ends[new]), unfillable


def _sessions(calendar: TradingCalendar, lo: int, hi: int, extended: bool) -> tuple[I64, I64]:
    """Opens and closes of the sessions whose trading time meets ``[lo, hi)``."""
    i0, i1 = calendar.session_indices(lo, hi, extended=extended)
    if extended:
        return calendar.ext_opens[i0:i1], calendar.ext_closes[i0:i1]
    return calendar.opens[i0:i1], calendar.closes[i0:i1]


def _label(timeframe: Timeframe, ts: int, calendar: TradingCalendar) -> int:
    return int(calendar.bucket(timeframe, np.asarray([ts], dtype=np.int64))[0])


def _arrays(items: Sequence[Interval]) -> tuple[I64, I64]:
    """Starts and ends of intervals as two int64 arrays."""
    pairs = np.asarray(items, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _intervals(starts: I64, ends: I64) -> list[Interval]:
    return [Interval(a, b) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def _overlap(a: tuple[I64, I64], b: tuple[I64, I64]) -> tuple[I64, I64]:
    """``a ∩ b`` for two sorted lists of non-overlapping intervals (touching allowed), normalized.

    Vectorized (the pure-Python sweep in :mod:`intervals` costs milliseconds
    on two years of sessions): cut the time line at every bound and keep the
    pieces inside both, then merge touching pieces.
    """
    if len(a[0]) == 0 or len(b[0]) == 0:
        return a[0][:0], a[1][:0]
    edges = np.unique(np.concatenate((a[0], a[1], b[0], b[1])))
    lo, hi = edges[:-1], edges[1:]
    keep = _inside(a, lo) & _inside(b, lo)
    lo, hi = lo[keep], hi[keep]
    if len(lo) == 0:
        return lo, hi
    breaks = np.flatnonzero(lo[1:] != hi[:-1]) + 1
    return lo[np.concatenate(([0], breaks))], hi[np.concatenate((breaks, [len(lo)])) - 1]


def _inside(items: tuple[I64, I64], ts: I64) -> np.ndarray[tuple[int], np.dtype[np.bool_]]:
    k = np.searchsorted(items[0], ts, side="right") - 1
    return (k >= 0) & (ts < items[1][np.maximum(k, 0)])


def _needs(fillable: tuple[I64, I64], timeframe: Timeframe, calendar: TradingCalendar) -> tuple[I64, I64]:
    """Gaps widened to whole bars and merged: the disjoint label-aligned ranges slices must cover."""
    gap_start, gap_last = fillable[0], fillable[1] - 1
    starts = calendar.bucket(timeframe, gap_start)
    ends = bucket_ends(timeframe, calendar.bucket(timeframe, gap_last), calendar)
    # Gaps are sorted and disjoint, so both arrays are non-decreasing: merge touching neighbours.
    breaks = np.flatnonzero(starts[1:] > ends[:-1]) + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks, [len(starts)])) - 1
    return starts[first], ends[last]


@dataclass(frozen=True)
class _UnitModel:
    """Units the provider counts, as blocks (sessions, or weeks for w1 bars) of evenly spaced units.

    Block ``k`` holds ``n[k]`` units labelled ``first[k] + i * step[k]``;
    ``before[k]`` units lie in earlier blocks. ``block_end[k]`` is where the
    last bar of the block ends: the place to cut between two sessions.
    """

    first: I64
    step: I64
    n: I64
    before: I64
    block_end: I64

    @classmethod
    def build(
        cls, timeframe: Timeframe, caps: Capabilities, calendar: TradingCalendar, lo: int, hi: int
    ) -> _UnitModel:
        """The blocks of the sessions meeting ``[lo, hi)``."""
        minutes = caps.page_unit == PageUnit.base_minutes
        if not timeframe.intraday:
            i0, i1 = calendar.session_indices(lo, hi)
            first = calendar.midnights[i0:i1]
            weeks = calendar.bucket(Timeframe.w1, first) if timeframe == Timeframe.w1 else first
            if timeframe == Timeframe.w1 and not minutes:
                first = np.unique(weeks)
                weeks = first
            ones = np.ones(len(first), dtype=np.int64)
            return cls._of(first, ones, ones, bucket_ends(timeframe, weeks, calendar))
        opens, closes = _sessions(calendar, lo, hi, minutes or caps.extended_hours)
        if minutes:
            first = opens // _MINUTE * _MINUTE
            n = -(-(closes - first) // _MINUTE)
            step = np.full(len(first), _MINUTE, dtype=np.int64)
            last_bar = calendar.bucket(timeframe, closes - 1)
        else:
            size = timeframe.seconds
            offset = calendar.utc_offset(opens)
            first = (opens + offset) // size * size - offset
            last_bar = (closes - 1 + offset) // size * size - offset
            n = (last_bar - first) // size + 1
            step = np.full(len(first), size, dtype=np.int64)
        return cls._of(first, step, n, bucket_ends(timeframe, last_bar, calendar))

    @classmethod
    def _of(cls, first: I64, step: I64, n: I64, block_end: I64) -> _UnitModel:
        before = np.concatenate(([0], np.cumsum(n)[:-1])).astype(np.int64)
        return cls(first.astype(np.int64), step, n.astype(np.int64), before, block_end.astype(np.int64))

    def count(self, ts: I64) -> I64:
        """Units labelled before each ``ts`` (relative to the first block: only differences matter)."""
        ts = np.asarray(ts, dtype=np.int64)
        if len(self.first) == 0:
            return np.zeros(len(ts), dtype=np.int64)
        k = np.searchsorted(self.first, ts, side="right") - 1
        kc = np.maximum(k, 0)
        inside = np.clip(-((self.first[kc] - ts) // self.step[kc]), 0, self.n[kc])
        return np.asarray(np.where(k >= 0, self.before[kc] + inside, 0), dtype=np.int64)


def _greedy(
    starts: I64,
    ends: I64,
    model: _UnitModel,
    timeframe: Timeframe,
    caps: Capabilities,
    *,
    whole_sessions: bool,
) -> list[PlannedSlice]:
    """Greedy cover of the need ranges ``[starts, ends)``: each slice reaches as far as it may.

    Starting each slice at the first point not yet covered and reaching as
    far as the limits allow is optimal for this kind of cover (any sub-range
    of a feasible slice is feasible too). With ``whole_sessions`` a slice
    prefers to end at a *cut* (the end of a need range, or of a session
    inside one) unless the farthest cut gets less than ``_MIN_FILL`` of what
    the farthest bar boundary would.
    """
    block_end = model.block_end
    k = np.maximum(np.searchsorted(starts, block_end, side="right") - 1, 0)
    inside = (block_end > starts[k]) & (block_end < ends[k])
    cuts = np.unique(np.concatenate((ends, block_end[inside])))
    cut_units = model.count(cuts)
    limit = caps.page_limit
    span_days = caps.max_span_days.get(timeframe)
    span_s = None if span_days is None else span_days * _DAY
    start_units_at = model.count(starts)

    out: list[PlannedSlice] = []
    start, start_units = int(starts[0]), int(start_units_at[0])
    while True:
        j = int(np.searchsorted(cut_units, start_units + limit, side="right"))
        if span_s is not None:
            j = min(j, int(np.searchsorted(cuts, start + span_s, side="right")))
        # cuts[:j] fit; cuts[j] (if any) is the first that does not, and lies after ``start``.
        end, end_units = start, start_units
        if j > 0 and int(cuts[j - 1]) > start:
            end, end_units = int(cuts[j - 1]), int(cut_units[j - 1])
        if timeframe.intraday and j < len(cuts):
            far = _farthest_bar(start, start_units + limit, span_s, starts, ends, model, timeframe.seconds)
            if far is not None and (
                not whole_sessions or end_units - start_units < _MIN_FILL * (far[1] - start_units)
            ):
                end, end_units = far
        if end == start:
            raise InvalidInput(
                "capabilities",
                f"room for one {timeframe.value} bar per request from {caps.name} "
                f"(page_limit={limit} {caps.page_unit.value}, max_span_days={span_days})",
            )
        out.append(PlannedSlice(start, end, end_units - start_units))
        i = int(np.searchsorted(ends, end, side="left"))
        if int(ends[i]) > end:  # cut inside need range i: the next slice goes on from here
            start, start_units = end, end_units
        elif i + 1 < len(ends):
            start, start_units = int(starts[i + 1]), int(start_units_at[i + 1])
        else:
            return out


def _farthest_bar(
    start: int, max_units: int, span_s: int | None, starts: I64, ends: I64, model: _UnitModel, size: int
) -> tuple[int, int] | None:
    """The farthest bar boundary a slice from ``start`` may end at, and the unit count there.

    ``max_units`` is the count the slice's end may reach. Intraday bars of a
    need range are taken as evenly spaced from its start (no DST change
    inside a session). None when not even one more bar fits.
    """
    reach = int(ends[-1])
    k = int(np.searchsorted(model.before + model.n, max_units, side="right"))
    if k < len(model.first):  # the first unit that no longer fits: a slice must end at or before it
        reach = min(reach, int(model.first[k] + (max_units - model.before[k]) * model.step[k]))
    if span_s is not None:
        reach = min(reach, start + span_s)
    i = int(np.searchsorted(ends, reach, side="left"))
    first = int(starts[i])
    end = first + max(0, reach - first) // size * size
    if end == first and i > 0:  # not one bar of need range i fits: stop after the one before
        end = int(ends[i - 1])
    if end <= start:
        return None
    return end, int(model.count(np.asarray([end], dtype=np.int64))[0])
