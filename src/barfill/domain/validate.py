"""Bar validation: the gate between a provider's answer and the store.

Pure: the caller passes ``now`` (Unix seconds); nothing here reads a clock.

Policy: **a batch with any bad bar is rejected whole.** The worker raises
:class:`barfill.errors.InvalidBars` with these reasons, the slice records them
and nothing of the batch lands. Dropping only the bad bars is not an option:
the slice's whole [start, end) would then be recorded as covered and the
dropped bars would never be fetched again — a silent hole. A provider that
knowingly includes something we must not store (Yahoo's live-quote row,
extended-hours minutes) removes it in its adapter, where the reason is known;
a forming bar is reported here (rule ``forming``) or removed on purpose with
:func:`drop_forming` by a caller that knows it asked for the current session.

Rules, each reported per bar as ``"<ts ISO UTC> <rule>: <values>"``:

* ``finite``: open, high, low, close and volume are finite (no NaN, no inf);
  vwap is finite or missing (NaN).
* ``positive``: open, high, low and close are > 0.
* ``high``: high >= max(open, close); ``low``: low <= min(open, close);
  ``range``: low <= high.
* ``volume``: volume >= 0.
* ``aligned``: ``ts`` is a label of the batch's timeframe on the calendar's
  local clock (:meth:`TradingCalendar.is_aligned`).
* ``window``: start <= ts < end.
* ``order``: ts strictly increasing (a repeat is a duplicate bar).
* ``forming`` (only when ``final``): the bar is complete by ``now``
  (:meth:`TradingCalendar.bar_end` <= now). The worker passes ``final=True``
  for both layers: a provisional range also ends at the last complete bar.
* ``not_final`` (only with ``final_until``): a bar of a final (historical)
  batch lies before :func:`barfill.domain.finality.final_until` for its
  provider at ``now``; a bar after it could still change.

At most :data:`MAX_EXAMPLES` bars are named per rule, then one line counts the
rest, so a 200,000-bar batch that is wrong everywhere stays readable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import TradingCalendar

MAX_EXAMPLES = 10

_Mask = np.ndarray[Any, np.dtype[np.bool_]]
_TIME_RULES = frozenset({"aligned", "window", "order", "forming", "not_final"})


def _iso(ts: int) -> str:
    return str(np.datetime64(int(ts), "s")) + "Z"


def _report(reasons: list[str], batch: BarBatch, bad: _Mask, rule: str, what: str) -> None:
    idx = np.flatnonzero(bad)
    for i in idx[:MAX_EXAMPLES].tolist():
        if rule in _TIME_RULES:
            values = f"ts={int(batch.ts[i])}"
        else:
            values = (
                f"o={float(batch.open[i])!r} h={float(batch.high[i])!r} l={float(batch.low[i])!r} "
                f"c={float(batch.close[i])!r} v={float(batch.volume[i])!r}"
            )
        reasons.append(f"{_iso(int(batch.ts[i]))} {rule}: {what} ({values})")
    if len(idx) > MAX_EXAMPLES:
        reasons.append(f"{rule}: {len(idx) - MAX_EXAMPLES} more bars fail ({what})")


def validate_bars(
    batch: BarBatch,
    *,
    start: int,
    end: int,
    calendar: TradingCalendar,
    now: float,
    final: bool = True,
    final_until: int | None = None,
) -> list[str]:
    """Reasons ``batch`` must not be stored; an empty list means it is valid.

    Args:
        batch: one symbol's bars of one timeframe, as a provider returned them.
        start, end: the slice's window ``[start, end)``, Unix seconds UTC.
        calendar: the symbol's trading calendar (labels, bar ends).
        now: the current time, Unix seconds UTC.
        final: no forming bar allowed (every bar ended at ``now``).
        final_until: for a historical batch, the rule's boundary for its
            provider at ``now`` (:func:`barfill.domain.finality.final_until`):
            every bar must be labelled before it.
    """
    reasons: list[str] = []
    if len(batch) == 0:
        return reasons
    o, h, lo, c, v, ts = batch.open, batch.high, batch.low, batch.close, batch.volume, batch.ts
    finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
    vwap_ok = np.isnan(batch.vwap) | np.isfinite(batch.vwap)
    _report(reasons, batch, ~(finite & vwap_ok), "finite", "prices, volume and vwap must be finite")
    # Comparisons below only on finite rows: a NaN is reported once, above.
    _report(
        reasons,
        batch,
        finite & ~((o > 0) & (h > 0) & (lo > 0) & (c > 0)),
        "positive",
        "prices must be > 0",
    )
    _report(reasons, batch, finite & (h < np.maximum(o, c)), "high", "high < max(open, close)")
    _report(reasons, batch, finite & (lo > np.minimum(o, c)), "low", "low > min(open, close)")
    _report(reasons, batch, finite & (lo > h), "range", "low > high")
    _report(reasons, batch, finite & (v < 0), "volume", "volume < 0")
    in_window = (ts >= start) & (ts < end)
    _report(reasons, batch, ~in_window, "window", f"outside [{_iso(start)}, {_iso(end)})")
    # Alignment and bar ends need the calendar's range; out-of-window bars are already reported.
    inside = ts[in_window]
    if len(inside):
        aligned = np.ones(len(ts), dtype=bool)
        aligned[in_window] = calendar.is_aligned(batch.timeframe, inside)
        _report(
            reasons,
            batch,
            ~aligned,
            "aligned",
            f"not a {batch.timeframe.value} label on the {calendar.name} local clock",
        )
        if final:
            forming = np.zeros(len(ts), dtype=bool)
            forming[in_window] = calendar.bar_end(batch.timeframe, inside) > now
            _report(reasons, batch, forming, "forming", "bar not complete yet (ends after now)")
        if final_until is not None:
            late = np.zeros(len(ts), dtype=bool)
            late[in_window] = inside >= final_until
            _report(
                reasons, batch, late, "not_final", f"bar of a session not final before {_iso(final_until)}"
            )
    order = np.zeros(len(ts), dtype=bool)
    order[1:] = ts[1:] <= ts[:-1]
    _report(reasons, batch, order, "order", "ts not strictly increasing (duplicate or out of order)")
    return reasons


def drop_forming(batch: BarBatch, calendar: TradingCalendar, now: float) -> BarBatch:
    """``batch`` without the bars that are not complete at ``now``.

    For adapters whose provider appends the forming bar, and for realtime
    callers that store complete bars as final and the rest as intraday.
    """
    if len(batch) == 0:
        return batch
    return batch.take(calendar.bar_end(batch.timeframe, batch.ts) <= now)
