"""The orchestrator tick: desired state (definitions) → gaps → slices; stale work → requeued.

One tick: reap expired leases, archive old succeeded slices, drop expired
provisional coverage (so today's bars are fetched again, and as final after
the close), then plan every enabled definition by priority and enqueue the
slices (idempotently). On PostgreSQL
one scheduler is elected with an advisory lock held on its own connection; the
others stand by and take over when that connection goes away. On SQLite
(one machine) concurrent ticks are harmless: enqueue is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.errors import BarfillError
from barfill.service.planning import order_for_batching, plan_definition
from barfill.store.coverage import coverage_map, expire_provisional
from barfill.store.db import db_now, wrap_exceptions
from barfill.store.definitions import list_definitions
from barfill.store.symbols import symbol_calendars

log = logging.getLogger("barfill.scheduler")
_LOCK_KEY = 0x62617266  # "barf": the scheduler's advisory lock id


@dataclass
class TickResult:
    scanned: int = 0
    slices_created: int = 0
    requeued: int = 0
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
    with app.db.read() as conn:
        now = int(float(conn.execute(sa.select(db_now(conn))).scalar_one()))
        defs = list_definitions(conn, enabled=True)
        coverage = coverage_map(conn)
        calendars = symbol_calendars(conn, sorted({d.symbol_id for d in defs}))
    result.scanned = len(defs)
    new = []
    for defn in sorted(defs, key=lambda d: -d.priority):
        try:
            cal = get_calendar(calendars.get(defn.symbol_id, app.settings.calendar))
            plan = plan_definition(
                defn,
                coverage.get((defn.symbol_id, defn.timeframe), []),
                cal,
                app.router,
                now=now,
                max_attempts=app.settings.max_attempts,
            )
        except BarfillError as e:
            result.errors.append(f"definition {defn.id}: {e}")
            continue
        new.extend(plan.slices)
    if new:
        result.slices_created = app.queue.enqueue(order_for_batching(new))
    result.duration_ms = round((time.perf_counter() - t0) * 1000, 1)
    return result


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
    """Tick every ``interval_s`` while leader; stand by otherwise. ``on_tick`` sees each result."""
    interval = interval_s or app.settings.tick_interval_s
    leader = Leadership(app)
    try:
        while not stop.is_set():
            try:
                if await asyncio.to_thread(leader.acquire):
                    result = await asyncio.to_thread(tick, app)
                    log.info("tick %s", result.as_dict())
                    if on_tick is not None:
                        on_tick(result)
            except BarfillError as e:
                log.warning("tick failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    finally:
        await asyncio.to_thread(leader.release)
