"""From a definition to the slices that fill its gaps: shared by ``ensure`` and the tick.

The live-edge rule (:mod:`barfill.domain.finality`) splits a definition's
gaps four ways, at ``now`` on the database clock:

* **final**: each part goes to the most preferred historical provider that
  will *ever* serve it (:meth:`Router.assign`), and is planned only once it is
  final *for that provider* (layer ``historical``, stored once). Final gaps
  ignore provisional coverage: a session covered provisionally is fetched
  again, finally, once final.
* **provisional**: not final yet for that provider, but complete bars a
  configured realtime provider serves: planned on it, layer ``intraday``
  (coverage that expires, refreshed). Unexpired provisional coverage counts
  as covered here.
* **pending**: not final yet and not servable provisionally (no realtime
  provider, a forming bar, flat files before publication): nothing is
  planned, nothing fails; reported as pending. The preferred provider is
  waited for, never replaced by the next one.
* **unfillable**: no configured provider can ever serve it (timeframe not
  served, before every history start or rolling depth): reported with a
  reason, never enqueued.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from barfill.domain import intervals as iv
from barfill.domain.bars import Layer
from barfill.domain.calendar import TradingCalendar
from barfill.domain.finality import Finality, last_complete_end, servable_until, split
from barfill.domain.intervals import Interval
from barfill.domain.planner import find_gaps, plan_slices, with_density
from barfill.domain.slices import NewSlice, PlannedSlice
from barfill.domain.timeframes import Timeframe
from barfill.providers.router import Router
from barfill.store.coverage import CoverageView
from barfill.store.definitions import Definition

DAY_S = 86_400
NEWEST_SCREEN_BARS = 1_000  # a chart's first screen, with room to spare
NEWEST_SPLIT_FACTOR = 10
_FAR = 2**62


@dataclass(frozen=True)
class DefinitionPlan:
    """What one definition needs now. Times are Unix seconds, UTC; intervals ``[start, end)``.

    ``gaps``/``holes``/``bars_missing`` count what is not covered at all
    (neither finally nor provisionally). ``pending``: not yet servable (see
    the module doc), planned later by itself. ``unfillable`` with
    ``unfillable_reasons`` (one per interval, same order): what no configured
    provider can ever serve.
    """

    definition_id: int
    window: Interval
    gaps: list[Interval]  # missing trading time, one interval per session piece
    holes: int  # missing stretches of the window (closed time inside one does not split it)
    slices: list[NewSlice]
    unfillable: list[Interval]
    bars_missing: int
    provider: str | None  # the provider the slices were sized for (historical part first)
    pending: list[Interval] = field(default_factory=list)
    unfillable_reasons: list[str] = field(default_factory=list)


def window_of(defn: Definition, calendar: TradingCalendar, now: int) -> Interval | None:
    """The definition's desired window, ending at the last complete bar; None if empty."""
    if defn.window_days is not None:
        start, end = now - defn.window_days * DAY_S, now
    else:
        assert defn.start is not None and defn.end is not None
        start, end = defn.start, defn.end
    end = min(end, last_complete_end(calendar, defn.timeframe, now))
    start = max(start, calendar.first)
    return Interval(start, end) if start < end else None


def gaps_of(window: Interval, coverage: Sequence[Interval], calendar: TradingCalendar) -> list[Interval]:
    """(window − coverage) ∩ trading time, computed on the residue only.

    A covered rolling window leaves only a sliver since the last fetch, so this
    asks the calendar about that sliver instead of the whole window: a tick
    over thousands of covered definitions stays cheap.
    """
    return [g for hole in holes_of(window, coverage, calendar) for g in hole]


def holes_of(
    window: Interval, coverage: Sequence[Interval], calendar: TradingCalendar
) -> list[list[Interval]]:
    """The uncovered stretches of ``window`` that hold trading time, each as its trading gaps."""
    holes = (find_gaps(part, [], calendar) for part in iv.subtract([window], coverage))
    return [h for h in holes if h]


