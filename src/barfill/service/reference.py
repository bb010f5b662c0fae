"""Which reference closes the stored dividends still need, per symbol, as one d1 window each.

An ``adjust=all`` read needs, for every dividend after its first bar, the raw
close of the session before the ex date (:mod:`barfill.domain.reference`).
A user who ensured h1 for January reads it after months of dividends whose
sessions were never fetched. Rather than a fetch path of its own, those
closes are *ensured*: a definition per symbol under the requester
:data:`REFERENCE_REQUESTER`, d1, over the one window spanning the missing
sessions (:func:`barfill.service.ensure.ensure_reference_closes`), so the
planner leaves out what is covered, the queue and the worker fetch the rest
within the shared rate limits, and the closes land as ordinary final bars.

A symbol's reads start at its earliest enabled definition's window start
(other requesters'); dividends in effect after it are the ones needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.domain.reference import reference_span
from barfill.store.actions import unapplied_dividends
from barfill.store.db import db_now
from barfill.store.definitions import list_definitions
from barfill.store.schema import corporate_actions
from barfill.store.symbols import symbol_calendars, tickers_by_id

REFERENCE_REQUESTER = "reference-closes"
_DAY_S = 86_400


@dataclass(frozen=True)
class ReferenceAsk:
    """One symbol's missing reference sessions, as a d1 window ``[start, end)`` (Unix s UTC)."""

    symbol_id: int
    ticker: str
    calendar: str
    start: int
    end: int


def missing_references(app: App, symbol_ids: Sequence[int]) -> list[ReferenceAsk]:
    """The d1 windows holding the reference sessions that ``symbol_ids``' dividends lack (reads only)."""
    if not symbol_ids:
        return []
    c = corporate_actions.c
    with app.db.read() as conn:
        now = db_now(conn)
        with_dividends = {
            int(s)
            for (s,) in conn.execute(
                sa.select(c.symbol_id)
                .where(c.symbol_id.in_(list(symbol_ids)), c.kind == "dividend", c.effective_at <= now)
                .distinct()
            )
        }
        if not with_dividends:
            return []
        now_s = int(conn.execute(sa.select(now)).scalar_one())
        first: dict[int, int] = {}
        for d in list_definitions(conn, enabled=True, symbol_ids=sorted(with_dividends)):
            if d.requester == REFERENCE_REQUESTER:
                continue
            start = d.start if d.start is not None else now_s - int(d.window_days or 0) * _DAY_S
            first[d.symbol_id] = min(first.get(d.symbol_id, start), start)
        calendars = symbol_calendars(conn, first)
        tickers = tickers_by_id(conn, first)
        out: list[ReferenceAsk] = []
        for sid in sorted(first):
            cal = get_calendar(calendars[sid])
            missing = unapplied_dividends(conn, sid, cal, first[sid], app.router.historical)
            span = reference_span(missing, cal)
            if span is not None:
                out.append(ReferenceAsk(sid, tickers[sid], calendars[sid], *span))
        return out
