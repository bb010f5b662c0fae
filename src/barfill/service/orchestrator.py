"""The orchestrator tick: desired state (definitions) → gaps → slices; stale work → requeued.

One tick: reap expired leases, archive old succeeded slices, drop expired
provisional coverage (so today's bars are fetched again, and as final after
the close), then plan every enabled definition by priority (but those whose
whole window one final coverage row holds: one query finds them, so a tick
over many covered definitions costs little; see
:func:`~barfill.store.definitions.definitions_to_plan`), leaving out the
ranges already queued or running for the same (symbol, timeframe) and those
held back (failed slices cooling down, cancelled slices), and enqueue the
slices (idempotently; a failed slice whose cool-down passed is revived), and
plan the re-verification of final sessions now due (low-priority ``verify``
slices, :mod:`barfill.service.verification`). On PostgreSQL
one scheduler is elected with an advisory lock held on its own connection; the
others stand by and take over when that connection goes away. On SQLite
(one machine) concurrent ticks are harmless: enqueue is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.bootstrap import App
from barfill.domain import intervals as iv
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.finality import last_complete_end
from barfill.domain.intervals import Interval
from barfill.domain.slices import NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.errors import BarfillError
from barfill.providers.router import Router
from barfill.service.actions import refresh_due
from barfill.service.planning import order_for_batching, plan_definition
from barfill.service.verification import plan_verification
from barfill.store.coverage import CoverageView, coverage_views, expire_provisional
from barfill.store.db import db_now, wrap_exceptions
from barfill.store.definitions import (
    Definition,
    definitions_to_plan,
    enabled_by_calendar,
    list_definitions,
)
from barfill.store.densities import all_densities, base_of
from barfill.store.queue_reports import OpenWork, WorkKey, open_work
from barfill.store.symbols import symbol_calendars
from barfill.store.verifications import due_sessions, prune_verified

log = logging.getLogger("barfill.scheduler")
_LOCK_KEY = 0x62617266  # "barf": the scheduler's advisory lock id


@dataclass
class TickResult:
    scanned: int = 0
    slices_created: int = 0  # queued by this tick: inserted, requeued or revived
    slices_revived: int = 0  # of which failed slices brought back after their cool-down
    verify_planned: int = 0  # re-verification slices planned (service.verification)
    requeued: int = 0  # running slices whose lease expired
    expired: int = 0
    archived: int = 0
    duration_ms: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tick(app: App) -> TickResult:
    """One pass over every enabled definition. Never waits for a provider."""
    t0 = time.perf_counter()
    result = TickResult()
    result.requeued = app.queue.reap()
    result.archived = app.queue.archive_finished(app.settings.archive_after_s)
    with app.db.write() as conn:
        result.expired = expire_provisional(conn)
        prune_verified(conn, older_than_s=app.settings.archive_after_s)
    with app.db.read() as conn:
        clock = float(conn.execute(sa.select(db_now(conn))).scalar_one())
        now = int(clock)
        in_use = enabled_by_calendar(conn)
        result.scanned = sum(in_use.values())
        cals = {name: get_calendar(name) for name in in_use}
        defs = definitions_to_plan(
            conn,
            now=now,
            first={name: cal.first for name, cal in cals.items()},
            window_ends={
                (name, tf): last_complete_end(cal, tf, now) for name, cal in cals.items() for tf in Timeframe
            },
            providers=app.router.providers,
        )
        symbol_ids = sorted({d.symbol_id for d in defs})
        # Before coverage: a slice finishing in between is then pending or covered, not planned twice.
        work = open_work(
            conn,
            now=clock,
            cooldown_s=app.settings.failed_cooldown_s,
            cooldown_max_s=app.settings.failed_cooldown_max_s,
        )
        coverage = coverage_views(conn, symbol_ids)
        # Re-verification looks at every enabled definition with a session due, covered or not.
        due = due_sessions(conn, clock) if app.settings.reverify_after_sessions > 0 else []
        checked = sorted({row.symbol_id for row in due})
        calendars = symbol_calendars(conn, sorted({*symbol_ids, *checked}))
        owners = list_definitions(conn, enabled=True, symbol_ids=checked) if due else []
        checks = (
            open_work(
                conn,
                now=clock,
                cooldown_s=app.settings.failed_cooldown_s,
                cooldown_max_s=app.settings.failed_cooldown_max_s,
                purpose="verify",
            )
            if due
            else None
        )
        densities = all_densities(conn)
    by_symbol = {i: get_calendar(calendars.get(i, app.settings.calendar)) for i in {*symbol_ids, *checked}}
    new, errors = plan_tick(
        defs,
        coverage,
        work,
        by_symbol,
        app.router,
        now=now,
        max_attempts=app.settings.max_attempts,
        densities=densities,
    )
    result.errors.extend(errors)
    if checks is not None:
        verify = plan_verification(
            due, owners, checks, by_symbol, app.router, max_attempts=app.settings.max_attempts
        )
        result.verify_planned = len(verify)
        new += verify
    if new:
        enqueued = app.queue.enqueue(order_for_batching(new), revive=False)
        result.slices_created = enqueued.queued
        result.slices_revived = enqueued.revived
    result.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
    return result


def plan_tick(
    defs: Sequence[Definition],
    coverage: Mapping[WorkKey, CoverageView],
    work: OpenWork,
    calendars: Mapping[int, TradingCalendar],
    router: Router,
    *,
    now: int,
    max_attempts: int,
    densities: Mapping[tuple[int, str], Mapping[str, float]] | None = None,
) -> tuple[list[NewSlice], list[str]]:
    """The slices one tick plans for ``defs`` at ``now``, and an error line per definition that failed.

    Highest priority first (then as listed). Each definition leaves out the
    ranges pending or held for its (symbol, timeframe) *and* those planned
    by the definitions before it in this tick: several requesters' windows
    of one (symbol, timeframe) never get overlapping slices; the first
    (its pinned provider) takes the range.
    """
    planned: dict[WorkKey, list[Interval]] = {}
    new: list[NewSlice] = []
    errors: list[str] = []
    for defn in sorted(defs, key=lambda d: -d.priority):
        key = (defn.symbol_id, defn.timeframe)
        try:
            plan = plan_definition(
                defn,
                coverage.get(key, CoverageView()),
                calendars[defn.symbol_id],
                router,
                now=now,
                max_attempts=max_attempts,
                pending=iv.union(work.blocked(key), planned.get(key, [])),
                densities=(densities or {}).get((defn.symbol_id, base_of(defn.timeframe))),
            )
        except BarfillError as e:
            errors.append(f"definition {defn.id}: {e}")
            continue
        if plan.slices:
            planned[key] = iv.union(planned.get(key, []), iv.normalize((s.start, s.end) for s in plan.slices))
        new.extend(plan.slices)
    return new, errors


class Leadership:
    """Who may tick. PostgreSQL: a session advisory lock; SQLite: everyone."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if not self.app.db.is_postgres:
            return True
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                self._conn.commit()
                return True
            except sa.exc.SQLAlchemyError:  # our session died, and the lock with it
                self.release()
        with wrap_exceptions(self.app.db.url):
            conn = self.app.db.engine.connect()
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}).scalar())
            conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                self._conn.commit()
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.close()
            self._conn = None


