"""The queue side of the original backend's routes: refresh on read and the orchestrator's actions.

Blocking work (database, planner) that :mod:`barfill.server.compat` runs in
a thread. Refreshing queues what is missing with barfill's planner through
:func:`barfill.service.ensure.ensure` and never waits for a provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from barfill.bootstrap import App
from barfill.domain.timeframes import Timeframe
from barfill.errors import BarfillError
from barfill.server import compat_shapes as shapes
from barfill.service.ensure import ensure
from barfill.service.orchestrator import tick as run_tick
from barfill.store import compat_reads as reads

# chart-read seeded a definition for each of these, at this priority.
REFRESH_TIMEFRAMES = (Timeframe.m15, Timeframe.h1, Timeframe.h4, Timeframe.d1, Timeframe.w1)
REFRESH_PRIORITY = 200
RETRY_BATCH = 10  # failed slices retried per retry_failed, the longest-failed first


def refresh(
    app: App, ticker: str, symbol_id: int, requested: Timeframe, timeframes: Sequence[Timeframe]
) -> dict[str, Any]:
    """Queue what is missing for each timeframe with barfill's planner; never waits for a provider.

    A timeframe that already has a definition is ensured with its own stored
    window, priority and provider (so reading never narrows what a user
    asked for) and a disabled one is left alone (reading never re-enables
    it); a new one gets the original's chart-read window (7 days intraday,
    730 days daily/weekly) at priority 200.
    """
    enqueued: list[str] = []
    inserted = 0
    diagnostics: dict[str, Any] = {"planner": "barfill"}
    errors: list[str] = []
    for tf in timeframes:
        with app.db.read() as conn:
            stored = reads.definition_settings(conn, symbol_id, tf)
        if stored is not None and not stored["enabled"]:
            diagnostics[tf.value] = {"skipped": "definition disabled"}
            continue
        if stored is None:
            kwargs: dict[str, Any] = {
                "days": 7 if tf.intraday else 730,
                "priority": REFRESH_PRIORITY,
            }
        elif stored["window_days"] is not None:
            kwargs = {"days": stored["window_days"], "priority": stored["priority"]}
        else:
            kwargs = {"start": stored["start"], "end": stored["end"], "priority": stored["priority"]}
        if stored is not None and stored["provider"] is not None:
            kwargs["provider"] = stored["provider"]
        try:
            result = ensure(app, [ticker], tf, **kwargs).results[0]
        except BarfillError as e:
            errors.append(f"{tf.value}: {e}")
            continue
        diagnostics[tf.value] = {"gaps": result.gaps, "bars_missing": result.bars_missing}
        if result.slices_queued:
            enqueued.append(tf.value)
            inserted += result.slices_queued
    return {
        "attempted": True,
        "timeframe": requested.value,
        "symbol": ticker,
        "enqueuedTimeframes": enqueued,
        "insertedSlices": inserted,
        "error": "; ".join(errors) or None,
        "diagnostics": diagnostics,
    }


def not_attempted(ticker: str, tf: Timeframe) -> dict[str, Any]:
    return {
        "attempted": False,
        "timeframe": tf.value,
        "symbol": ticker,
        "enqueuedTimeframes": [],
        "insertedSlices": 0,
        "error": None,
        "diagnostics": {"planner": "barfill", "reason": "fresh"},
    }


def tick(app: App) -> dict[str, Any]:
    result = run_tick(app)
    results: dict[str, Any] = {
        "scanned": result.scanned,
        "slices_created": result.slices_created,
        "jobs_dispatched": 0,  # workers claim slices themselves
        "errors": list(result.errors),
    }
    if result.scanned == 0:
        return {"message": "No jobs to process", "results": results}
    results |= {"requeued": result.requeued, "expired": result.expired, "archived": result.archived}
    return {"message": "Tick complete", "duration": round(result.duration_ms), "results": results}


def status(app: App) -> dict[str, Any]:
    with app.db.read() as conn:
        queued = reads.list_runs(conn, ["queued"], "oldest_created", 10)
        running = reads.list_runs(conn, ["running"], "started", None)
        recent = reads.list_runs(conn, ["succeeded", "failed"], "newest_finished", 20)
    return {
        "queued": len(queued),
        "running": len(running),
        "queued_jobs": [shapes.job_run(r) for r in queued],
        "running_jobs": [shapes.job_run(r) for r in running],
        "recent_jobs": [shapes.job_run(r) for r in recent],
    }


def retry_failed(app: App) -> dict[str, Any]:
    with app.db.read() as conn:
        ids = reads.oldest_failed_ids(conn, RETRY_BATCH)
    retried = app.queue.retry_failed(ids) if ids else 0
    return {"message": f"Retried {retried} failed jobs"}
