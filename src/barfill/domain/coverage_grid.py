"""The dashboard's coverage map: one cell per (symbol, day), classified for an operator's eye.

Pure: the caller reads sessions, coverage and failed ranges and passes them in.
All bounds are Unix seconds UTC, ``[start, end)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from barfill.domain import intervals as iv
from barfill.domain.intervals import Interval


class Cell(StrEnum):
    """What one day of one symbol looks like.

    ``covered``: every wanted trading minute is final; ``provisional``: covered,
    but partly by provisional (intraday, expiring) coverage; ``gap``: some wanted
    trading time is not covered (yet); ``unfillable``: a missing part overlaps
    a range whose slice failed for good; ``closed``: no session that day;
    ``outside``: a session, but outside the desired window (or not finished yet).
    """

    covered = "covered"
    provisional = "provisional"
    gap = "gap"
    unfillable = "unfillable"
    closed = "closed"
    outside = "outside"


def classify_day(
    session: Interval | None,
    window: Interval | None,
    final: Sequence[Interval],
    provisional: Sequence[Interval],
    failed: Sequence[Interval],
) -> Cell:
    """Classify one day.

    Args:
        session: the day's trading time, or None when the market is closed.
        window: the desired window (already ending at the last complete bar), or None.
        final: final coverage, normalized.
        provisional: unexpired provisional coverage, normalized.
        failed: ranges of slices that failed for good, normalized.
    """
    if session is None:
        return Cell.closed
    wanted = iv.intersect([session], [window]) if window is not None else []
    if not wanted:
        return Cell.outside
    missing_final = iv.subtract(wanted, final)
    if not missing_final:
        return Cell.covered
    missing = iv.subtract(missing_final, provisional)
    if not missing:
        return Cell.provisional
    if iv.intersect(missing, failed):
        return Cell.unfillable
    return Cell.gap


def classify_days(
    sessions: Sequence[Interval | None],
    window: Interval | None,
    final: Sequence[Interval],
    provisional: Sequence[Interval],
    failed: Sequence[Interval],
) -> list[Cell]:
    """:func:`classify_day` for each day of a row (same window and coverage)."""
    return [classify_day(s, window, final, provisional, failed) for s in sessions]
