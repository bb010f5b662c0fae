"""Vendor corrections: plan the one re-fetch of each recent final session, and apply what it finds.

The rule (when a session is due, what one request covers, what counts as a
difference) is :mod:`barfill.domain.verify`; this module does the I/O
around it, in three places:

* **commit of a final fill slice** (the worker's transaction):
  :func:`record_after_fill` schedules the slice's sessions for their check,
  unless they were already due when their bars landed;
* **the orchestrator tick**: :func:`plan_verification` turns due,
  unverified sessions of (symbol, timeframe) pairs with an enabled
  definition into low-priority ``verify`` slices on the provider that stored
  them, consecutive sessions coalesced into one request as the provider's
  page allows, leaving out sessions a verify slice already holds;
* **commit of a verify slice** (the worker's transaction):
  :func:`apply_verification` compares the re-fetch with the stored bars of
  the same provider (historical layer, flagged bars too), writes only what
  changed (changed and added bars upserted, removed ones deleted; an empty
  answer deletes nothing, as an outage looks the same), records every
  difference in ``corrections``, recomputes bad-bar flags, re-derives
  derived timeframes over the range, and marks the sessions verified.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain import intervals as iv
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import TradingCalendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.intervals import Interval
from barfill.domain.planner import estimate_units
from barfill.domain.slices import ClaimedSlice, NewSlice, Purpose
from barfill.domain.sources import Precedence
from barfill.domain.timeframes import Timeframe
from barfill.domain.verify import (
    coalesce,
    diff,
    due_at,
    per_session,
    session_span,
    sessions_in,
    values_of,
    verifiable,
)
from barfill.providers.router import Router
from barfill.service.derive import Derivation, derive_after
from barfill.store.bars import upsert_bars
from barfill.store.db import db_now
from barfill.store.definitions import Definition
from barfill.store.flags import reflag
from barfill.store.queue_reports import OpenWork, WorkKey
from barfill.store.verifications import (
    DueSession,
    delete_stored,
    mark_verified,
    record_sessions,
    stored_bars,
    write_corrections,
)

log = logging.getLogger("barfill.verification")
Values = dict[str, float | int | None]  # one bar's values, as a correction records them

# Below every fill slice of ordinary priority: re-verification never delays hydration.
VERIFY_PRIORITY = -1000


def record_after_fill(
    conn: Connection,
    s: ClaimedSlice,
    provider: str,
    caps: Capabilities,
    cal: TradingCalendar,
    *,
    after_sessions: int,
    now: float,
) -> int:
    """Schedule the sessions of a committed final slice for their one check; returns sessions recorded.

    ``provider`` is the one whose bars were stored (the router may have
    fallen back from the planned one). Sessions already due at ``now`` are
    not recorded: their bars are as late as a re-fetch would be.
    """
    if after_sessions <= 0 or s.layer is not Layer.historical or not verifiable(s.timeframe):
        return 0
    due = []
    for i in reversed(sessions_in(cal, s.start, s.end)):  # newest first: a backfill stops at once
        at = due_at(caps, cal, i, after_sessions)
        if at <= now:  # due times grow with the session: every older one is past due too
            break
        due.append((int(cal.midnights[i]), at))
    return record_sessions(conn, s.symbol_id, s.timeframe, provider, due, now=now)


def plan_verification(
    due: Sequence[DueSession],
    defs: Sequence[Definition],
    work: OpenWork,
    calendars: Mapping[int, TradingCalendar],
    router: Router,
    *,
    max_attempts: int,
) -> list[NewSlice]:
    """Verify slices for the due sessions: one request per run of consecutive sessions.

    Sessions of a (symbol, timeframe) without an enabled definition in
    ``defs``, of a provider no longer configured, or inside a range a verify
    slice already holds (``work``: queued, running, cooling down, cancelled)
    are left out.
    """
    owner: dict[WorkKey, Definition] = {}
    for d in sorted(defs, key=lambda d: (-d.priority, d.id)):
        owner.setdefault((d.symbol_id, d.timeframe), d)
    grouped: dict[tuple[int, Timeframe, str], list[int]] = {}
    for row in due:
        key = (row.symbol_id, row.timeframe)
        if key not in owner or row.provider not in router.providers or row.symbol_id not in calendars:
            continue
        grouped.setdefault((row.symbol_id, row.timeframe, row.provider), []).append(row.session)
    out: list[NewSlice] = []
    for (symbol_id, tf, provider), sessions in grouped.items():
        cal = calendars[symbol_id]
        caps = router.capabilities(provider)
        blocked = work.blocked((symbol_id, tf))
        indices = []
        for midnight in sessions:
            i = int(np.searchsorted(cal.midnights, midnight, side="left"))
            if i >= len(cal.midnights) or int(cal.midnights[i]) != midnight:
                continue  # not a session of this calendar (the symbol's calendar changed)
            lo, hi = session_span(cal, i, i)
            if not iv.intersect([Interval(lo, hi)], blocked):
                indices.append(i)
        defn = owner[(symbol_id, tf)]
        for first, last in coalesce(indices, partial(_fits, tf, caps, cal)):
            lo, hi = session_span(cal, first, last)
            out.append(
                NewSlice(
                    definition_id=defn.id,
                    symbol_id=symbol_id,
                    timeframe=tf,
                    start=lo,
                    end=hi,
                    provider=provider,
                    priority=VERIFY_PRIORITY,
                    max_attempts=max_attempts,
                    layer=Layer.historical,
                    purpose=Purpose.verify,
                )
            )
    return out


def _fits(tf: Timeframe, caps: Capabilities, cal: TradingCalendar, first: int, last: int) -> bool:
    """Whether sessions ``first`` .. ``last`` fit in one page of the provider."""
    lo, hi = session_span(cal, first, last)
    return estimate_units(tf, caps, cal, lo, hi) <= caps.page_limit


@dataclass
class VerifyCounts:
    """What re-verification found and wrote (over every slice it committed)."""

    changed: int = 0
    added: int = 0
    removed: int = 0
    sessions: int = 0

    @property
    def total(self) -> int:
        return self.changed + self.added + self.removed


def apply_verification(
    conn: Connection,
    s: ClaimedSlice,
    fetched: BarBatch,
    cal: TradingCalendar,
    *,
    derivations: Sequence[Derivation],
    precedence: Precedence | None,
    counts: VerifyCounts,
) -> None:
    """Compare, write the differences and mark the sessions verified, inside the slice's transaction.

    ``fetched`` must be the validated re-fetch of ``[s.start, s.end)`` from
    ``s.provider``.
    """
    now = float(conn.execute(sa.select(db_now(conn))).scalar_one())
    fetched = fetched.with_provider(s.provider)
    stored, flags = stored_bars(conn, s.symbol_id, fetched, s.start, s.end)
    if len(fetched) == 0 and len(stored):
        # An empty answer looks the same as a provider outage: never taken as the withdrawal
        # of whole sessions. Nothing is deleted; the sessions count as checked.
        log.warning("%s %s: re-fetch of %s returned no bars; stored bars kept", s.symbol, s.timeframe, s.id)
        fetched = stored
    d = diff(stored, fetched)
    rows: list[tuple[int, str, Values | None, Values | None]] = []
    for io, inew in zip(d.changed_old.tolist(), d.changed_new.tolist(), strict=True):
        rows.append((int(fetched.ts[inew]), "changed", values_of(stored, io), values_of(fetched, inew)))
    rows += [(int(fetched.ts[i]), "added", None, values_of(fetched, i)) for i in d.added.tolist()]
    rows += [(int(stored.ts[i]), "removed", values_of(stored, i), None) for i in d.removed.tolist()]
    rows.sort(key=lambda r: r[0])
    if rows:
        upsert_bars(conn, s.symbol_id, fetched.take(d.written()), layer=Layer.historical, fetched_at=now)
        delete_stored(conn, s.symbol_id, fetched, stored.ts[d.removed].tolist())
        write_corrections(
            conn,
            [
                {
                    "symbol_id": s.symbol_id,
                    "timeframe": s.timeframe.value,
                    "ts": ts,
                    "provider": s.provider,
                    "kind": kind,
                    "old": old,
                    "new": new,
                    "detected_at": now,
                }
                for ts, kind, old, new in rows
            ],
        )
    # Rewritten bars lost their flag in the upsert; the others keep theirs until judged anew.
    written = set(fetched.ts[d.written()].tolist())
    current = {t: (None if t in written else f) for t, f in flags.items()}
    reflag(conn, s.symbol_id, fetched, layer=Layer.historical, calendar=cal, stored=current)
    counts.changed += len(d.changed_new)
    counts.added += len(d.added)
    counts.removed += len(d.removed)
    counts.sessions += mark_verified(
        conn,
        s.symbol_id,
        s.timeframe,
        per_session(cal, [r[0] for r in rows]),
        start=s.start,
        end=s.end,
        now=now,
    )
    if rows or any(f is not None for f in flags.values()):
        derive_after(
            conn,
            symbol_id=s.symbol_id,
            source=s.timeframe,
            start=s.start,
            end=s.end,
            derivations=derivations,
            calendar=cal,
            layer=Layer.historical,
            precedence=precedence,
        )
