"""What the operator commands show and change: status, slices, definitions, symbols."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from barfill.store import reports
from barfill.store.symbols import ensure_symbols

if TYPE_CHECKING:  # at run time App comes from the caller: `barfill status` stays light
    from barfill.bootstrap import App
    from barfill.store.db import Database
    from barfill.store.queue_reports import QueueReports


DAY_S = 86_400.0
LATEST_CORRECTIONS = 5  # shown by status next to the last day's count


def status(app: App) -> dict[str, Any]:
    """Queue counts, last-hour throughput, errors grouped by message, slices past their lease, corrections."""
    return queue_status(app.db, app.queue, lease_s=app.settings.lease_s)


def queue_status(db: Database, q: QueueReports, *, lease_s: float) -> dict[str, Any]:
    """:func:`status` from the database and the queue's reports alone (no providers, no calendar).

    ``lease_s``: a running slice silent that long is reported stuck.
    """
    slices, rows = q.throughput(3600)
    day_ago = db.now() - DAY_S
    with db.read() as conn:
        n_defs = reports.definition_count(conn)
        n_bars = reports.total_bars(conn)
        n_fixed = reports.count_corrections(conn, since=day_ago)
        latest = reports.list_corrections(conn, since=day_ago, limit=LATEST_CORRECTIONS)
    return {
        "counts": q.counts(),
        "throughput": {"slices": slices, "bars": rows},
        "errors": [{"code": c, "message": m, "count": n} for c, m, n in q.errors(20)],
        # Silent for a whole lease: its worker is gone; the next reap re-queues it.
        "stuck": [asdict(s) for s in q.stuck(lease_s)],
        "definitions": n_defs,
        "bars": n_bars,
        # Vendor corrections found by re-verification (service.verification) in the last day.
        "corrections": {"last_day": n_fixed, "latest": latest},
    }


def corrections(app: App, *, since: float | None, limit: int) -> dict[str, Any]:
    """Corrections detected since ``since`` (Unix s; default: a day ago on the database clock)."""
    start = app.db.now() - DAY_S if since is None else float(since)
    with app.db.read() as conn:
        rows = reports.list_corrections(conn, since=start, limit=limit)
    return {"since": start, "count": len(rows), "corrections": rows}


def list_slices(app: App, *, status: str | None, limit: int) -> list[dict[str, Any]]:
    with app.db.read() as conn:
        return reports.list_slices(conn, status=status, limit=limit)


def list_defs(app: App) -> list[dict[str, Any]]:
    with app.db.read() as conn:
        rows = reports.definitions_with_symbols(conn)
    for r in rows:
        if r["window_days"] is not None:
            r["window"] = f"{r['window_days']} days"
        else:
            r["window"] = (
                f"{time.strftime('%Y-%m-%d', time.gmtime(r['start']))} → "
                f"{time.strftime('%Y-%m-%d', time.gmtime(r['end']))}"
            )
    return rows


def set_enabled(app: App, ids: Sequence[int], enabled: bool) -> int:
    from barfill.store.definitions import set_enabled as _set_enabled  # loads the bar store

    with app.db.write() as conn:
        return _set_enabled(conn, ids, enabled)


def add_symbols(app: App, tickers: Sequence[str]) -> int:
    """Insert the tickers that are new; returns how many were."""
    with app.db.write() as conn:
        before = reports.symbol_count(conn)
        ensure_symbols(conn, tickers, calendar=app.settings.calendar)
        return reports.symbol_count(conn) - before
