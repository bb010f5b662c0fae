"""barfill's own HTTP API, ``/v1``: ensure, bars, progress, coverage, jobs, definitions, forecasts.

Every handler validates its input and answers bad input with 422 naming the
field (timeframes list the valid ones); an unknown stored symbol is 404.
Store calls are synchronous and run in the thread pool. Times in answers are
Unix seconds UTC unless a field says ISO; windows are ``[start, end)``.
Scopes: ``read`` for GETs, ``write`` for ensure/forecasts/retry/cancel,
``admin`` for tick and definition changes. The bar read and its kept
copies are in :mod:`barfill.server.bars_route`; what the route modules share
(scopes, the ticker path, times) in :mod:`barfill.server.params`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Annotated, Any, Literal

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from barfill.bootstrap import App
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.symbols import validate_ticker
from barfill.errors import InvalidInput
from barfill.server.deps import ERROR_RESPONSES
from barfill.server.params import (
    MAX_TIME,
    MIN_TIME,
    Admin,
    AppDep,
    Read,
    Symbol,
    Write,
    parse_query_time,
    parse_timeframe,
)
from barfill.service import admin
from barfill.service.ensure import ensure
from barfill.service.orchestrator import tick
from barfill.service.planning import plan_definition
from barfill.service.progress import JobRef, Progress, job_progress
from barfill.store import http_reads
from barfill.store.bars import upsert_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import db_now
from barfill.store.definitions import get_definition
from barfill.store.definitions import set_enabled as store_set_enabled
from barfill.store.symbols import symbol_id

router = APIRouter(prefix="/v1", tags=["v1"], responses=ERROR_RESPONSES)
MAX_SYMBOLS = 500
MAX_FORECAST_BARS = 100_000
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


# -- models ----------------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnsureBody(Strict):
    """Either ``symbol`` or ``symbols``; a rolling ``window_days`` or a fixed ``start``/``end``."""

    symbol: StrictStr | None = Field(default=None, max_length=32)
    symbols: list[Annotated[StrictStr, Field(max_length=32)]] | None = Field(
        default=None, max_length=MAX_SYMBOLS
    )
    timeframe: StrictStr = Field(max_length=8, description="m1 m5 m15 m30 h1 h4 d1 w1 (or 1m ... 1w)")
    window_days: StrictInt | None = Field(default=None, ge=1, le=365 * 30)
    start: StrictStr | StrictInt | None = Field(default=None, description="YYYY-MM-DD, ISO 8601 or Unix s")
    end: StrictStr | StrictInt | None = Field(default=None, description="YYYY-MM-DD, ISO 8601 or Unix s")
    priority: StrictInt = Field(default=0, ge=-1000, le=1000)
    provider: StrictStr | None = Field(default=None, max_length=40)


class ProgressOut(BaseModel):
    percent: float
    bars_written: int
    total_slices: int
    completed_slices: int
    running_slices: int
    queued_slices: int
    failed_slices: int
    cancelled_slices: int
    eta_s: float | None
    done: bool


class EnsureOut(BaseModel):
    results: list[dict[str, Any]]
    job: str
    progress: ProgressOut
    notices: list[str]


class DefinitionPatch(Strict):
    enabled: bool | None = None
    priority: StrictInt | None = Field(default=None, ge=-1000, le=1000)


class ForecastBars(Strict):
    t: list[StrictInt] = Field(max_length=MAX_FORECAST_BARS)
    o: list[float] = Field(max_length=MAX_FORECAST_BARS)
    h: list[float] = Field(max_length=MAX_FORECAST_BARS)
    l: list[float] = Field(max_length=MAX_FORECAST_BARS)  # noqa: E741 - the wire name
    c: list[float] = Field(max_length=MAX_FORECAST_BARS)
    v: list[float] | None = Field(default=None, max_length=MAX_FORECAST_BARS)


class ForecastBody(Strict):
    symbol: StrictStr = Field(max_length=32)
    timeframe: StrictStr = Field(max_length=8)
    model: StrictStr = Field(default="forecast", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.:-]+$")
    bars: ForecastBars


# -- helpers ---------------------------------------------------------------------------------


def encode_job(job: JobRef) -> str:
    raw = json.dumps({"d": list(job.definition_ids), "s": job.since}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_job(text: str) -> JobRef:
    """The JobRef inside an opaque job id (422 naming ``job`` when it is not one)."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        ids = tuple(int(i) for i in raw["d"])
        since = float(raw["s"])
        if not all(isinstance(i, int) and 0 < i < 2**31 for i in raw["d"]) or len(ids) > MAX_SYMBOLS:
            raise ValueError
        if not np.isfinite(since):
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("job", "a job id returned by POST /v1/ensure", text[:80]) from None
    return JobRef(ids, since)


