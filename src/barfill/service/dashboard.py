"""What the web dashboard shows: queue, throughput, jobs, failures, providers, corrections, coverage map.

Everything is read on the database clock, so every API process of one
database shows the same picture.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.coverage_grid import Cell, classify_days
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.service.planning import window_of
from barfill.store import reports, web_reports
from barfill.store.db import db_now
from barfill.store.definitions import get_definition

MAX_MAP_DAYS = 366
MAX_CORRECTION_ROWS = 20
_DAY = 86_400


def overview(app: App) -> dict[str, Any]:
    """Queue counts, the last hour per minute, definitions with progress, failures and providers."""
    q = app.queue
    with app.db.read() as conn:
        series = web_reports.throughput_series(conn)
        defs = web_reports.definitions_for(conn)
        failures = web_reports.failure_groups(conn)
        per_provider = web_reports.provider_counts(conn)
        day_ago = float(conn.execute(sa.select(db_now(conn))).scalar_one()) - _DAY
        fixed = reports.count_corrections(conn, since=day_ago)
        latest = reports.list_corrections(conn, since=day_ago, limit=MAX_CORRECTION_ROWS)
    progress = q.progress([int(d["id"]) for d in defs])
    definitions = []
    for d in defs:
        p = progress[int(d["id"])]
        definitions.append(
            {
                "id": int(d["id"]),
                "symbol": d["symbol"],
                "timeframe": d["timeframe"],
                "window_days": d["window_days"],
                "priority": int(d["priority"]),
                "enabled": bool(d["enabled"]),
                "provider": d["provider"],
                "slices": {
                    "total": p.total,
                    "queued": p.queued,
                    "running": p.running,
                    "succeeded": p.succeeded,
                    "failed": p.failed,
                    "cancelled": p.cancelled,
                },
                "bars_written": p.rows_written,
                "percent": round(100.0 * p.fraction, 1),
                "active": not p.finished,
            }
        )
    return {
        "counts": q.counts(),
        "throughput": {
            "t": series.t,
            "slices": series.slices,
            "bars": series.bars,
            "bucket_s": series.bucket_s,
        },
        "definitions": definitions,
        "failures": failures,
        "providers": providers(app, per_provider),
        # Vendor corrections found by re-verification in the last day, newest first.
        "corrections": {"last_day": fixed, "latest": latest},
    }


def providers(app: App, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Per configured provider: its declared limit, lifetime counters and the current rate-limit wait.

    ``requests``, ``rate_limited`` (throttled: 429 / Retry-After penalties)
    and ``errors`` are the shared ``rate_limits`` counters of every worker
    process. ``wait_s`` is how long a request asked for now would wait, on the
    database clock (the shared limiter's :meth:`peek`), 0 when a slot is free.
    """
    out = []
    for name, provider in sorted(app.providers.items()):
        limit = provider.capabilities.rate_limit
        c = counts.get(name, {})
        wait_s = app.limiter.peek(name, limit) if c else 0.0
        out.append(
            {
                "name": name,
                "rate_limit": f"{limit.requests}/{limit.period_s:g}s",
                "requests": int(c.get("requests", 0)),
                "rate_limited": int(c.get("throttled", 0)),
                "errors": int(c.get("errors", 0)),
                "wait_s": round(wait_s, 3),
            }
        )
    return out


def coverage_map(app: App, timeframe: str, days: int) -> dict[str, Any]:
    """Symbols with a definition on ``timeframe`` × the last ``days`` calendar days (UTC dates).

    Each cell is a :class:`~barfill.domain.coverage_grid.Cell` value; a day
    without a session is ``closed``.
    """
    tf = Timeframe.parse(timeframe)
    if isinstance(days, bool) or not 1 <= days <= MAX_MAP_DAYS:
        raise InvalidInput("days", f"a whole number from 1 to {MAX_MAP_DAYS}", days)
    cal = app.calendar
    with app.db.read() as conn:
        now = int(web_reports.now(conn))
        defs = web_reports.definitions_for(conn, tf)
        rows = web_reports.coverage_rows(conn, (int(d["symbol_id"]) for d in defs), tf)
        windows = {}
        for d in defs:
            defn = get_definition(conn, int(d["id"]))
            windows[int(d["id"])] = None if defn is None else window_of(defn, cal, now)
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    dates = [today - dt.timedelta(days=days - 1 - i) for i in range(days)]
    by_date = _sessions_by_date(app, dates)
    sessions = [by_date.get(d.isoformat()) for d in dates]
    out_rows = []
    for d in defs:
        sid = int(d["symbol_id"])
        cells = classify_days(
            sessions,
            windows[int(d["id"])],
            rows.final.get(sid, []),
            rows.provisional.get(sid, []),
            rows.failed.get(sid, []),
        )
        out_rows.append(
            {
                "symbol": d["symbol"],
                "definition_id": int(d["id"]),
                "enabled": bool(d["enabled"]),
                "cells": [c.value for c in cells],
            }
        )
    return {
        "timeframe": tf.value,
        "days": [d.isoformat() for d in dates],
        "legend": [c.value for c in Cell],
        "rows": out_rows,
    }


def _sessions_by_date(app: App, dates: list[dt.date]) -> dict[str, Interval]:
    """Regular-hours trading time of each session date in ``dates`` (local session dates)."""
    cal = app.calendar
    lo = np.datetime64(dates[0].isoformat(), "D")
    hi = np.datetime64(dates[-1].isoformat(), "D")
    i0 = int(np.searchsorted(cal.dates, lo, side="left"))
    i1 = int(np.searchsorted(cal.dates, hi, side="right"))
    return {str(cal.dates[i]): Interval(int(cal.opens[i]), int(cal.closes[i])) for i in range(i0, i1)}