async def run_scheduler(
    app: App,
    stop: asyncio.Event,
    *,
    interval_s: float | None = None,
    on_tick: Callable[[TickResult], None] | None = None,
) -> None:
    """Tick every ``interval_s`` while leader; stand by otherwise. ``on_tick`` sees each result.

    After each tick the leader also starts a background refresh of the corporate
    actions that are due, unless one is still running
    (:func:`barfill.service.actions.refresh_due`; within the providers' rate limits).
    """
    interval = interval_s or app.settings.tick_interval_s
    leader = Leadership(app)
    refreshing: asyncio.Task[None] | None = None
    try:
        while not stop.is_set():
            try:
                if await asyncio.to_thread(leader.acquire):
                    result = await asyncio.to_thread(tick, app)
                    log.info("tick %s", result.as_dict())
                    # Splits and dividends of every defined symbol, once per actions_refresh_s,
                    # in the background: it waits for rate-limit slots, the tick must not.
                    if refreshing is None or refreshing.done():
                        refreshing = asyncio.create_task(_refresh_actions(app))
                    if on_tick is not None:
                        on_tick(result)
            except BarfillError as e:
                log.warning("tick failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    finally:
        if refreshing is not None:
            refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refreshing
        await asyncio.to_thread(leader.release)


async def _refresh_actions(app: App) -> None:
    """One run of the corporate-actions refresh; failures are logged, never raised into the loop."""
    try:
        result = await refresh_due(app)
    except BarfillError as e:
        log.warning("actions refresh failed: %s", e)
        return
    if result.fetched or result.errors:
        log.info("actions %s", result)
