"""Read-only queries for operators: slice listings, definitions with tickers, bar counts, corrections."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.errors import InvalidInput
from barfill.store.schema import (
    JOB_STATUSES,
    TIMEFRAME_CODES,
    bars,
    corrections,
    job_definitions,
    job_runs,
    symbols,
)


def list_slices(conn: Connection, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Slices, newest first, with their ticker."""
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInput("status", f"one of {', '.join(JOB_STATUSES)}", status)
    q = (
        sa.select(
            job_runs.c.id,
            symbols.c.ticker.label("symbol"),
            job_runs.c.timeframe,
            job_runs.c.start,
            job_runs.c.end,
            job_runs.c.provider,
            job_runs.c.status,
            job_runs.c.attempts,
            job_runs.c.max_attempts,
            job_runs.c.rows_written,
            job_runs.c.error_code,
            job_runs.c.error_message,
            job_runs.c.purpose,  # fill, or verify (a re-check for vendor corrections)
        )
        .join(symbols, symbols.c.id == job_runs.c.symbol_id)
        .order_by(job_runs.c.id.desc())
        .limit(limit)
    )
    if status is not None:
        q = q.where(job_runs.c.status == status)
    return [dict(r._mapping) for r in conn.execute(q)]


def definitions_with_symbols(conn: Connection) -> list[dict[str, Any]]:
    d = job_definitions
    q = (
        sa.select(d, symbols.c.ticker.label("symbol"))
        .join(symbols, symbols.c.id == d.c.symbol_id)
        .order_by(symbols.c.ticker, d.c.timeframe, d.c.requester)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def bar_counts(conn: Connection) -> list[tuple[str, str, str, int]]:
    """(ticker, timeframe, provider, bars) for every stored combination, providers by name."""
    q = (
        sa.select(symbols.c.ticker, bars.c.timeframe, bars.c.provider, sa.func.count())
        .join(symbols, symbols.c.id == bars.c.symbol_id)
        .group_by(symbols.c.ticker, bars.c.timeframe, bars.c.provider)
        .order_by(symbols.c.ticker, bars.c.timeframe)
    )
    rows = [(t, tf, p, int(n)) for t, tf, p, n in conn.execute(q)]
    # bars.provider holds ids (schema.providers): the SQL order would be the ids'.
    return sorted(rows, key=lambda r: (r[0], TIMEFRAME_CODES[r[1]], r[2]))


def total_bars(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(bars)).scalar_one())


def definition_count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(job_definitions)).scalar_one())


def symbol_count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(symbols)).scalar_one())


def list_corrections(conn: Connection, *, since: float, limit: int = 1000) -> list[dict[str, Any]]:
    """Corrections detected at or after ``since`` (database clock), newest first."""
    c = corrections.c
    query = (
        sa.select(
            c.id,
            symbols.c.ticker,
            c.timeframe,
            c.ts,
            c.provider,
            c.kind,
            c.old_values,
            c.new_values,
            c.detected_at,
        )
        .join(symbols, symbols.c.id == c.symbol_id)
        .where(c.detected_at >= since)
        .order_by(c.detected_at.desc(), c.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": int(r.id),
            "symbol": str(r.ticker),
            "timeframe": str(r.timeframe),
            "ts": int(r.ts),
            "provider": str(r.provider),
            "kind": str(r.kind),
            "old": None if r.old_values is None else json.loads(r.old_values),
            "new": None if r.new_values is None else json.loads(r.new_values),
            "detected_at": float(r.detected_at),
        }
        for r in conn.execute(query)
    ]


def count_corrections(conn: Connection, *, since: float) -> int:
    c = corrections.c
    return int(conn.execute(sa.select(sa.func.count()).where(c.detected_at >= since)).scalar_one())