def progress_out(p: Progress) -> dict[str, Any]:
    return {
        "percent": p.progress_percent,
        "bars_written": p.bars_written,
        "total_slices": p.total_slices,
        "completed_slices": p.completed_slices,
        "running_slices": p.running_slices,
        "queued_slices": p.queued_slices,
        "failed_slices": p.failed_slices,
        "cancelled_slices": p.cancelled_slices,
        "eta_s": p.eta_seconds,
        "done": p.done,
    }


def _symbol_id(app: App, ticker: str) -> tuple[str, int]:
    """(canonical ticker, id) of a stored symbol; 404 when barfill has never seen it."""
    canonical = validate_ticker(ticker)
    with app.db.read() as conn:
        found = symbol_id(conn, canonical)
    if found is None:
        raise HTTPException(404, f"Symbol {canonical} not found")
    return canonical, found


# -- ensure and progress ---------------------------------------------------------------------


@router.post("/ensure", response_model=EnsureOut, dependencies=[Write])
async def post_ensure(request: Request, body: EnsureBody, app: AppDep) -> dict[str, Any]:
    """Record the desired coverage and queue what is missing; answers at once (idempotent)."""
    if (body.symbol is None) == (body.symbols is None):
        raise InvalidInput("symbols", "either symbol or symbols (a non-empty list)")
    items = [body.symbol] if body.symbol is not None else list(body.symbols or [])
    if not items:
        raise InvalidInput("symbols", "at least one ticker")
    for value, name in ((body.start, "start"), (body.end, "end")):
        if isinstance(value, int) and not MIN_TIME <= value <= MAX_TIME:
            raise InvalidInput(name, "a time between 1970 and 2100", value)
    wake: asyncio.Event = request.app.state.barfill_wake
    loop = asyncio.get_running_loop()
    report = await run_in_threadpool(
        ensure,
        app,
        items,
        body.timeframe,
        days=body.window_days,
        start=body.start,
        end=body.end,
        priority=body.priority,
        provider=body.provider,
        # This process's worker, if any, claims as soon as the slices are committed (the
        # newest screen's clock runs from the request), not after the answer is made.
        on_enqueued=lambda: loop.call_soon_threadsafe(wake.set),
    )
    return {
        "results": [r.as_dict() for r in report.results],
        "job": encode_job(report.job),
        "progress": progress_out(report.progress),
        "notices": report.notices,
    }


@router.get("/progress/{job}", response_model=ProgressOut, dependencies=[Read])
async def get_progress(
    job: Annotated[str, Path(max_length=8_000, pattern=r"^[A-Za-z0-9_-]+$")], app: AppDep
) -> dict[str, Any]:
    """Progress of the work one ensure started: slice counts, bars written, percent, ETA."""
    ref = decode_job(job)
    return progress_out(await run_in_threadpool(job_progress, app.db, ref))


# -- coverage --------------------------------------------------------------------------------


def _iv(items: list[Interval]) -> list[list[int]]:
    return [[i.start, i.end] for i in items]


