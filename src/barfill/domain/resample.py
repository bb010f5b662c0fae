"""Resampling: coarser bars derived from finer ones (m1 → m5/m15/m30/h1, m15 → h1/h4, d1 → w1).

Resampled bars are derived data (Decision 7). Buckets follow the exchange's
clock in its own time zone, exactly as :meth:`TradingCalendar.bucket` labels
them (the h1 bar holding 09:30-09:59 New York time is labelled 09:00, d1 bars
00:00 local, w1 bars Monday 00:00 local), so DST changes and half days need no
special case here. A bucket may only be written once its whole trading time
has been fetched (:func:`complete_buckets`), and it is always recomputed from
*all* of its source bars (:func:`touched_buckets` says which range to re-read),
never only from the slice that touched it.

All times are Unix seconds, UTC; ranges are half-open ``[start, end)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from barfill.domain.bars import I64, BarBatch
from barfill.domain.calendar import TradingCalendar
from barfill.domain.intervals import Interval, normalize, subtract
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

Bools = np.ndarray[Any, np.dtype[np.bool_]]


def bucket_ends(timeframe: Timeframe, labels: I64, calendar: TradingCalendar) -> I64:
    """The label of the bar that follows each bar labelled ``labels``: where that bar ends.

    This is the nominal end on the exchange's clock, not clipped to the
    session close: the end of the h1 bar labelled 15:00 New York time is
    16:00, of a d1 bar the next local midnight, of a w1 bar the next Monday
    local midnight. Across a DST change a bucket is 1 h shorter or longer in
    real time (an h4 or d1 bucket) and this still answers correctly.

    Args:
        timeframe: the bars' timeframe.
        labels: bar labels (aligned, as :meth:`TradingCalendar.bucket` returns).
        calendar: the exchange calendar whose clock the bars follow.

    Returns:
        UTC seconds, one per label, each greater than its label.
    """
    labels = np.asarray(labels, dtype=np.int64)
    # Half a bar past the nominal end lies inside the next bar whatever the DST shift (<= 1 h,
    # and bars of 1 h keep their real length), so its bucket is the next label.
    return calendar.bucket(timeframe, labels + timeframe.seconds * 3 // 2)


def touched_buckets(target: Timeframe, start: int, end: int, calendar: TradingCalendar) -> tuple[int, int]:
    """The range of whole ``target`` buckets that a source slice ``[start, end)`` touches.

    The engine re-reads every source bar in the returned range from the store
    and recomputes each touched bucket from all of them: a slice that fetched
    only 10:00-10:30 of m1 must not produce an h1 bar from those 30 minutes
    when the store already holds 10:30-10:59.

    Returns:
        ``(first_label, end_of_last_bucket)``: half-open, UTC seconds.

    Raises:
        InvalidInput: when ``end <= start``.
    """
    if end <= start:
        raise InvalidInput("range", f"start before end, got start={start} end={end}")
    first, last = calendar.bucket(target, np.asarray([start, end - 1], dtype=np.int64)).tolist()
    return int(first), int(bucket_ends(target, np.asarray([last], dtype=np.int64), calendar)[0])


def complete_buckets(
    target: Timeframe,
    labels: I64,
    covered: Sequence[Interval],
    calendar: TradingCalendar,
    *,
    extended: bool = False,
) -> Bools:
    """Which buckets have had all of their trading time fetched.

    A bucket ``[label, end)`` is complete when its trading time (regular or
    extended sessions) lies entirely inside ``covered``. Closed-market time
    inside a bucket needs no coverage (the 09:00 h1 bucket needs only
    09:30-10:00). Coverage is what was fetched, not which bars exist: a fully
    covered bucket without a single trade is complete and simply gets no bar.
    Only complete buckets may be written as resampled bars.

    Args:
        target: the resampled timeframe.
        labels: bucket labels (aligned to ``target``), UTC seconds.
        covered: fetched intervals of the *source* timeframe (any order; merged here).
        calendar: the exchange calendar.
        extended: whether the bars include pre/post-market time.

    Returns:
        One bool per label.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.bool_)
    ends = bucket_ends(target, labels, calendar)
    trading = calendar.trading_intervals(int(labels.min()), int(ends.max()), extended=extended)
    missing = subtract(trading, normalize(covered))
    if not missing:
        return np.ones(len(labels), dtype=np.bool_)
    miss_start = np.asarray([m.start for m in missing], dtype=np.int64)
    miss_end = np.asarray([m.end for m in missing], dtype=np.int64)
    # The first missing interval ending after the label must start at or after the bucket's end.
    j = np.searchsorted(miss_end, labels, side="right")
    nxt = np.minimum(j, len(missing) - 1)
    return np.asarray((j == len(missing)) | (miss_start[nxt] >= ends), dtype=np.bool_)


def resample(batch: BarBatch, target: Timeframe, calendar: TradingCalendar, *, provider: str) -> BarBatch:
    """Aggregate ``batch`` into ``target`` bars, one per bucket that holds any source bar.

    open = first open, high = max, low = min, close = last close, volume =
    sum; vwap = the volume-weighted mean of the source vwaps (NaN when any
    source vwap is NaN or the bucket's volume is 0); trade_count = sum (-1
    when any source count is unknown). The caller decides which buckets are
    complete (:func:`complete_buckets`) and feeds every source bar of each
    bucket it writes, all from one source (never a splice of providers). The
    result keeps the source's adjustment ``basis``.

    Args:
        batch: source bars of one symbol (any order; duplicates are the validator's job).
        target: a timeframe coarser than ``batch.timeframe``.
        calendar: the exchange calendar whose clock defines the buckets.
        provider: the provider name stamped on the result (e.g. ``"polygon+resample"``).

    Raises:
        InvalidInput: when ``target`` is not coarser than the source timeframe.
    """
    if target.seconds <= batch.timeframe.seconds:
        raise InvalidInput("timeframe", f"a timeframe coarser than {batch.timeframe.value}", target.value)
    if len(batch) == 0:
        return BarBatch.empty(batch.symbol, target, provider, batch.basis)
    if np.any(np.diff(batch.ts) < 0):
        batch = batch.take(np.argsort(batch.ts, kind="stable"))
    labels = calendar.bucket(target, batch.ts)
    starts = np.flatnonzero(np.concatenate(([True], labels[1:] != labels[:-1])))
    lasts = np.concatenate((starts[1:], [len(labels)])) - 1

    volume = np.add.reduceat(batch.volume, starts)
    weighted = np.add.reduceat(np.nan_to_num(batch.vwap * batch.volume), starts)
    vwap_missing = np.add.reduceat(np.isnan(batch.vwap).astype(np.int64), starts) > 0
    vwap = np.full(len(starts), np.nan)
    np.divide(weighted, volume, out=vwap, where=~vwap_missing & (volume != 0))
    trades = np.add.reduceat(batch.trade_count, starts)
    trades[np.minimum.reduceat(batch.trade_count, starts) < 0] = -1

    return BarBatch(
        batch.symbol,
        target,
        provider,
        ts=np.asarray(labels[starts], dtype=np.int64),
        open=batch.open[starts],
        high=np.maximum.reduceat(batch.high, starts),
        low=np.minimum.reduceat(batch.low, starts),
        close=batch.close[lasts],
        volume=volume,
        vwap=vwap,
        trade_count=np.asarray(trades, dtype=np.int64),
        basis=batch.basis,
    )
