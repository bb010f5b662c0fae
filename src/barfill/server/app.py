"""The FastAPI application — STAND-IN until the ``http`` branch's version is merged.

Holds only the ``/v1`` subset the web page needs (ensure, progress, bars,
symbols, events), with the agreed shapes, so the page and its browser tests
run before the real API lands. Replaced wholesale on merge.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import fastapi
import sqlalchemy as sa
from fastapi import Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from barfill.bootstrap import App
from barfill.domain.bars import Layer
from barfill.errors import InvalidInput
from barfill.server import web
from barfill.server.deps import get_app
from barfill.service.ensure import ensure, parse_time
from barfill.service.progress import JobRef, job_progress
from barfill.store import web_reports
from barfill.store.bars import read_bars
from barfill.store.db import db_now
from barfill.store.schema import job_runs, symbols
from barfill.store.symbols import symbol_id

AppDep = Annotated[App, Depends(get_app)]


def _job_id(job: JobRef) -> str:
    raw = json.dumps({"d": list(job.definition_ids), "s": job.since}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _job(text: str) -> JobRef:
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return JobRef(tuple(int(i) for i in data["d"]), float(data["s"]))
    except (ValueError, KeyError, TypeError):
        raise HTTPException(422, detail="job: expected a job id from POST /v1/ensure") from None


def _progress(app: App, job: JobRef) -> dict[str, Any]:
    p = job_progress(app.db, job)
    return {
        "percent": p.progress_percent,
        "bars_written": p.bars_written,
        "total_slices": p.total_slices,
        "completed_slices": p.completed_slices,
        "running_slices": p.running_slices,
        "queued_slices": p.queued_slices,
        "failed_slices": p.failed_slices,
        "eta_s": p.eta_seconds,
        "done": p.done,
    }


class EnsureBody(BaseModel):
    symbol: str | None = None
    symbols: list[str] | None = None
    timeframe: str
    window_days: int | None = None
    start: str | None = None
    end: str | None = None
    priority: int = 0
    provider: str | None = None


def _v1(api: fastapi.FastAPI) -> None:
    @api.post("/v1/ensure")
    def post_ensure(app: AppDep, body: EnsureBody) -> dict[str, Any]:
        tickers = body.symbols or ([body.symbol] if body.symbol else [])
        try:
            report = ensure(
                app,
                tickers,
                body.timeframe,
                days=body.window_days,
                start=body.start,
                end=body.end,
                priority=body.priority,
                provider=body.provider,
            )
        except InvalidInput as e:
            raise HTTPException(422, detail=str(e)) from None
        return {
            "results": [r.as_dict() for r in report.results],
            "job": _job_id(report.job),
            "progress": _progress(app, report.job),
        }

    @api.get("/v1/progress/{job}")
    def get_progress(app: AppDep, job: str) -> dict[str, Any]:
        return _progress(app, _job(job))

    @api.get("/v1/symbols")
    def get_symbols(app: AppDep, q: Annotated[str, Query(max_length=32)] = "") -> dict[str, list[str]]:
        with app.db.read() as conn:
            return {"symbols": web_reports.search_symbols(conn, q)}

    @api.get("/v1/bars/{symbol}")
    def get_bars(
        app: AppDep,
        symbol: str,
        timeframe: str,
        start: str | None = None,
        end: str | None = None,
        layers: str = "historical,intraday",
    ) -> dict[str, Any]:
        try:
            lo = parse_time(start, "start") if start else 0
            hi = parse_time(end, "end") if end else int(time.time()) + 86_400
            out: dict[str, Any] = {}
            with app.db.read() as conn:
                sid = symbol_id(conn, symbol.upper())
                if sid is None:
                    raise HTTPException(404, detail=f"Symbol {symbol.upper()} not found")
                for name in layers.split(","):
                    b = read_bars(conn, sid, timeframe, lo, hi, layers=[Layer(name)])
                    out[name] = {
                        "t": b.ts.tolist(),
                        "o": b.open.tolist(),
                        "h": b.high.tolist(),
                        "l": b.low.tolist(),
                        "c": b.close.tolist(),
                        "v": b.volume.tolist(),
                        "provider": b.provider,
                    }
        except (InvalidInput, ValueError) as e:
            raise HTTPException(422, detail=str(e)) from None
        return {"symbol": symbol.upper(), "timeframe": timeframe, "layers": out}

    @api.get("/v1/events")
    async def events(request: Request, app: AppDep, job: str | None = None) -> StreamingResponse:
        ref = _job(job) if job else None
        return StreamingResponse(_stream(request, app, ref, job), media_type="text/event-stream")


def _landed(app: App, after: float) -> tuple[float, list[dict[str, Any]]]:
    with app.db.read() as conn:
        now = float(conn.execute(sa.select(db_now(conn))).scalar_one())
        rows = conn.execute(
            sa.select(symbols.c.ticker, job_runs.c.timeframe, job_runs.c.start, job_runs.c.end)
            .join(symbols, symbols.c.id == job_runs.c.symbol_id)
            .where(job_runs.c.status == "succeeded", job_runs.c.finished_at > after)
        ).all()
    return now, [{"symbol": t, "timeframe": tf, "start": int(s), "end": int(e)} for t, tf, s, e in rows]


async def _stream(request: Request, app: App, ref: JobRef | None, job: str | None) -> AsyncIterator[str]:
    n = 0
    cursor, _ = await asyncio.to_thread(_landed, app, float("inf"))
    last: dict[str, Any] | None = None
    sent: set[tuple[Any, ...]] = set()
    while not await request.is_disconnected():
        now, landed = await asyncio.to_thread(_landed, app, cursor - 2.0)
        for item in landed:
            key = tuple(item.values())
            if key in sent:
                continue
            sent.add(key)
            n += 1
            yield f"id: {n}\nevent: bars\ndata: {json.dumps(item)}\n\n"
        cursor = now
        if ref is not None:
            p = await asyncio.to_thread(_progress, app, ref)
            if p != last:
                n += 1
                data = {"job": job, **{k: p[k] for k in ("percent", "bars_written", "eta_s", "done")}}
                yield f"id: {n}\nevent: progress\ndata: {json.dumps(data)}\n\n"
                last = p
        else:
            yield ": keep-alive\n\n"
        await asyncio.sleep(0.25)


def create_app(app: App, **settings: Any) -> fastapi.FastAPI:
    """Mount the routers on a FastAPI app holding ``app`` on ``state.barfill``."""
    api = fastapi.FastAPI(title="barfill")
    api.state.barfill = app
    _v1(api)
    web.mount(api)
    return api