def _coverage(app: App, symbol: str, timeframe: str) -> dict[str, Any]:
    tf = parse_timeframe(timeframe)
    ticker, sid = _symbol_id(app, symbol)
    with app.db.read() as conn:
        covered = read_coverage(conn, sid, tf)
        provisional = http_reads.provisional_coverage(conn, sid, tf)
        def_id = http_reads.definition_for(conn, sid, tf)
        defn = None if def_id is None else get_definition(conn, def_id)
    out: dict[str, Any] = {
        "symbol": ticker,
        "timeframe": tf.value,
        "intervals": _iv(covered),
        "provisional": provisional,
        "definition_id": def_id,
        "window": None,
        "gaps": [],
        "unfillable": [],
    }
    if defn is not None:
        plan = plan_definition(
            defn,
            covered,
            get_calendar(app.settings.calendar),
            app.router,
            now=int(app.db.now()),
            max_attempts=app.settings.max_attempts,
        )
        out |= {
            "window": [plan.window.start, plan.window.end],
            "gaps": _iv(plan.gaps),
            "unfillable": _iv(plan.unfillable),
        }
    return out


@router.get("/coverage/{symbol}", dependencies=[Read])
async def get_coverage(
    symbol: Symbol, app: AppDep, timeframe: Annotated[str, Query(max_length=8)]
) -> dict[str, Any]:
    """Covered intervals, provisional ones, and (for a defined window) its gaps and unfillable parts."""
    return await run_in_threadpool(_coverage, app, symbol, timeframe)


# -- jobs, status, tick ----------------------------------------------------------------------


@router.get("/jobs", dependencies=[Read])
async def get_jobs(
    app: AppDep,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
) -> dict[str, Any]:
    """Slices, newest first."""
    rows = await run_in_threadpool(admin.list_slices, app, status=status, limit=limit)
    return {"jobs": rows}


def _slice(app: App, slice_id: int) -> dict[str, Any]:
    with app.db.read() as conn:
        found = http_reads.get_slice(conn, slice_id)
    if found is None:
        raise HTTPException(404, f"job {slice_id} not found")
    return found


@router.get("/jobs/{job_id}", dependencies=[Read])
async def get_job(job_id: Id, app: AppDep) -> dict[str, Any]:
    """One slice."""
    return await run_in_threadpool(_slice, app, job_id)


@router.post("/jobs/{job_id}/retry", dependencies=[Write])
async def retry_job(job_id: Id, app: AppDep) -> dict[str, Any]:
    """Re-queue a failed slice (``changed`` 0 when it was not failed)."""
    await run_in_threadpool(_slice, app, job_id)
    n = await run_in_threadpool(app.queue.retry_failed, [job_id])
    return {"id": job_id, "changed": n}


@router.post("/jobs/{job_id}/cancel", dependencies=[Write])
async def cancel_job(job_id: Id, app: AppDep) -> dict[str, Any]:
    """Cancel a queued or running slice (``changed`` 0 when already finished)."""
    await run_in_threadpool(_slice, app, job_id)
    n = await run_in_threadpool(lambda: app.queue.cancel([job_id]))
    return {"id": job_id, "changed": n}


@router.get("/status", dependencies=[Read])
async def get_status(app: AppDep) -> dict[str, Any]:
    """Queue counts, last-hour throughput, errors grouped, stuck slices, corrections in the last day."""
    return await run_in_threadpool(admin.status, app)


