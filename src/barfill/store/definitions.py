"""Job definitions: the desired state, "keep (symbol, timeframe) covered over this window".

One definition per (symbol, timeframe, requester), enforced by a unique key.
A requester names who asks (``cli``, ``universe``, a scheduler, a notebook):
each keeps its own window, priority and pinned provider, so a notebook's
fixed backfill does not replace a scheduler's rolling window. Asking again
as the same requester replaces that requester's settings. The orchestrator
turns every enabled definition into slices on every tick; bars and coverage
are shared per (symbol, timeframe), and the planner leaves out ranges
another definition is already fetching, so overlapping windows never fetch
a range twice.

A window is either rolling (``window_days``, ending now) or fixed
(``[start, end)`` in Unix seconds UTC), never both.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.bars import unix_seconds
from barfill.store.db import db_now
from barfill.store.schema import coverage, job_definitions, symbols
from barfill.store.symbols import insert_on_conflict

MAX_WINDOW_DAYS = 36_500
_DAY_S = 86_400
DEFAULT_REQUESTER = "default"
_REQUESTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,63}")


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
    requester: str = DEFAULT_REQUESTER


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


def validate_requester(requester: object) -> str:
    """A requester name: 1-64 of letters, digits and ``_ . : @ / + -``, starting with a letter or digit."""
    if not isinstance(requester, str) or not _REQUESTER.fullmatch(requester):
        raise InvalidInput(
            "requester", "1-64 characters: letters, digits, _ . : @ / + - (e.g. 'scheduler')", requester
        )
    return requester


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
    requester: str = DEFAULT_REQUESTER,
) -> tuple[int, bool]:
    """Create ``requester``'s definition of (symbol, timeframe) or replace its settings; (id, created).

    Other requesters' definitions of the same (symbol, timeframe) are left
    as they are. Idempotent and race-safe: concurrent calls for the same key leave one row
    (``INSERT ... ON CONFLICT DO NOTHING``, then an ``UPDATE`` of the row that
    won), and exactly one of them reports ``created``.

    Args:
        window_days: a rolling window ending now, or...
        start, end: ...a fixed ``[start, end)``, Unix seconds or aware datetimes.
        provider: pin a provider, or None for the router's choice.
        requester: who asks (see the module docstring).

    Raises:
        InvalidInput: for a missing, doubled, empty or inverted window, a naive
            datetime, or a malformed requester.
    """
    tf = Timeframe.parse(timeframe)
    who = validate_requester(requester)
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
        .values(
            symbol_id=symbol_id, timeframe=tf.value, requester=who, created_at=now, updated_at=now, **settings
        )
        .on_conflict_do_nothing(index_elements=["symbol_id", "timeframe", "requester"])
        .returning(job_definitions.c.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return int(inserted), True
    # The row exists (committed by whoever won the insert): make it say what we were asked.
    updated = conn.execute(
        sa.update(job_definitions)
        .where(
            job_definitions.c.symbol_id == symbol_id,
            job_definitions.c.timeframe == tf.value,
            job_definitions.c.requester == who,
        )
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
        requester=str(row.requester),
    )


def get_definition(conn: Connection, definition_id: int) -> Definition | None:
    """The definition with this id, or None."""
    row = conn.execute(_select().where(job_definitions.c.id == definition_id)).one_or_none()
    return None if row is None else _definition(row)


def list_definitions(
    conn: Connection, *, enabled: bool | None = None, symbol_ids: Sequence[int] | None = None
) -> list[Definition]:
    """Every definition (or the enabled / disabled ones, of some symbols), by priority, then by id."""
    query = _select().order_by(job_definitions.c.priority.desc(), job_definitions.c.id)
    if enabled is not None:
        query = query.where(job_definitions.c.enabled == enabled)
    if symbol_ids is not None:
        query = query.where(job_definitions.c.symbol_id.in_(list(symbol_ids)))
    return [_definition(r) for r in conn.execute(query)]


def enabled_by_calendar(conn: Connection) -> dict[str, int]:
    """How many enabled definitions there are on the symbols of each trading calendar (by name)."""
    query = (
        sa.select(symbols.c.calendar, sa.func.count())
        .select_from(job_definitions.join(symbols, symbols.c.id == job_definitions.c.symbol_id))
        .where(job_definitions.c.enabled.is_(True))
        .group_by(symbols.c.calendar)
    )
    return {str(name): int(n) for name, n in conn.execute(query)}


def definitions_to_plan(
    conn: Connection,
    *,
    now: int,
    first: Mapping[str, int],
    window_ends: Mapping[tuple[str, Timeframe], int],
    providers: Collection[str],
) -> list[Definition]:
    """The enabled definitions a tick must plan: all but those provably covered, as :func:`list_definitions`.

    Why: a tick over 100k covered definitions must not read and plan each one
    in Python. A definition is left out when one *final* coverage row holds
    its whole window, as :func:`barfill.service.planning.window_of` computes it
    at ``now`` (Unix seconds, database clock): ``[now - window_days, now)`` or
    ``[start, end)``, its start raised to the calendar's first session
    (``first``, by calendar name) and its end lowered to the last complete bar
    (``window_ends``, by calendar name and timeframe). Such a definition has no
    gap of any kind, so its plan is empty. One whose pinned provider is not in
    ``providers`` is kept (its plan reports the unknown provider). A calendar
    or timeframe without bounds given is judged on the window as stored. Everything
    kept is planned in full, so leaving out too little only costs time.
    """
    d, c, s = job_definitions.c, coverage.c, symbols.c
    days_s = sa.cast(d.window_days, sa.BigInteger) * _DAY_S
    clock = sa.literal(int(now), sa.BigInteger)
    start = sa.case((d.window_days.is_not(None), clock - days_s), else_=d.start)
    end = sa.case((d.window_days.is_not(None), clock), else_=d.end)
    first_of = _lookup([(s.calendar == name, ts) for name, ts in first.items()])
    end_of = _lookup(
        [(sa.and_(s.calendar == name, d.timeframe == tf.value), ts) for (name, tf), ts in window_ends.items()]
    )
    # window = [max(start, first), min(end, end_of)]; a row holds it when it starts at or
    # before either bound of the max and ends at or after either bound of the min. The
    # provider check sits inside the EXISTS so that the whole test is one NOT EXISTS,
    # which PostgreSQL runs as one anti-join instead of a probe per definition.
    held = (
        sa.select(c.id)
        .where(
            c.symbol_id == d.symbol_id,
            c.timeframe == d.timeframe,
            c.expires_at.is_(None),
            sa.or_(c.start <= start, c.start <= first_of),
            sa.or_(c.end >= end, c.end >= end_of),
            sa.or_(d.provider.is_(None), d.provider.in_(sorted(providers))),
        )
        .exists()
    )
    query = _select().where(d.enabled.is_(True), ~held).order_by(d.priority.desc(), d.id)
    return [_definition(r) for r in conn.execute(query)]


def _lookup(cases: list[tuple[sa.ColumnElement[bool], int]]) -> sa.ColumnElement[Any]:
    """``CASE`` picking the value of the first true condition, else NULL (compares false)."""
    unknown = sa.cast(sa.null(), sa.BigInteger)
    if not cases:
        return unknown
    return sa.case(*((when, sa.literal(int(v), sa.BigInteger)) for when, v in cases), else_=unknown)


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
