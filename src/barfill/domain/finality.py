"""The live-edge rule: whether a range of bars is final, provisional or not servable yet.

One rule, used by the planner (what to plan, on which layer), the router
(which provider may serve it now), the worker (re-checked at claim time on the
database clock) and validation. Pure: ``now`` is an argument (the database
clock, Unix seconds UTC); every provider fact comes from its
:class:`~barfill.domain.capabilities.Capabilities`.

The facts it encodes:

* A US-stock session's data can change until its **extended close** (20:00
  New York, 17:00 after an early close): late prints, corrections, and the
  day bar's volume. A session is therefore *final* for a provider once
  ``now >= its extended close`` — or, for a provider that publishes later
  (flat files: 07:00 the next calendar day, ``caps.published_at_local_s``),
  once it is published. Before that no historical provider is asked for it.
* A *realtime* provider (``caps.realtime``) may serve a range that is not
  final yet **provisionally** (layer ``intraday``, coverage that expires), up
  to the end of the last *complete* bar at ``now`` — never a forming bar.
* Anything else is *pending*: not servable yet, planned later, never failed.

Ranges are ``[start, end)`` of bar labels, Unix seconds UTC. A range's
finality is that of the session of its last bar: the session whose date's
local midnight is the last one before ``end``. Every bar of a session is
labelled at or after that midnight (d1: exactly there; intraday: 04:00 or
later), except the w1 bar, labelled on the Monday before; pass the timeframe
where a boundary is used to cut ranges, so that it falls on a bar label.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from functools import lru_cache

import numpy as np

from barfill.domain import intervals as iv
from barfill.domain.calendar import TradingCalendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.intervals import Interval
from barfill.domain.resample import bucket_ends
from barfill.domain.timeframes import Timeframe

_DAY = 86_400
_FAR = 2**62  # "beyond any time" for interval arithmetic


class Finality(StrEnum):
    """What can be done with a range of bars at a given time, for a given provider."""

    final = "final"  # stored once, in the historical layer, never fetched again
    provisional = "provisional"  # a realtime provider serves it to the intraday layer, refreshed
    pending = "pending"  # not servable yet: plan it later


def session_final_at(caps: Capabilities, cal: TradingCalendar, index: int) -> int:
    """When session ``index`` of ``cal`` becomes final for ``caps``'s provider (Unix seconds UTC).

    Its extended close, or its publication time when the provider declares
    one (``published_at_local_s`` after local midnight of the session date,
    on the exchange's local clock: DST-correct), whichever is later.
    """
    ext_close = int(cal.ext_closes[index])
    if caps.published_at_local_s is None:
        return ext_close
    midnight = int(cal.midnights[index])
    guess = midnight + int(caps.published_at_local_s)
    offsets = cal.utc_offset(np.asarray([midnight, guess], dtype=np.int64))
    published = guess - int(offsets[1] - offsets[0])
    return max(ext_close, published)


def final_at(caps: Capabilities, cal: TradingCalendar, end: int) -> int:
    """When ``[.., end)`` becomes final for ``caps``'s provider: its last session's finality time.

    ``final_at(caps, cal, end) <= now`` exactly when ``end <= final_until(caps, cal, now)``.
    A range before the calendar's first session is final at its first open.
    """
    i = int(np.searchsorted(cal.midnights, end, side="left")) - 1
    if i < 0:
        return cal.first
    return session_final_at(caps, cal, i)


def final_until(
    caps: Capabilities, cal: TradingCalendar, now: float, timeframe: Timeframe | None = None
) -> int:
    """The boundary below which every bar is final for ``caps``'s provider at ``now``.

    A range ``[start, end)`` is final iff ``end <= final_until(...)``. The
    value is the local midnight (d1 label) of the first session that is not
    final at ``now``; it may lie after ``now`` (e.g. on a weekend: Monday's
    midnight), since nothing trades in between. With ``timeframe``, it is
    floored to a label of that timeframe (only w1 moves: to the Monday of that
    week, because the week's bar is not final before its last session is).
    """
    # Sessions with ext_close > now are not final; a publishing provider may lag a few more.
    i = int(np.searchsorted(cal.ext_closes, now, side="right"))
    while i > 0 and session_final_at(caps, cal, i - 1) > now:
        i -= 1
    boundary = int(cal.midnights[i]) if i < len(cal.midnights) else int(cal.midnights[-1]) + _DAY
    if timeframe is not None and timeframe == Timeframe.w1:
        boundary = int(cal.bucket(timeframe, np.asarray([boundary], dtype=np.int64))[0])
    return boundary


@lru_cache(maxsize=256)
def last_complete_end(cal: TradingCalendar, timeframe: Timeframe, now: float) -> int:
    """A bar-label boundary: every bar of ``timeframe`` labelled before it is complete at ``now``.

    A bar is complete at :meth:`TradingCalendar.bar_end` (its nominal end, or
    its session's regular close; d1 at the close, w1 at its week's last
    close). Returns the label of the bar holding ``now`` when that bar is
    still forming, else the label after it (for d1 after the close: the next
    midnight), so a range ending here never holds a forming bar.

    Cached: a tick asks it for every definition at one ``now``, and each
    answer costs a time-zone lookup (calendars are shared and never change).
    """
    ts = int(now)
    label = cal.bucket(timeframe, np.asarray([ts], dtype=np.int64))
    if int(cal.bar_end(timeframe, label)[0]) <= ts:
        return int(bucket_ends(timeframe, label, cal)[0])
    return int(label[0])


def servable_until(caps: Capabilities, cal: TradingCalendar, timeframe: Timeframe, now: float) -> int:
    """The boundary below which ``caps``'s provider may serve bars at ``now``.

    A non-realtime provider serves final ranges only (:func:`final_until`); a
    realtime one also serves what is complete but not final yet, up to
    :func:`last_complete_end`.
    """
    final = final_until(caps, cal, now, timeframe)
    if not caps.realtime:
        return final
    return max(final, last_complete_end(cal, timeframe, now))


def classify(
    caps: Capabilities, cal: TradingCalendar, timeframe: Timeframe, start: int, end: int, now: float
) -> Finality:
    """The finality of the whole range ``[start, end)`` for ``caps``'s provider at ``now``.

    Decided by its end (its latest bar): :func:`split` cuts a range that straddles.
    """
    del start  # the latest bar decides; kept in the signature so callers pass whole ranges
    if end <= final_until(caps, cal, now, timeframe):
        return Finality.final
    if caps.realtime and end <= servable_until(caps, cal, timeframe, now):
        return Finality.provisional
    return Finality.pending


def split(
    caps: Capabilities,
    cal: TradingCalendar,
    timeframe: Timeframe,
    ranges: Sequence[Interval],
    now: float,
) -> dict[Finality, list[Interval]]:
    """``ranges`` cut into their final, provisional and pending parts for ``caps``'s provider at ``now``.

    Every key is present; each list is normalized. The cut points are
    :func:`final_until` and :func:`servable_until` (bar labels of
    ``timeframe``, or the end of the last complete bar), so no bar is split.
    """
    items = iv.normalize(ranges)
    final_b = final_until(caps, cal, now, timeframe)
    serve_b = servable_until(caps, cal, timeframe, now)
    return {
        Finality.final: iv.intersect(items, [Interval(-_FAR, final_b)]),
        Finality.provisional: iv.intersect(items, [Interval(final_b, serve_b)]) if serve_b > final_b else [],
        Finality.pending: iv.intersect(items, [Interval(max(final_b, serve_b), _FAR)]),
    }
