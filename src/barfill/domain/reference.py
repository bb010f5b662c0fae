"""Reference closes of dividends: which session's close a dividend's ``all`` factor needs.

A dividend's factor is ``1 - cash / close`` with ``close`` the raw close of the
last session before its ex date (:mod:`barfill.domain.adjust`). This module
only says *which* sessions those are and the one d1 window that holds them,
so the store can look the closes up and the service can queue what is
missing as ordinary bars. Times are Unix seconds UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from barfill.domain.actions import ex_starts
from barfill.domain.calendar import TradingCalendar


def sessions_before(ex_dates: Iterable[dt.date], calendar: TradingCalendar) -> dict[dt.date, int]:
    """Each ex date's reference session (index into ``calendar``); ex dates before the calendar's
    first session have none and are left out."""
    wanted = sorted(set(ex_dates))
    if not wanted:
        return {}
    starts = ex_starts(wanted, calendar.tz)
    prev = calendar.midnights.searchsorted(starts, side="left") - 1
    return {d: int(p) for d, p in zip(wanted, prev.tolist(), strict=True) if p >= 0}


def reference_span(ex_dates: Iterable[dt.date], calendar: TradingCalendar) -> tuple[int, int] | None:
    """``[start, end)`` holding every reference session of ``ex_dates`` and no ex date's session.

    From 00:00 exchange-local of the first reference session to 00:00 of the last ex
    date: one d1 window, so the closes cost the fewest requests (a provider returns
    thousands of day bars a page), at the price of the sessions in between, which are
    tiny. None when no ex date has a reference session.
    """
    sessions = sessions_before(ex_dates, calendar)
    if not sessions:
        return None
    last = max(sessions)
    return int(calendar.midnights[min(sessions.values())]), int(ex_starts([last], calendar.tz)[0])
