"""barfill's own HTTP API, ``/v1``: ensure, bars, progress, coverage, jobs, definitions, forecasts.

Every handler validates its input and answers bad input with 422 naming the
field (timeframes list the valid ones); an unknown stored symbol is 404.
Store calls are synchronous and run in the thread pool. Times in answers are
Unix seconds UTC unless a field says ISO; windows are ``[start, end)``.
Scopes: ``read`` for GETs, ``write`` for ensure/forecasts/retry/cancel,
``admin`` for tick and definition changes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Annotated, Any, Literal

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from barfill.bootstrap import App
from barfill.domain.adjust import Adjust, parse_adjust
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.symbols import validate_ticker
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.server import bars_out, splice
from barfill.server.deps import ERROR_RESPONSES, get_app, require
from barfill.server.read_cache import BarReads, default_end, etag_matches, format_etag
from barfill.server.splice import KeptLayer, KeptRead
from barfill.service import admin
from barfill.service.ensure import ensure, parse_time
from barfill.service.orchestrator import tick
from barfill.service.planning import plan_definition
from barfill.service.progress import JobRef, Progress, job_progress
from barfill.store import http_reads, stamps
from barfill.store.actions import next_effective
from barfill.store.bar_reads import session_span
from barfill.store.bars import upsert_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import db_now
from barfill.store.definitions import get_definition
from barfill.store.definitions import set_enabled as store_set_enabled
from barfill.store.symbols import symbol_id

router = APIRouter(prefix="/v1", tags=["v1"], responses=ERROR_RESPONSES)
Read = Depends(require("read"))
Write = Depends(require("write"))
Admin = Depends(require("admin"))
AppDep = Annotated[App, Depends(get_app)]
MAX_SYMBOLS = 500
MIN_TIME, MAX_TIME = 0, 4_102_444_800  # 1970 .. 2100
MAX_FORECAST_BARS = 100_000
Symbol = Annotated[str, Path(min_length=1, max_length=32, description="Ticker, e.g. AAPL")]
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


def parse_timeframe(value: str) -> Timeframe:
    return Timeframe.parse(value)


def _time(value: str | None, field: str, tz: str) -> int | None:
    """Unix seconds, or a date (exchange-local; an end date is inclusive) or ISO time, via ``parse_time``."""
    if value is None:
        return None
    text = value.strip()
    number = text.lstrip("-").isdigit()
    ts = int(text) if number and len(text) < 15 else parse_time(text, field, tz=tz, end=field == "end")
    if not MIN_TIME <= ts <= MAX_TIME:
        raise InvalidInput(field, "a time between 1970 and 2100", value)
    return ts


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


# -- bars ------------------------------------------------------------------------------------

_FORMATS = ("json", "csv", "parquet", "arrow")
_ARROW = "application/vnd.apache.arrow.stream"
_BARS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Columnar bars (JSON), or CSV / Parquet / Arrow IPC stream",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            _ARROW: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
}


def bars_format(accept: str) -> str:
    """The format of a bar read without ``format=``: Arrow when the client accepts it, else JSON."""
    return "arrow" if _ARROW in accept else "json"


def _bar_query(
    app: App,
    symbol: str,
    timeframe: str,
    start: str | None,
    end: str | None,
    layers: str,
    limit: int | None,
    default_end: int,
    adjust: str | None = None,
    include_flagged: bool = False,
    keep_columns: BarReads | None = None,
) -> KeptRead:
    """Validate a bar read, narrow it to the newest ``limit`` bars, and compute its ETag.

    Also returns the symbol's change counter (:mod:`barfill.store.stamps`), read
    before any of its data, so :func:`_reuse` can later tell the answer stands.

    ``default_end`` is the end when ``end`` is not given: just past the forming
    bar, on the bar grid (the same range, and ETag, all bar long). An adjusted
    read's ETag also covers the symbol's corporate actions: a new split or
    dividend changes the answer (and the tag) without any bar changing.

    With ``keep_columns`` (a read that will be answered with a body), every
    layer's columns are read too, in the same transaction, and kept there for
    :func:`~barfill.server.bars_out.json_stream`: one snapshot for the ETag and
    the values, one connection and one thread hop for a cold read.
    """
    # Read before any data, so a write landing meanwhile moves the version past the kept columns.
    version = None if keep_columns is None else keep_columns.version.current()
    stamp = time.monotonic()
    tf = parse_timeframe(timeframe)
    wanted_adjust = parse_adjust(adjust)
    try:
        wanted = tuple(dict.fromkeys(Layer(x.strip()) for x in layers.split(",") if x.strip()))
    except ValueError:
        raise InvalidInput("layers", "some of historical, intraday, forecast", layers) from None
    if not wanted:
        raise InvalidInput("layers", "at least one of historical, intraday, forecast", layers)
    lo, hi = _time(start, "start", app.calendar.tz), _time(end, "end", app.calendar.tz)
    ticker = validate_ticker(symbol)
    span = app.settings.api_max_range_bars * tf.seconds
    if hi is None:
        hi = default_end
    if lo is None:
        lo = max(MIN_TIME, hi - span) if limit is not None else max(MIN_TIME, hi - 365 * 86_400)
    if hi <= lo:
        raise InvalidInput("end", "a time after start", end)
    if hi - lo > span:
        raise InvalidInput(
            "start", f"a range of at most {app.settings.api_max_range_bars} {tf.value} bar lengths", start
        )
    names = [x.value for x in wanted]
    with app.db.read() as conn:  # one connection for the whole check
        found = symbol_id(conn, ticker)
        if found is None:
            raise HTTPException(404, f"Symbol {ticker} not found")
        sid = found
        seq = stamps.read(conn, sid)
        if limit is not None:
            lo = max(lo, http_reads.newest_start(conn, sid, tf, lo, hi, names, limit))
        q = bars_out.BarQuery(ticker, sid, tf, lo, hi, wanted, wanted_adjust, include_flagged)
        bars_fp = None
        if keep_columns is not None and version is not None:
            # The fingerprint from the rows read, not from a scan of its own.
            kept = [replace(bars_out.layer_columns(conn, q, layer), seq=seq) for layer in wanted]
            for layer, layer_kept in zip(wanted, kept, strict=True):
                keep_columns.columns.put(bars_out.columns_key(q, layer), layer_kept, version, stamp)
            bars_fp = splice.layers_fingerprint(kept)
        fp = http_reads.read_fingerprint(conn, sid, tf, lo, hi, names, adjust=wanted_adjust, bars=bars_fp)
        adjusted = wanted_adjust not in (None, Adjust.raw)
        pending = next_effective(conn, sid) if adjusted else None
        first = int(fp[0][3]) if fp[0][0] else None
        notes = http_reads.adjust_notes(conn, sid, wanted_adjust, first, app.precedence.historical)
        fp += tuple(notes)  # a dividend's close landing changes the answer and the tag
    return KeptRead(q, _etag(q, fp, seq), seq, fp, limit is not None, pending, tuple(notes))


def _etag(q: bars_out.BarQuery, fingerprint: tuple[Any, ...], seq: int) -> str:
    """A read's ETag: its query, what its data depends on, and its symbol's change counter (a flag
    moved from one bar to another leaves every count of the fingerprint as it was)."""
    names = [x.value for x in q.layers]
    shape = (
        q.symbol,
        q.timeframe.value,
        q.start,
        q.end,
        names,
        fingerprint,
        seq,
        q.adjust,
        q.include_flagged,
    )
    return '"' + hashlib.sha256(repr(shape).encode()).hexdigest()[:32] + '"'


def _reuse(app: App, reads: BarReads, key: Hashable) -> KeptRead | None:
    """A read kept under an older data version, brought up to date without reading it all again:
    served as it is if its symbol's change counter has not moved since (one point query instead
    of reading the bars again after every commit of another symbol: a busy store commits all the
    time), or if every change since touched what it does not show; else patched with just the
    sessions written (:mod:`barfill.server.splice`). None: read it in full. Blocking: call it
    from a worker thread.

    Its columns are renewed or patched with it when they were kept under the same version (same data).
    """
    kept = reads.cache.stale(key)
    if kept is None:
        return None
    was, value = kept
    version, stamp = reads.version.current(), time.monotonic()  # before the check, as compute does
    if version is None or _came(reads, value.pending):
        return None
    q, was_seq = value.query, value.seq
    patched: dict[Layer, KeptLayer] = {}  # the layers read again
    with app.db.read() as conn:
        seq = stamps.read(conn, q.symbol_id)
        if seq != value.seq and (q.adjust == Adjust.all_adjusted or _notes_moved(conn, q, value.notes)):
            return None  # it depends on bars outside its range (dividends' closes), or on a refresh
        if seq != value.seq:
            changes = stamps.changes(conn, q.symbol_id, value.seq, seq)
            widen = functools.partial(session_span, conn, q.symbol_id, q.timeframe)
            todo = None if changes is None else splice.plan(changes, value, widen)
            if todo is None:
                return None
            fp = value.fingerprint
            if todo.spans:
                held = _kept_layers(reads, q, was, value.seq)
                found = None if held is None else splice.respliced(conn, q, held, todo)
                if found is None:
                    return None
                patched = {layer: found[layer] for layer in todo.spans}
                fp = (splice.layers_fingerprint([found[layer] for layer in q.layers]), *fp[1:])
            value = value._replace(tag=_etag(q, fp, seq), seq=seq, fingerprint=fp)
    if not reads.cache.patched(key, was, value, version, stamp):
        return None
    for layer in q.layers:
        ckey = bars_out.columns_key(q, layer)
        entry = reads.columns.stale(ckey)
        if entry is not None and entry[0] == was:
            layer_kept = patched.get(layer, entry[1])
            # Read with the kept read, it now stands for the data at the new counter too.
            layer_kept = replace(layer_kept, seq=value.seq if layer_kept.seq == was_seq else None)
            reads.columns.patched(ckey, was, layer_kept, version, stamp)
    return value


def _notes_moved(conn: sa.Connection, q: bars_out.BarQuery, notes: tuple[tuple[str, str], ...]) -> bool:
    """Whether a kept (``split``) read's notes no longer hold: its symbol's actions were refreshed."""
    return bool(notes) and tuple(http_reads.adjust_notes(conn, q.symbol_id, q.adjust, None)) != notes


def _kept_layers(
    reads: BarReads, q: bars_out.BarQuery, was: tuple[int, int], seq: int
) -> dict[Layer, KeptLayer] | None:
    """Every layer of ``q`` kept under ``was`` from data read at counter ``seq`` (the kept read's
    version and counter: the same data), or None."""
    out = {}
    for layer in q.layers:
        held = reads.columns.stale(bars_out.columns_key(q, layer))
        if held is None or held[0] != was or held[1].seq != seq:
            return None
        out[layer] = held[1]
    return out


def _came(reads: BarReads, t: float | None) -> bool:
    """Whether time ``t`` (an announced action's start) has come on the database clock."""
    if t is None:
        return False
    now = reads.clock.now()
    return now is None or now >= t


def _reuse_or_compute(app: App, reads: BarReads, key: Hashable, make: Callable[[], KeptRead]) -> KeptRead:
    found = _reuse(app, reads, key) or reads.cache.compute(key, make)
    if found.pending is not None:  # kept until its next action takes effect, not longer
        reads.version.expire_at(found.pending)
    return found


@router.get("/bars/{symbol}", responses=_BARS_RESPONSES, dependencies=[Read])
async def get_bars(
    request: Request,
    symbol: Symbol,
    app: AppDep,
    timeframe: Annotated[str, Query(max_length=8, description="m1 m5 m15 m30 h1 h4 d1 w1")],
    start: Annotated[str | None, Query(max_length=40, description="Inclusive; ISO 8601 or Unix s")] = None,
    end: Annotated[str | None, Query(max_length=40, description="Exclusive; default: now")] = None,
    layers: Annotated[str, Query(max_length=60)] = "historical,intraday",
    limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="Only the newest N bars")] = None,
    format: Annotated[Literal["json", "csv", "parquet", "arrow"] | None, Query()] = None,
    adjust: Annotated[
        str | None,
        Query(
            max_length=8, description="raw, split or all: adjusted on read for the splits/dividends known now"
        ),
    ] = None,
    include_flagged: Annotated[
        bool, Query(description="Also bars flagged bad (a reverting spike, an empty bar in a busy session)")
    ] = False,
) -> Response:
    """Stored bars, never waiting for a provider. ``ETag`` + ``If-None-Match`` → 304 when unchanged.

    A read asked again while nothing was stored is answered from this
    process's :class:`~barfill.server.read_cache.ReadCache` (no database
    access before the 304).
    """
    reads: BarReads = request.app.state.barfill_reads
    tf = parse_timeframe(timeframe)
    now = reads.clock.now()
    if now is None:
        now = await run_in_threadpool(reads.clock.measure)
    until = default_end(now, tf)
    key = reads.key(symbol, timeframe, start, end, layers, limit, until, adjust, include_flagged)
    fmt = format or bars_format(request.headers.get("accept", ""))
    if_none_match = request.headers.get("if-none-match", "")
    found = reads.cache.get(key)
    if found is None:
        # A read without If-None-Match is answered with a body: read its JSON columns along.
        keep = reads if fmt == "json" and not if_none_match else None
        args = (symbol, timeframe, start, end, layers, limit, until, adjust, include_flagged, keep)
        make = functools.partial(_bar_query, app, *args)
        found = await run_in_threadpool(_reuse_or_compute, app, reads, key, make)
    q, etag = found.query, format_etag(found.tag, fmt)
    headers = {"ETag": etag, "Cache-Control": "no-cache", **dict(found.notes)}
    if etag_matches(etag, if_none_match):
        return Response(status_code=304, headers=headers)
    if fmt == "csv":
        return StreamingResponse(bars_out.csv_stream(app, q), media_type="text/csv", headers=headers)
    if fmt in ("parquet", "arrow"):
        media = "application/vnd.apache.parquet" if fmt == "parquet" else _ARROW
        stream = bars_out.arrow_stream(app, q, parquet=fmt == "parquet")
        return StreamingResponse(stream, media_type=media, headers=headers)
    stream = bars_out.json_stream(app, q, reads=reads)
    return StreamingResponse(stream, media_type="application/json", headers=headers)


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
    start = _time(since, "since", "UTC")
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
