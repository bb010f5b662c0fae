"""From a definition to the slices that fill its gaps: shared by ``ensure`` and the tick.

The split that matters: gaps in sessions that have closed go to the router's
historical providers and are stored as final bars; gaps in the session that is
trading *now* go to the realtime providers, are stored in the ``intraday``
layer and covered provisionally, so they are fetched again (and finally, after
the close) once that coverage expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from barfill.domain import intervals as iv
from barfill.domain.calendar import TradingCalendar
from barfill.domain.intervals import Interval
from barfill.domain.planner import find_gaps, plan_slices
from barfill.domain.slices import NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.providers.router import Router
from barfill.store.definitions import Definition

DAY_S = 86_400


@dataclass(frozen=True)
class DefinitionPlan:
    """What one definition needs now. Times are Unix seconds, UTC."""

    definition_id: int
    window: Interval
    gaps: list[Interval]  # missing trading time, one interval per session piece
    holes: int  # missing stretches of the window (closed time inside one does not split it)
    slices: list[NewSlice]
    unfillable: list[Interval]
    bars_missing: int
    provider: str | None  # the provider the slices were sized for (historical part)


@lru_cache(maxsize=1024)
def closed_end(calendar: TradingCalendar, timeframe: Timeframe, now: int) -> int:
    """The end of the last *complete* bar of ``timeframe`` at ``now``: never plan a forming bar.

    Cached: a tick asks it once per definition with the same ``now``.
    """
    label = int(calendar.bucket(timeframe, np.asarray([now]))[0])
    end = int(calendar.bar_end(timeframe, np.asarray([label]))[0])
    return end if end <= now else label


def reaches_open_session(calendar: TradingCalendar, end: int, now: float) -> bool:
    """Whether [.., end) reaches into a session that has not closed at ``now``.

    Such bars are provisional (layer ``intraday``, coverage that expires); all
    others are final.
    """
    i = int(np.searchsorted(calendar.opens, end, side="left")) - 1
    return i >= 0 and float(calendar.closes[i]) > now


def window_of(defn: Definition, calendar: TradingCalendar, now: int) -> Interval | None:
    """The definition's desired window, ending at the last complete bar; None if empty."""
    if defn.window_days is not None:
        start, end = now - defn.window_days * DAY_S, now
    else:
        assert defn.start is not None and defn.end is not None
        start, end = defn.start, defn.end
    end = min(end, closed_end(calendar, defn.timeframe, now))
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
    coverage: Sequence[Interval],
    calendar: TradingCalendar,
    router: Router,
    *,
    now: int,
    max_attempts: int,
) -> DefinitionPlan:
    """Gaps of one definition and the fewest slices that fill them."""
    window = window_of(defn, calendar, now)
    if window is None:
        return DefinitionPlan(defn.id, Interval(now, now + 1), [], 0, [], [], 0, None)
    holes = holes_of(window, coverage, calendar)
    gaps = [g for hole in holes for g in hole]
    session = calendar.session_at(now)
    live_from = int(calendar.opens[session]) if session is not None else None
    parts: list[list[Interval]] = [gaps]
    if live_from is not None:
        parts = [
            iv.subtract(gaps, [Interval(live_from, window.end + 1)]),
            iv.intersect(gaps, [Interval(live_from, window.end + 1)]),
        ]
    slices: list[NewSlice] = []
    unfillable: list[Interval] = []
    sized_for: str | None = None
    for part in parts:
        if not part:
            continue
        name = _provider_for(router, defn, part, now)
        if name is None:
            unfillable.extend(part)
            continue
        sized_for = sized_for or name
        plan = plan_slices(part, defn.timeframe, router.capabilities(name), calendar, now=now)
        unfillable.extend(plan.unfillable)
        slices.extend(
            NewSlice(
                definition_id=defn.id,
                symbol_id=defn.symbol_id,
                timeframe=defn.timeframe,
                start=s.start,
                end=s.end,
                provider=name,
                priority=defn.priority,
                max_attempts=max_attempts,
            )
            for s in plan.slices
        )
    missing = sum(len(calendar.bar_opens(defn.timeframe, h[0].start, h[-1].end)) for h in holes)
    return DefinitionPlan(
        defn.id, window, gaps, len(holes), slices, iv.normalize(unfillable), missing, sized_for
    )


def _provider_for(router: Router, defn: Definition, part: Sequence[Interval], now: int) -> str | None:
    start, end = part[0].start, part[-1].end
    names = router.choose(defn.timeframe, start, end, now=now, pinned=defn.provider)
    if names:
        return names[0]
    # Nobody reaches back far enough: size for the deepest provider that serves the
    # timeframe; the planner reports what lies beyond its history as unfillable.
    return router.deepest(defn.timeframe, pinned=defn.provider)


def order_for_batching(slices: Sequence[NewSlice]) -> list[NewSlice]:
    """Enqueue order: newest range first, same-range slices of many symbols together.

    The queue claims by priority, then enqueue time, then id (insertion
    order), so within one enqueue the slice holding a definition's most recent
    bars is claimed first: a chart opened on an empty store shows its right
    edge after one provider round-trip, and older history fills in behind it.
    """
    return sorted(slices, key=lambda s: (-s.priority, s.provider, s.timeframe, -s.end, -s.start, s.symbol_id))