@router.get("/corrections", dependencies=[Read])
async def get_corrections(
    app: AppDep,
    since: Annotated[
        str | None, Query(max_length=40, description="ISO 8601 or Unix s; default: the last day")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Vendor corrections found by re-verification, newest first: each changed, added or removed bar."""
    start = parse_query_time(since, "since", "UTC")
    return await run_in_threadpool(admin.corrections, app, since=start, limit=limit)


@router.post("/tick", dependencies=[Admin])
async def post_tick(app: AppDep) -> dict[str, Any]:
    """Run one orchestrator tick now."""
    result = await run_in_threadpool(tick, app)
    return result.as_dict()


# -- definitions and symbols -----------------------------------------------------------------


@router.get("/definitions", dependencies=[Read])
async def get_definitions(app: AppDep) -> dict[str, Any]:
    """Every definition with its symbol and window."""
    return {"definitions": await run_in_threadpool(admin.list_defs, app)}


def _patch_definition(app: App, def_id: int, patch: DefinitionPatch) -> dict[str, Any]:
    with app.db.write() as conn:
        if get_definition(conn, def_id) is None:
            raise HTTPException(404, f"definition {def_id} not found")
        if patch.enabled is not None:
            store_set_enabled(conn, [def_id], patch.enabled)
        if patch.priority is not None:
            http_reads.set_priority(conn, def_id, patch.priority)
        defn = get_definition(conn, def_id)
    assert defn is not None
    return {"id": defn.id, "symbol": defn.symbol, "enabled": defn.enabled, "priority": defn.priority}


@router.patch("/definitions/{def_id}", dependencies=[Admin])
async def patch_definition(def_id: Id, patch: DefinitionPatch, app: AppDep) -> dict[str, Any]:
    """Enable, disable or re-prioritise a definition (its queued slices follow the priority)."""
    return await run_in_threadpool(_patch_definition, app, def_id, patch)


@router.get("/symbols", dependencies=[Read])
async def get_symbols(
    app: AppDep,
    q: Annotated[str, Query(max_length=32)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Stored tickers starting with ``q``."""

    def run() -> list[str]:
        with app.db.read() as conn:
            return http_reads.search_symbols(conn, q.strip(), limit)

    return {"symbols": await run_in_threadpool(run)}


# -- forecasts -------------------------------------------------------------------------------


def _write_forecast(app: App, body: ForecastBody) -> dict[str, Any]:
    tf = parse_timeframe(body.timeframe)
    b = body.bars
    n = len(b.t)
    for name in ("o", "h", "l", "c"):
        if len(getattr(b, name)) != n:
            raise InvalidInput(f"bars.{name}", f"{n} values (as many as bars.t)", len(getattr(b, name)))
    if b.v is not None and len(b.v) != n:
        raise InvalidInput("bars.v", f"{n} values (as many as bars.t)", len(b.v))
    ts = np.asarray(b.t, dtype=np.int64)
    if n and (ts.min() < MIN_TIME or ts.max() > MAX_TIME):
        raise InvalidInput("bars.t", "times between 1970 and 2100 (Unix seconds)")
    if n and np.any(ts % tf.seconds != 0) and tf.seconds < 86_400:
        raise InvalidInput("bars.t", f"bar-open times on the {tf.value} grid (multiples of {tf.seconds} s)")
    cols = {k: np.asarray(getattr(b, k), dtype=np.float64) for k in ("o", "h", "l", "c")}
    volume = np.asarray(b.v if b.v is not None else [0.0] * n, dtype=np.float64)
    if not all(np.isfinite(v).all() for v in (*cols.values(), volume)):
        raise InvalidInput("bars", "finite numbers")
    high_ok = np.all(cols["h"] >= np.maximum(cols["o"], cols["c"]))
    if not (high_ok and np.all(cols["l"] <= np.minimum(cols["o"], cols["c"]))):
        raise InvalidInput("bars", "high >= max(open, close) and low <= min(open, close)")
    ticker, sid = _symbol_id(app, body.symbol)
    batch = BarBatch(ticker, tf, body.model, ts, cols["o"], cols["h"], cols["l"], cols["c"], volume)
    with app.db.write() as conn:
        now = float(conn.execute(sa.select(db_now(conn))).scalar_one())
        written = upsert_bars(conn, sid, batch, layer=Layer.forecast, fetched_at=now)
        http_reads.notify_changed(conn)
    return {"symbol": ticker, "timeframe": tf.value, "model": body.model, "written": written}


@router.post("/forecasts", dependencies=[Write])
async def post_forecasts(body: ForecastBody, app: AppDep) -> dict[str, Any]:
    """Store forecast-layer bars (a model's output). Never counted as coverage."""
    return await run_in_threadpool(_write_forecast, app, body)