def plan_definition(
    defn: Definition,
    coverage: CoverageView | Sequence[Interval],
    calendar: TradingCalendar,
    router: Router,
    *,
    now: int,
    max_attempts: int,
    pending: Sequence[Interval] = (),
    densities: Mapping[str, float] | None = None,
) -> DefinitionPlan:
    """Gaps of one definition and the fewest slices that fill them, split by the live-edge rule.

    Args:
        coverage: the (symbol, timeframe)'s coverage, final and unexpired
            provisional apart; a plain list is read as final coverage.
        now: the database clock, Unix seconds UTC.
        pending: ranges someone is already fetching for the same (symbol,
            timeframe), from any definition (queued or running slices), plus,
            for the scheduler, ranges it must leave alone (failed slices
            cooling down, cancelled slices). They are subtracted from the gaps
            *before* slicing, so as the clock moves (and slice bounds with
            it) a new slice never overlaps a live one: only the new sliver is
            planned. ``gaps``, ``holes`` and ``bars_missing`` still report
            everything missing, pending included.
        densities: the symbol's learned density per provider for the
            timeframe's base (:mod:`barfill.store.densities`): slices are
            sized to it (:func:`~barfill.domain.planner.with_density`).
    """
    view = coverage if isinstance(coverage, CoverageView) else CoverageView(iv.normalize(coverage), [])
    window = window_of(defn, calendar, now)
    if window is None:
        return DefinitionPlan(defn.id, Interval(now, now + 1), [], 0, [], [], 0, None)
    holes = holes_of(window, view.all, calendar)
    gaps = [g for hole in holes for g in hole]
    final_gaps = gaps_of(window, view.final, calendar) if view.provisional else gaps
    tf = defn.timeframe
    assigned, unfillable = router.assign(tf, final_gaps, now=now, pinned=defn.provider)

    busy = iv.normalize(pending)
    slices: list[NewSlice] = []
    reasons: dict[Interval, str] = dict(unfillable)
    waiting: list[Interval] = []  # not final yet for the provider that will serve it
    dense = densities or {}
    for name, parts in assigned:
        caps = with_density(router.capabilities(name), dense.get(name))
        by = split(caps, calendar, tf, parts, now)
        waiting += by[Finality.provisional] + by[Finality.pending]
        for run in _runs_between(by[Finality.final], busy):
            planned = plan_slices(run, tf, caps, calendar, now=now)
            slices += _slices(defn, planned.slices, name, Layer.historical, max_attempts)
            reasons |= {u: f"{name}: before its {tf.value} history reach" for u in planned.unfillable}

    # (``not_final``, not ``pending``: that keyword is the queue's pending work.)
    not_final = iv.normalize(waiting)
    realtime = None
    if not_final:
        realtime = router.realtime_for(tf, not_final[0].start, now=now, pinned=defn.provider)
    if realtime is not None:
        caps = with_density(router.capabilities(realtime), dense.get(realtime))
        servable = iv.intersect(not_final, [Interval(-_FAR, servable_until(caps, calendar, tf, now))])
        not_final = iv.subtract(not_final, servable)
        todo = iv.subtract(servable, view.provisional)
        for run in _runs_between(todo, busy):
            planned = plan_slices(run, tf, caps, calendar, now=now)
            slices += _slices(defn, planned.slices, realtime, Layer.intraday, max_attempts)
            not_final = iv.union(not_final, planned.unfillable)

    slices = split_newest(slices, calendar, tf)
    unfillable_list, why = _merge_by_reason(reasons)
    missing = sum(calendar.bar_count(tf, h[0].start, h[-1].end) for h in holes)
    return DefinitionPlan(
        definition_id=defn.id,
        window=window,
        gaps=gaps,
        holes=len(holes),
        slices=slices,
        unfillable=unfillable_list,
        bars_missing=missing,
        provider=slices[0].provider if slices else (assigned[0][0] if assigned else None),
        pending=not_final,
        unfillable_reasons=why,
    )


