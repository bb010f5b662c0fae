"""Small queries the HTTP API needs beyond the operator reports.

A cheap fingerprint of a bar range (for ETags), the start of the newest N
bars, one slice by id, the provisional coverage, symbol search, definition
priority changes, and the "bars landed" feed of completed slices behind
``/v1/events``. Bar *values* are never read here: that is
:func:`barfill.store.bar_reads.read_bars`' job (it picks one source per range).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.adjust import Adjust
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import DatabaseError
from barfill.store.actions import actions_fingerprint, unapplied_dividends
from barfill.store.bar_rows import Fingerprint
from barfill.store.db import db_now
from barfill.store.schema import (
    LAYER_CODES,
    TIMEFRAME_CODES,
    action_refreshes,
    bars,
    coverage,
    job_definitions,
    job_runs,
    symbols,
)
from barfill.store.symbols import symbol_calendars


def bars_fingerprint(
    conn: Connection, symbol_id: int, timeframe: Timeframe, start: int, end: int, layers: Sequence[str]
) -> Fingerprint:
    """(rows, newest fetch, flagged rows, first ts, last ts) of a range: changes whenever its bars do.

    A write always carries a newer ``fetched_at`` and a deletion changes the
    count, so equal fingerprints mean equal answers. One statement through
    the driver: every cold chart read asks it, and building it with
    SQLAlchemy's expression language cost a fifth of its time.
    """
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    layer_marks = ", ".join([mark] * len(layers))
    sql = (
        # count(flag): a flag set or cleared without a rewrite (a neighbour judged again) changes it.
        "SELECT count(*), coalesce(max(fetched_at), 0.0), count(flag), coalesce(min(ts), 0), "
        f"coalesce(max(ts), 0) FROM bars WHERE symbol_id = {mark} AND timeframe = {mark} "
        f"AND ts >= {mark} AND ts < {mark} AND layer IN ({layer_marks})"
    )
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(
            sql, [symbol_id, TIMEFRAME_CODES[timeframe.value], start, end, *(LAYER_CODES[x] for x in layers)]
        )
        row = cur.fetchone()
    except (psycopg.Error, sqlite3.Error) as e:
        raise DatabaseError(f"reading the fingerprint of {timeframe.value} bars failed: {e}") from e
    finally:
        cur.close()
    return int(row[0]), float(row[1]), int(row[2]), int(row[3]), int(row[4])


def read_fingerprint(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    start: int,
    end: int,
    layers: Sequence[str],
    *,
    adjust: Adjust | None = None,
    bars: Fingerprint | None = None,
) -> tuple[Any, ...]:
    """Everything a bar answer of this range depends on, for its ETag: equal means unchanged.

    The bars themselves and, for an adjusted read, the symbol's corporate
    actions. A writer of such an input outside a slice completion calls
    :func:`notify_changed`. ``bars``: the bars' :func:`bars_fingerprint`,
    already read (:func:`~barfill.store.bar_reads.read_bars_scan`).
    """
    if bars is None:
        bars = bars_fingerprint(conn, symbol_id, timeframe, start, end, layers)
    fp: tuple[Any, ...] = (bars,)
    if adjust not in (None, Adjust.raw):
        fp += actions_fingerprint(conn, symbol_id)
    return fp


def notify_changed(conn: Connection) -> None:
    """Tell every API process, when this transaction commits, that stored data changed.

    PostgreSQL: ``NOTIFY barfill`` (what slice completions send), which moves
    each server's :class:`~barfill.server.read_cache.DataVersion`. SQLite
    needs nothing: every commit moves it.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify('barfill', :p)"), {"p": '{"changed": true}'})


def newest_start(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    start: int,
    end: int,
    layers: Sequence[str],
    n: int,
) -> int:
    """The open time of the ``n``-th newest distinct bar time in [start, end).

    With fewer bars, the oldest one's (so a read of "the newest N" on a thin
    store reads only what is there), and ``end`` when there are none.
    """
    newest = (
        sa.select(bars.c.ts)
        .where(
            bars.c.symbol_id == symbol_id,
            bars.c.timeframe == timeframe.value,
            bars.c.ts >= start,
            bars.c.ts < end,
            bars.c.layer.in_(list(layers)),
        )
        .distinct()
        .order_by(bars.c.ts.desc())
        .limit(n)
        .subquery()
    )
    found = conn.execute(sa.select(sa.func.min(newest.c.ts))).scalar_one_or_none()
    return end if found is None else int(found)


def provisional_coverage(conn: Connection, symbol_id: int, timeframe: Timeframe) -> list[dict[str, Any]]:
    """Unexpired provisional coverage rows: ``{start, end, expires_at}``."""
    rows = conn.execute(
        sa.select(coverage.c.start, coverage.c.end, coverage.c.expires_at)
        .where(
            coverage.c.symbol_id == symbol_id,
            coverage.c.timeframe == timeframe.value,
            coverage.c.expires_at.is_not(None),
            coverage.c.expires_at > db_now(conn),
        )
        .order_by(coverage.c.start)
    )
    return [{"start": int(s), "end": int(e), "expires_at": float(x)} for s, e, x in rows]


