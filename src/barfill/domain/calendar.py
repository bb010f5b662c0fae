"""Trading calendars: which minutes can hold a bar, and where bars start.

A thin, vectorized layer over ``exchange_calendars`` (XNYS by default; ``24/7``
for crypto). Holidays, early closes, special closures and DST all come from
the calendar library, never from hand-written rules. Times are Unix seconds,
UTC; "local" means the exchange's time zone.

Nothing here imports pandas: the sessions come as plain arrays from
:mod:`barfill.domain.schedules` (a file built once by ``exchange_calendars``),
and UTC offsets from a table of the zone's transitions read from ``zoneinfo``,
so a worker process never pays for pandas and pyarrow.

Bar labels: intraday bars (m1..h4) start on the exchange's local clock
(``floor(local_time, timeframe)``: the h1 bar holding 09:30-09:59 is labelled
09:00 New York time, as Polygon and Alpaca label it); a d1 bar is labelled
00:00 local of its session date; a w1 bar 00:00 local of the Monday of its
week. Extended hours (US equities) run from 04:00 local to four hours after
the regular close (20:00, or 17:00 after an early close).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from barfill.domain.bars import I64
from barfill.domain.intervals import Interval
from barfill.domain.schedules import CALENDAR_START, Schedule, load_schedule
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

__all__ = ["CALENDAR_START", "Session", "TradingCalendar", "get_calendar"]
_PRE_MARKET_S = 4 * 3600  # 04:00 local
_POST_MARKET_S = 4 * 3600  # until close + 4h
_DAY = 86_400
_MONDAY_OFFSET_DAYS = 4  # 1970-01-01 was a Thursday: day 4 is Monday 1970-01-05


@dataclass(frozen=True)
class Session:
    """One trading session: its local date (``YYYY-MM-DD``) and [open, close) in UTC seconds."""

    date: str
    open: int
    close: int


class TradingCalendar:
    """Sessions of one exchange as numpy arrays, with the questions barfill asks of them."""

    def __init__(self, name: str = "XNYS", *, schedule: Schedule | None = None) -> None:
        """The calendar ``name`` (its sessions from ``schedule``, else loaded: see :func:`load_schedule`).

        Raises:
            InvalidInput: ``name`` is not an ``exchange_calendars`` name.
        """
        sched = schedule if schedule is not None else load_schedule(name)
        self.name = name
        self.tz = sched.tz
        self.continuous = name in ("24/7", "24/5")
        self.dates: np.ndarray[Any, np.dtype[np.datetime64]] = sched.dates
        self.opens: I64 = sched.opens
        self.closes: I64 = sched.closes
        self._zone = _ZoneOffsets(self.tz, int(self.opens[0]), int(self.closes[-1]))
        midnight_utc = self.dates.astype("datetime64[s]").astype(np.int64)
        # Local midnight of each session date, in UTC seconds. The offset at noon is only a first
        # guess: on a DST-change date it differs from the offset at midnight itself, so re-read
        # the offset at the guessed instant (a fixed point after one step for 1 h shifts).
        guess = midnight_utc - self._offsets_at(midnight_utc + 12 * 3600)
        self.midnights: I64 = midnight_utc - self._offsets_at(guess)
        if self.continuous:
            self.ext_opens, self.ext_closes = self.opens, self.closes
        else:
            self.ext_opens = self.midnights + _PRE_MARKET_S
            self.ext_closes = self.closes + _POST_MARKET_S
        # A session never spans a DST change (they happen at 02:00 local on a
        # Sunday), so one offset per session serves every bar in it.
        self.session_offsets: I64 = self._offsets_at(self.opens)
        self.first = int(self.opens[0])
        self.last = int(self.closes[-1])

    # -- time zone ------------------------------------------------------------

    def _offsets_at(self, ts: I64) -> I64:
        """UTC offset (seconds) of the exchange's zone at each ``ts``."""
        return self._zone.at(np.asarray(ts, dtype=np.int64))

    def utc_offset(self, ts: I64) -> I64:
        return self._offsets_at(np.asarray(ts, dtype=np.int64))

    # -- sessions -------------------------------------------------------------

    def session_indices(self, start: int, end: int, *, extended: bool = False) -> tuple[int, int]:
        """Half-open index range of sessions whose trading time meets [start, end)."""
        opens, closes = self._bounds(extended)
        i0 = int(np.searchsorted(closes, start, side="right"))
        i1 = int(np.searchsorted(opens, end, side="left"))
        return i0, max(i0, i1)

    def _bounds(self, extended: bool) -> tuple[I64, I64]:
        return (self.ext_opens, self.ext_closes) if extended else (self.opens, self.closes)

    def sessions(self, start: int, end: int, *, extended: bool = False) -> list[Session]:
        i0, i1 = self.session_indices(start, end, extended=extended)
        opens, closes = self._bounds(extended)
        return [Session(str(self.dates[i]), int(opens[i]), int(closes[i])) for i in range(i0, i1)]

    def trading_intervals(self, start: int, end: int, *, extended: bool = False) -> list[Interval]:
        """Trading time inside [start, end), as normalized intervals."""
        self.check_range(start, end)
        i0, i1 = self.session_indices(start, end, extended=extended)
        opens, closes = self._bounds(extended)
        lo = np.maximum(opens[i0:i1], start)
        hi = np.minimum(closes[i0:i1], end)
        out: list[Interval] = []
        for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
            if a < b:
                if out and out[-1].end >= a:  # 24/7: sessions touch
                    out[-1] = Interval(out[-1].start, b)
                else:
                    out.append(Interval(a, b))
        return out

    def check_range(self, start: int, end: int) -> None:
        if start < self.first - 7 * _DAY or end > self.last + 7 * _DAY:
            lo = datetime.fromtimestamp(self.first, UTC).date()
            hi = datetime.fromtimestamp(self.last, UTC).date()
            raise InvalidInput("window", f"dates within the {self.name} calendar ({lo} to {hi})")

    def session_at(self, ts: int, *, extended: bool = False) -> int | None:
        """Index of the session trading at ``ts``, or None if the market is closed then."""
        opens, closes = self._bounds(extended)
        i = int(np.searchsorted(opens, ts, side="right")) - 1
        return i if i >= 0 and ts < int(closes[i]) else None

    def last_close_at_or_before(self, ts: int, *, extended: bool = False) -> int:
        """The latest session close (UTC seconds) that is <= ``ts``."""
        _, closes = self._bounds(extended)
        i = int(np.searchsorted(closes, ts, side="right")) - 1
        return int(closes[i]) if i >= 0 else self.first

    # -- bars -----------------------------------------------------------------

    def bars_per_session(self, timeframe: Timeframe, i0: int, i1: int, *, extended: bool = False) -> I64:
        """How many bars of ``timeframe`` each session in [i0, i1) can hold at most."""
        opens, closes = self._bounds(extended)
        o, c = opens[i0:i1], closes[i0:i1]
        if not timeframe.intraday:
            return np.ones(len(o), dtype=np.int64)
        step = timeframe.seconds
        off = self.session_offsets[i0:i1]
        first = (o + off) // step
        last = (c - 1 + off) // step
        return np.asarray(last - first + 1, dtype=np.int64)

    def bar_opens(self, timeframe: Timeframe, start: int, end: int, *, extended: bool = False) -> I64:
        """Every label a bar of ``timeframe`` can have whose trading time meets [start, end)."""
        i0, i1 = self.session_indices(start, end, extended=extended)
        if i0 == i1:
            return np.empty(0, dtype=np.int64)
        if timeframe == Timeframe.d1:
            return self.midnights[i0:i1].copy()
        if timeframe == Timeframe.w1:
            return np.unique(self.bucket(Timeframe.w1, self.midnights[i0:i1]))
        step = timeframe.seconds
        first, last, counts = self._intraday_labels(timeframe, start, end, i0, i1, extended)
        if counts.sum() == 0:
            return np.empty(0, dtype=np.int64)
        # All sessions' labels at once: each session's first label, then steps within it.
        offsets_in_session = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        labels: I64 = (np.repeat(first, counts) + step * offsets_in_session).astype(np.int64)
        if len(labels) < 2 or bool(np.all(labels[1:] > labels[:-1])):
            return labels  # the usual case: already sorted and distinct, so no np.unique (hashing)
        return np.unique(labels)

    def bar_count(self, timeframe: Timeframe, start: int, end: int, *, extended: bool = False) -> int:
        """``len(bar_opens(...))`` without building the labels (the planner counts 2 years of m1)."""
        i0, i1 = self.session_indices(start, end, extended=extended)
        if i0 == i1 or timeframe in (Timeframe.d1, Timeframe.w1):
            return len(self.bar_opens(timeframe, start, end, extended=extended))
        first, last, counts = self._intraday_labels(timeframe, start, end, i0, i1, extended)
        if len(first) > 1 and not bool(np.all(first[1:] > last[:-1])):
            return len(self.bar_opens(timeframe, start, end, extended=extended))  # labels shared
        return int(counts.sum())

    def _intraday_labels(
        self, timeframe: Timeframe, start: int, end: int, i0: int, i1: int, extended: bool
    ) -> tuple[I64, I64, I64]:
        """Per session of ``[i0, i1)`` meeting [start, end): its first and last label, and how many."""
        opens, closes = self._bounds(extended)
        step = timeframe.seconds
        lo = np.maximum(opens[i0:i1], start)
        hi = np.minimum(closes[i0:i1], end)
        keep = lo < hi
        lo, hi, off = lo[keep], hi[keep], self.session_offsets[i0:i1][keep]
        first = (lo + off) // step * step - off
        last = (hi - 1 + off) // step * step - off
        return first, last, (last - first) // step + 1

    def bucket(self, timeframe: Timeframe, ts: I64) -> I64:
        """The label of the ``timeframe`` bar that each ``ts`` falls in (local clock)."""
        ts = np.asarray(ts, dtype=np.int64)
        off = self.utc_offset(ts)
        local = ts + off
        if timeframe == Timeframe.w1:
            days = local // _DAY
            monday = (days - _MONDAY_OFFSET_DAYS) // 7 * 7 + _MONDAY_OFFSET_DAYS
            label_local = monday * _DAY
        elif timeframe == Timeframe.d1:
            label_local = local // _DAY * _DAY
        else:
            label_local = local // timeframe.seconds * timeframe.seconds
        # Re-derive the offset at the label: a w1/d1 label may sit across a DST change.
        label = label_local - off
        return np.asarray(label_local - self.utc_offset(label), dtype=np.int64)

    def is_aligned(self, timeframe: Timeframe, ts: I64) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Whether each ``ts`` is a valid label for ``timeframe``."""
        ts = np.asarray(ts, dtype=np.int64)
        return np.asarray(self.bucket(timeframe, ts) == ts)

    def bar_end(self, timeframe: Timeframe, ts: I64, *, extended: bool = False) -> I64:
        """When each bar labelled ``ts`` is complete: its nominal end, or its session's close."""
        ts = np.asarray(ts, dtype=np.int64)
        opens, closes = self._bounds(extended)
        if timeframe in (Timeframe.d1, Timeframe.w1):
            span = _DAY if timeframe == Timeframe.d1 else 7 * _DAY
            # The close of the last session that opens before the bar's nominal end.
            idx = np.searchsorted(opens, ts + span, side="left") - 1
            return np.asarray(closes[np.clip(idx, 0, len(closes) - 1)], dtype=np.int64)
        nominal = ts + timeframe.seconds
        idx = np.searchsorted(opens, ts, side="right") - 1
        idx = np.clip(idx, 0, len(closes) - 1)
        session_close = closes[idx]
        in_session = ts < session_close
        return np.asarray(np.where(in_session, np.minimum(nominal, session_close), nominal))


