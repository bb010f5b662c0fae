"""Bad bars: the documented rule that flags a provider's bad prints. Pure numpy.

Some providers publish bars that are plainly wrong: one bar at 100× the
price around it, or an empty (zero-volume) bar in the middle of a busy
session. Such a bar is **flagged**, never deleted: it stays in the store
with its reason, is left out of reads by default and shown with
``include_flagged``. A flag is not a gap: coverage says what was fetched.

The rule, over the bars of one (symbol, timeframe, provider, layer) in time
order:

``spike``
    A bar whose high, low or close is at least ``SPIKE_RATIO`` (10×) or at
    most ``1 / SPIKE_RATIO`` (0.1×) of its reference, the median of its two
    neighbours' closes, **while those neighbours agree** (the larger close at
    most ``AGREE_RATIO`` (2×) the smaller). Agreeing neighbours mean the price
    came back within one bar: a print, not a move. A split (or any real jump)
    does not revert, so the bars on either side of it never have agreeing
    neighbours across the step and are never flagged. Why 10×: no listed
    stock moves tenfold and back within one bar, while decimal-point and
    unit errors (×100, ×1000, /100) — the bad prints vendors publish — are
    all beyond it. Why 2×: far below 10×, so a flagged bar stands out from
    both neighbours by at least 5×, and above any ordinary one-bar swing. The
    first and last bar of a run have one neighbour and are never flagged.

``zero_volume``
    A bar with volume 0 inside a regular session (not pre- or post-market)
    of an intraday timeframe, when that session's median volume per bar is at
    least ``LIQUID_MEDIAN_VOLUME`` (1,000). A symbol trading a thousand
    shares in a typical bar trades in every bar; a provider's empty bar there
    is a placeholder, not a quiet minute. For thin symbols empty bars are
    genuine (and some feeds publish them), so they are kept. Day and week
    bars have no session of bars around them and are not judged by this rule.

A bar both spiking and empty is flagged ``spike``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPIKE = "spike"
ZERO_VOLUME = "zero_volume"
SPIKE_RATIO = 10.0
AGREE_RATIO = 2.0
LIQUID_MEDIAN_VOLUME = 1_000.0

F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


def spikes(high: F64, low: F64, close: F64) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which bars are one-bar spikes (see the module doc). Arrays in time order, one run of bars."""
    n = len(close)
    out = np.zeros(n, dtype=np.bool_)
    if n < 3:
        return out
    prev, nxt = close[:-2], close[2:]
    lo_n, hi_n = np.minimum(prev, nxt), np.maximum(prev, nxt)
    with np.errstate(divide="ignore", invalid="ignore"):
        agree = (lo_n > 0) & (hi_n <= AGREE_RATIO * lo_n)
        ref = (prev + nxt) / 2.0  # the median of two values
        mid = slice(1, n - 1)
        up = np.maximum(np.maximum(high[mid], low[mid]), close[mid]) >= SPIKE_RATIO * ref
        down = np.minimum(np.minimum(high[mid], low[mid]), close[mid]) <= ref / SPIKE_RATIO
    out[1:-1] = agree & (up | down)
    return out


def empty_in_liquid_session(volume: F64, session: I64) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which bars have zero volume inside a liquid regular session.

    Args:
        volume: each bar's volume, in time order.
        session: each bar's regular-session number (non-decreasing over the
            bars inside sessions), or -1 for a bar outside regular hours
            (never flagged).
    """
    out = np.zeros(len(volume), dtype=np.bool_)
    inside = np.flatnonzero(session >= 0)
    if not len(inside):
        return out
    keys, vols = session[inside], volume[inside]
    starts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(keys)])
    # Every run's median at once (as np.median: the middle value, or the mean of the two
    # middle ones; NaN if the run holds a NaN): sort by run, then volume within it.
    run = np.repeat(np.arange(len(starts)), sizes)
    ordered = vols[np.lexsort((vols, run))]
    median = (ordered[starts + (sizes - 1) // 2] + ordered[starts + sizes // 2]) / 2.0
    median[np.add.reduceat(np.isnan(vols), starts) > 0] = np.nan
    liquid = np.repeat(median >= LIQUID_MEDIAN_VOLUME, sizes)
    out[inside] = liquid & (vols == 0)
    return out


def flag_reasons(
    high: F64, low: F64, close: F64, volume: F64, session: I64 | None
) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Each bar's flag: ``"spike"``, ``"zero_volume"`` or None. Arrays in time order.

    ``session`` is None for timeframes the zero-volume rule does not judge
    (d1, w1); else as in :func:`empty_in_liquid_session`.
    """
    out = np.full(len(close), None, dtype=object)
    if session is not None:
        out[empty_in_liquid_session(volume, session)] = ZERO_VOLUME
    out[spikes(high, low, close)] = SPIKE
    return out