def definition_for(conn: Connection, symbol_id: int, timeframe: Timeframe) -> int | None:
    """The id of a definition of (symbol, timeframe) (the lowest, if several requesters), or None."""
    found = conn.execute(
        sa.select(sa.func.min(job_definitions.c.id)).where(
            job_definitions.c.symbol_id == symbol_id, job_definitions.c.timeframe == timeframe.value
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


def get_slice(conn: Connection, slice_id: int) -> dict[str, Any] | None:
    """One slice with its ticker, or None."""
    row = conn.execute(
        sa.select(job_runs, symbols.c.ticker.label("symbol"))
        .join(symbols, symbols.c.id == job_runs.c.symbol_id)
        .where(job_runs.c.id == slice_id)
    ).one_or_none()
    if row is None:
        return None
    out = dict(row._mapping)
    out.pop("lease_token", None)  # a capability: never shown
    return out


def search_symbols(conn: Connection, prefix: str, limit: int) -> list[str]:
    """Stored tickers starting with ``prefix`` (upper-cased), alphabetically."""
    query = sa.select(symbols.c.ticker).order_by(symbols.c.ticker).limit(limit)
    if prefix:
        escaped = prefix.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(symbols.c.ticker.like(escaped + "%", escape="\\"))
    return [str(t) for t in conn.execute(query).scalars()]


def set_priority(conn: Connection, definition_id: int, priority: int) -> bool:
    """Change a definition's priority (and its queued slices'); False if there is no such definition."""
    result = conn.execute(
        sa.update(job_definitions)
        .where(job_definitions.c.id == definition_id)
        .values(priority=priority, updated_at=db_now(conn))
    )
    if int(result.rowcount) == 0:
        return False
    conn.execute(
        sa.update(job_runs)
        .where(job_runs.c.definition_id == definition_id, job_runs.c.status == "queued")
        .values(priority=priority)
    )
    return True


@dataclass(frozen=True)
class Landed:
    """Bars landed: one slice committed. ``cursor`` orders the feed (finished_at, slice id)."""

    slice_id: int
    finished_at: float
    definition_id: int
    symbol: str
    timeframe: str
    start: int
    end: int
    rows: int


def landed_since(conn: Connection, after: float, limit: int = 500) -> list[Landed]:
    """Slices that succeeded with ``finished_at >= after``, oldest first."""
    rows = conn.execute(
        sa.select(
            job_runs.c.id,
            job_runs.c.finished_at,
            job_runs.c.definition_id,
            symbols.c.ticker,
            job_runs.c.timeframe,
            job_runs.c.start,
            job_runs.c.end,
            job_runs.c.rows_written,
        )
        .join(symbols, symbols.c.id == job_runs.c.symbol_id)
        .where(job_runs.c.status == "succeeded", job_runs.c.finished_at >= after)
        .order_by(job_runs.c.finished_at, job_runs.c.id)
        .limit(limit)
    )
    return [
        Landed(int(i), float(f), int(d), str(t), str(tf), int(s), int(e), int(n))
        for i, f, d, t, tf, s, e, n in rows
    ]


UNREFRESHED_HEADER = "Barfill-Actions-Unrefreshed"
UNAPPLIED_HEADER = "Barfill-Unapplied-Dividends"


def adjust_notes(
    conn: Connection,
    symbol_id: int,
    adjust: Adjust | None,
    first_ts: int | None,
    order: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Response headers of an adjusted read that is not what it says, for want of data.

    ``Barfill-Actions-Unrefreshed: true``: the symbol's corporate actions were never
    fetched (by some provider that publishes them): splits and dividends may be missing.
    ``Barfill-Unapplied-Dividends: <ex date>,...`` (``adjust=all``): dividends left out,
    their reference close not stored yet (:mod:`barfill.service.reference` queues it).
    ``first_ts``: when the read's first bar opens (None: no bars).
    """
    if adjust in (None, Adjust.raw):
        return []
    out: list[tuple[str, str]] = []
    refreshed = conn.execute(
        sa.select(action_refreshes.c.provider).where(action_refreshes.c.symbol_id == symbol_id)
    ).first()
    if refreshed is None:
        out.append((UNREFRESHED_HEADER, "true"))
    if adjust == Adjust.all_adjusted and first_ts is not None:
        ticker_cal = symbol_calendars(conn, [symbol_id]).get(symbol_id)
        if ticker_cal is not None:
            missing = unapplied_dividends(conn, symbol_id, get_calendar(ticker_cal), first_ts, order)
            if missing:
                out.append((UNAPPLIED_HEADER, ",".join(d.isoformat() for d in missing)))
    return out