class _ZoneOffsets:
    """A time zone's UTC offset at any instant, vectorized: its transitions as sorted arrays.

    The table is read from ``zoneinfo`` (the same zone data pandas converts
    with) over the calendar's years plus a margin: the offset is probed once a
    day and each change is narrowed to its exact second, which assumes no zone
    changes its offset twice within one day (none has, in the years any
    exchange calendar covers). Instants outside the table ask ``zoneinfo``
    one by one.
    """

    _MARGIN_S = 400 * _DAY

    def __init__(self, tz: str, first: int, last: int) -> None:
        self.zone = ZoneInfo(tz)
        self.lo = first - self._MARGIN_S
        self.hi = last + 20 * 366 * _DAY  # bars are labelled until long after the calendar ends
        starts, offsets = [self.lo], [self._one(self.lo)]
        for day in range(self.lo + _DAY, self.hi + _DAY, _DAY):
            offset = self._one(day)
            if offset != offsets[-1]:
                starts.append(self._change_after(day - _DAY, day))
                offsets.append(offset)
        self.starts = np.asarray(starts, dtype=np.int64)  # each offset holds from here on
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def _one(self, ts: int) -> int:
        delta = datetime.fromtimestamp(ts, self.zone).utcoffset()
        return 0 if delta is None else int(delta.total_seconds())

    def _change_after(self, lo: int, hi: int) -> int:
        """The first second in (lo, hi] whose offset differs from lo's (one change in between)."""
        before = self._one(lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._one(mid) == before:
                lo = mid
            else:
                hi = mid
        return hi

    def at(self, ts: I64) -> I64:
        """The UTC offset (seconds) at each instant of ``ts``."""
        if len(self.offsets) == 1:  # UTC, or a zone without changes
            out = np.full(len(ts), self.offsets[0], dtype=np.int64)
        else:
            out = self.offsets[np.maximum(np.searchsorted(self.starts, ts, side="right") - 1, 0)]
        outside = (ts < self.lo) | (ts > self.hi)
        if outside.any():
            out = out.copy()
            out[outside] = [self._one(int(t)) for t in ts[outside]]
        return np.asarray(out, dtype=np.int64)


@cache
def get_calendar(name: str = "XNYS") -> TradingCalendar:
    """A shared, cached calendar (its schedule from a file: see :mod:`barfill.domain.schedules`)."""
    return TradingCalendar(name)
