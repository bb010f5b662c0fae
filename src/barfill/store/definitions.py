"""Job definitions: the desired state, "keep (symbol, timeframe) covered over this window".

One definition per (symbol, timeframe), enforced by a unique key. The
orchestrator turns enabled definitions into slices on every tick; changing a
definition here is how a user changes what barfill keeps complete.

A window is either rolling (``window_days``, ending now) or fixed
(``[start, end)`` in Unix seconds UTC), never both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.bars import unix_seconds
from barfill.store.db import db_now
from barfill.store.schema import job_definitions, symbols
from barfill.store.symbols import insert_on_conflict

MAX_WINDOW_DAYS = 36_500


@dataclass(frozen=True)
class Definition:
    """A stored definition. Times are Unix seconds UTC (``created_at``/``updated_at``: database clock)."""

    id: int
    symbol_id: int
    symbol: str
    timeframe: Timeframe
    window_days: int | None
    start: int | None
    end: int | None
    priority: int
    enabled: bool
    provider: str | None
    created_at: float
    updated_at: float


def _window(window_days: int | None, start: object, end: object) -> tuple[int | None, int | None, int | None]:
    if window_days is not None:
        if start is not None or end is not None:
            raise InvalidInput("window", "either window_days or start and end, not both")
        if isinstance(window_days, bool) or not isinstance(window_days, int):
            raise InvalidInput("window_days", "a whole number of days", window_days)
        if not 0 < window_days <= MAX_WINDOW_DAYS:
            raise InvalidInput("window_days", f"1 to {MAX_WINDOW_DAYS} days", window_days)
        return window_days, None, None
    if start is None or end is None:
        raise InvalidInput("window", "window_days, or both start and end")
    start_s, end_s = unix_seconds(start, "start"), unix_seconds(end, "end")
    if end_s <= start_s:
        raise InvalidInput("window", f"start before end, got start={start_s} end={end_s}")
    return None, start_s, end_s


def upsert_definition(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe | str,
    *,
    window_days: int | None = None,
    start: object = None,
    end: object = None,
    priority: int = 0,
    enabled: bool = True,
    provider: str | None = None,
) -> tuple[int, bool]:
    """Create the definition of (symbol, timeframe), or replace its settings. Returns (id, created).

    Idempotent and race-safe: concurrent calls for the same key leave one row
    (``INSERT ... ON CONFLICT DO NOTHING``, then an ``UPDATE`` of the row that
    won), and exactly one of them reports ``created``.

    Args:
        window_days: a rolling window ending now, or...
        start, end: ...a fixed ``[start, end)``, Unix seconds or aware datetimes.
        provider: pin a provider, or None for the router's choice.

    Raises:
        InvalidInput: for a missing, doubled, empty or inverted window, or a naive datetime.
    """
    tf = Timeframe.parse(timeframe)
    days, start_s, end_s = _window(window_days, start, end)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInput("priority", "an integer (higher runs first)", priority)
    settings: dict[str, Any] = {
        "window_days": days,
        "start": start_s,
        "end": end_s,
        "priority": priority,
        "enabled": bool(enabled),
        "provider": provider,
    }
    now = db_now(conn)
    inserted = conn.execute(
        insert_on_conflict(conn, job_definitions)
        .values(symbol_id=symbol_id, timeframe=tf.value, created_at=now, updated_at=now, **settings)
        .on_conflict_do_nothing(index_elements=["symbol_id", "timeframe"])
        .returning(job_definitions.c.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return int(inserted), True
    # The row exists (committed by whoever won the insert): make it say what we were asked.
    updated = conn.execute(
        sa.update(job_definitions)
        .where(job_definitions.c.symbol_id == symbol_id, job_definitions.c.timeframe == tf.value)
        .values(updated_at=now, **settings)
        .returning(job_definitions.c.id)
    ).scalar_one()
    return int(updated), False


def _select() -> sa.Select[Any]:
    return sa.select(job_definitions, symbols.c.ticker).join(
        symbols, symbols.c.id == job_definitions.c.symbol_id
    )


def _definition(row: Any) -> Definition:
    return Definition(
        id=int(row.id),
        symbol_id=int(row.symbol_id),
        symbol=str(row.ticker),
        timeframe=Timeframe(row.timeframe),
        window_days=row.window_days,
        start=row.start,
        end=row.end,
        priority=int(row.priority),
        enabled=bool(row.enabled),
        provider=row.provider,
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
    )


def get_definition(conn: Connection, definition_id: int) -> Definition | None:
    """The definition with this id, or None."""
    row = conn.execute(_select().where(job_definitions.c.id == definition_id)).one_or_none()
    return None if row is None else _definition(row)


def list_definitions(conn: Connection, *, enabled: bool | None = None) -> list[Definition]:
    """Every definition (or only the enabled / disabled ones), highest priority first, then by id."""
    query = _select().order_by(job_definitions.c.priority.desc(), job_definitions.c.id)
    if enabled is not None:
        query = query.where(job_definitions.c.enabled == enabled)
    return [_definition(r) for r in conn.execute(query)]


def set_enabled(conn: Connection, ids: Iterable[int], enabled: bool) -> int:
    """Enable or disable definitions; returns how many changed state (already-set rows don't count)."""
    wanted = sorted(set(ids))
    if not wanted:
        return 0
    result = conn.execute(
        sa.update(job_definitions)
        .where(job_definitions.c.id.in_(wanted), job_definitions.c.enabled != enabled)
        .values(enabled=enabled, updated_at=db_now(conn))
    )
    return int(result.rowcount)
