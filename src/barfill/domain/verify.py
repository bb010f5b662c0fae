"""Re-verification of recent final sessions: when it is due, what one request covers, what changed.

Vendors correct their data for a few days after a session (late prints,
busted trades, consolidated volume). barfill re-fetches each final session
of every (symbol, timeframe) with an enabled definition **once**, ``n``
sessions after it became final, from the provider whose bars are stored,
and writes and counts the differences (vendor corrections).

* **Due**: session ``i`` is due once session ``i + n`` is final for the
  provider (:func:`barfill.domain.finality.session_final_at`): "n sessions
  after it became final", on the exchange's calendar, weekends and holidays
  not counted. A session whose final bars were stored after it was already
  due needs no check: its bars are as late as a re-fetch would be.
* **Range**: session ``i``'s bars of any timeframe up to d1 are labelled in
  ``[local midnight, extended close)``; consecutive due sessions are asked
  for in one request, as far as the provider's page allows. w1 is not
  verified: its bars are derived from d1 or re-fetched with it.
* **Diff**: bar by bar on ``ts``: *changed* (any value differs; NaN vwap
  equals NaN), *added* (new ``ts``), *removed* (stored ``ts`` no longer
  served). Unchanged bars are not rewritten.

Pure: times are Unix seconds UTC, ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import TradingCalendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.finality import session_final_at
from barfill.domain.timeframes import Timeframe

NEVER = float(2**62)
VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "trade_count")


def verifiable(timeframe: Timeframe) -> bool:
    """Whether sessions of ``timeframe`` are re-verified (every timeframe up to d1)."""
    return timeframe != Timeframe.w1


def sessions_in(cal: TradingCalendar, start: int, end: int) -> range:
    """Indices of the sessions whose bars (``[midnight, extended close)``) meet ``[start, end)``."""
    i0 = int(np.searchsorted(cal.ext_closes, start, side="right"))
    i1 = int(np.searchsorted(cal.midnights, end, side="left"))
    return range(i0, max(i0, i1))


def session_span(cal: TradingCalendar, first: int, last: int) -> tuple[int, int]:
    """``[start, end)`` holding every bar of sessions ``first`` .. ``last`` (inclusive)."""
    return int(cal.midnights[first]), int(cal.ext_closes[last])


def due_at(caps: Capabilities, cal: TradingCalendar, index: int, n: int) -> float:
    """When session ``index`` is due for re-verification: session ``index + n`` is final."""
    later = index + n
    if later >= len(cal.midnights):
        return NEVER
    return float(session_final_at(caps, cal, later))


def coalesce(indices: Sequence[int], fits: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """Runs of consecutive session indices, ``(first, last)`` inclusive, each one request.

    A run grows while ``fits(first, last)`` (the provider's page holds it);
    one session always makes a request of its own.
    """
    runs: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if runs and runs[-1][1] == i - 1 and fits(runs[-1][0], i):
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


@dataclass(frozen=True)
class BarDiff:
    """What a re-fetch changed. Index arrays into the stored (``old``) and fetched (``new``) batches."""

    changed_old: np.ndarray[Any, np.dtype[np.intp]]
    changed_new: np.ndarray[Any, np.dtype[np.intp]]
    added: np.ndarray[Any, np.dtype[np.intp]]  # into new
    removed: np.ndarray[Any, np.dtype[np.intp]]  # into old

    def __len__(self) -> int:
        return len(self.changed_new) + len(self.added) + len(self.removed)

    def written(self) -> np.ndarray[Any, np.dtype[np.intp]]:
        """Indices into ``new`` of the bars to write (changed and added), in time order."""
        return np.sort(np.concatenate([self.changed_new, self.added]))


def diff(old: BarBatch, new: BarBatch) -> BarDiff:
    """Bar-by-bar differences between stored bars and a re-fetch of the same range (both ts-sorted)."""
    common, io, inew = np.intersect1d(old.ts, new.ts, assume_unique=True, return_indices=True)
    same = np.ones(len(common), dtype=np.bool_)
    for name in VALUE_COLUMNS:
        a, b = getattr(old, name)[io], getattr(new, name)[inew]
        if name == "vwap":
            same &= (a == b) | (np.isnan(a) & np.isnan(b))
        else:
            same &= a == b
    return BarDiff(
        changed_old=io[~same],
        changed_new=inew[~same],
        added=np.flatnonzero(~np.isin(new.ts, old.ts)),
        removed=np.flatnonzero(~np.isin(old.ts, new.ts)),
    )


def per_session(cal: TradingCalendar, ts: Sequence[int]) -> dict[int, int]:
    """How many of the bar times ``ts`` fall in each session, keyed by the session's local midnight."""
    out: dict[int, int] = {}
    for t in ts:
        i = int(np.searchsorted(cal.midnights, t, side="right")) - 1
        if i >= 0:
            key = int(cal.midnights[i])
            out[key] = out.get(key, 0) + 1
    return out


def values_of(batch: BarBatch, i: int) -> dict[str, float | int | None]:
    """One bar's values as plain JSON-able numbers (vwap None when unknown, trade_count None when -1)."""
    vwap = float(batch.vwap[i])
    trades = int(batch.trade_count[i])
    return {
        "open": float(batch.open[i]),
        "high": float(batch.high[i]),
        "low": float(batch.low[i]),
        "close": float(batch.close[i]),
        "volume": float(batch.volume[i]),
        "vwap": None if np.isnan(vwap) else vwap,
        "trade_count": None if trades < 0 else trades,
    }