def split_newest(
    slices: Sequence[NewSlice], calendar: TradingCalendar, timeframe: Timeframe
) -> list[NewSlice]:
    """The newest slice, when big, cut at a session open into its last sessions and the rest.

    A chart opened on an empty store shows its right edge: the newest
    ``NEWEST_SCREEN_BARS`` bars. Fetched inside a full page (up to 50,000
    bars), they wait for that whole page to be generated, sent, validated
    and written; as a slice of their own (enqueued, so claimed, first: see
    :func:`order_for_batching`) they are readable after one small round-trip.
    It costs one request more per definition whose newest slice is over
    ``NEWEST_SPLIT_FACTOR`` screens, and none otherwise.
    """
    if not slices:
        return list(slices)
    newest = max(slices, key=lambda s: (s.end, s.start))
    opens = calendar.bar_opens(timeframe, newest.start, newest.end)
    if len(opens) <= NEWEST_SPLIT_FACTOR * NEWEST_SCREEN_BARS:
        return list(slices)
    first = int(opens[-NEWEST_SCREEN_BARS])
    sessions = calendar.sessions(first, first + 1)
    cut = sessions[0].open if sessions else first
    if not newest.start < cut < newest.end:
        return list(slices)
    rest = [s for s in slices if s is not newest]
    return [*rest, dataclasses.replace(newest, end=cut), dataclasses.replace(newest, start=cut)]


def _merge_by_reason(reasons: dict[Interval, str]) -> tuple[list[Interval], list[str]]:
    """Unfillable session pieces merged into stretches, one per run of the same reason.

    A 2010 window is one unfillable stretch, not one per session: the closed
    time between two pieces with the same reason joins them.
    """
    spans: list[Interval] = []
    why: list[str] = []
    for part in sorted(reasons):
        if why and why[-1] == reasons[part]:
            spans[-1] = Interval(spans[-1].start, max(spans[-1].end, part.end))
        else:
            spans.append(part)
            why.append(reasons[part])
    return spans, why


def _slices(
    defn: Definition, planned: Sequence[PlannedSlice], provider: str, layer: Layer, max_attempts: int
) -> list[NewSlice]:
    return [
        NewSlice(
            definition_id=defn.id,
            symbol_id=defn.symbol_id,
            timeframe=defn.timeframe,
            start=s.start,
            end=s.end,
            provider=provider,
            priority=defn.priority,
            max_attempts=max_attempts,
            layer=layer,
        )
        for s in planned
    ]


def _runs_between(gaps: Sequence[Interval], pending: Sequence[Interval]) -> list[list[Interval]]:
    """``gaps − pending``, cut into runs that no pending range lies between.

    The planner packs the gaps of one run into as few requests as it can,
    and a request spans everything between its first and last gap: planned
    as one run, two gaps on either side of a pending slice would fetch that
    slice's range again. Both arguments normalized.
    """
    runs: list[list[Interval]] = []
    j = 0
    for piece in iv.subtract(gaps, pending):
        # Pieces never overlap pending ranges: one starting before this piece (and not
        # before the previous one) lies between the two.
        between = False
        while j < len(pending) and pending[j].start < piece.start:
            between = True
            j += 1
        if runs and not between:
            runs[-1].append(piece)
        else:
            runs.append([piece])
    return runs


def order_for_batching(slices: Sequence[NewSlice]) -> list[NewSlice]:
    """Enqueue order: newest range first, same-range slices of many symbols together.

    The queue claims by priority, then enqueue time, then id (insertion
    order), so within one enqueue the slice holding a definition's most recent
    bars is claimed first: a chart opened on an empty store shows its right
    edge after one provider round-trip, and older history fills in behind it.
    """
    return sorted(
        slices, key=lambda s: (-s.priority, s.provider, s.timeframe, -s.end, -s.start, s.layer, s.symbol_id)
    )
