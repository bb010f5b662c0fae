"""The HTTP server: :func:`create_app` builds the FastAPI application around one barfill App.

It mounts barfill's ``/v1`` API, the SSE stream, the original backend's
``/functions/v1`` routes and the web page when those modules are present,
plus ``/healthz`` and ``/metrics``. Cross-cutting rules live here:

* bad input is a 422 (400 on the compat routes) whose body names the field,
  never a 500: request validation errors, :class:`~barfill.errors.InvalidInput`
  and malformed JSON are all turned into ``{"error": ..., "detail": [...]}``;
* an unreachable database is a 503, not a 500;
* request bodies are size-limited (``api_max_body_bytes``) → 413;
* CORS origins come from ``api_cors_origins``;
* each request is timed for ``/metrics`` and, with JSON logs, logged without
  headers or query strings (keys never reach a log).

With ``workers``/``scheduler`` the same event loop also runs the queue worker
and the orchestrator, started and stopped by the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from barfill.bootstrap import App
from barfill.errors import BarfillError, DatabaseError, InvalidInput
from barfill.server import metrics, revalidate, warmup
from barfill.server.deps import Auth, is_loopback
from barfill.server.events import EventHub
from barfill.server.read_cache import BarReads

log = logging.getLogger("barfill.http")


@dataclass(frozen=True)
class ServerOptions:
    """How this process serves: address (for the loopback rule) and what else runs in its loop."""

    host: str = "127.0.0.1"
    workers: bool = False
    scheduler: bool = False
    concurrency: int | None = None
    tick_interval_s: float | None = None
    json_logs: bool = False
    # Play the newest screen once before serving (server.warmup): the first user does not pay
    # for this process's first statement compiles and lazy imports.
    rehearse: bool = True


def create_app(app: App, options: ServerOptions | None = None) -> FastAPI:
    """The FastAPI application serving ``app`` (stored on ``state.barfill``)."""
    opts = options or ServerOptions()
    fastapi_app = FastAPI(
        title="barfill",
        version="1",
        summary="Market-data hydration: ensure coverage, read bars, watch progress.",
        lifespan=_lifespan,
    )
    fastapi_app.state.barfill = app
    fastapi_app.state.barfill_options = opts
    fastapi_app.state.barfill_auth = Auth(app, loopback=is_loopback(opts.host))
    reads = BarReads(app.db)
    fastapi_app.state.barfill_reads = reads
    fastapi_app.state.barfill_events = EventHub(app, reads.version)
    # Set after an enqueue here, so this process's worker claims at once (see Worker.wake).
    fastapi_app.state.barfill_wake = asyncio.Event()
    _error_handlers(fastapi_app)

    from barfill.server import bars_route, compat, events, v1, web

    for module in (v1, bars_route, events, metrics, compat, web):
        fastapi_app.include_router(module.router)

    # The route a 304 answered before FastAPI is labelled with (metrics, logs). Looked up in its
    # own router: the app's route list holds included routers, not their routes (FastAPI 0.165).
    route = next(r for r in bars_route.router.routes if getattr(r, "path", None) == revalidate.ROUTE)
    fastapi_app.add_middleware(revalidate.RevalidateBars, state=fastapi_app.state, route=route)
    fastapi_app.add_middleware(_RequestLog, json_logs=opts.json_logs)
    if app.settings.api_cors_origins:
        fastapi_app.add_middleware(
            CORSMiddleware,
            allow_origins=list(app.settings.api_cors_origins),
            allow_methods=["GET", "POST", "PATCH", "OPTIONS"],
            # The original client's headers (apikey, x-client-info) as well as ours.
            allow_headers=[
                "authorization",
                "x-api-key",
                "apikey",
                "x-client-info",
                "content-type",
                "if-none-match",
                "last-event-id",
            ],
            expose_headers=["etag", "barfill-actions-unrefreshed", "barfill-unapplied-dividends"],
        )
    fastapi_app.add_middleware(_BodyLimit, max_bytes=app.settings.api_max_body_bytes)
    return fastapi_app


@contextlib.asynccontextmanager
async def _lifespan(fastapi_app: FastAPI) -> AsyncIterator[None]:
    from barfill.service.orchestrator import run_scheduler
    from barfill.service.worker import Worker

    app: App = fastapi_app.state.barfill
    opts: ServerOptions = fastapi_app.state.barfill_options
    hub: EventHub = fastapi_app.state.barfill_events
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    # Handlers run store calls in the thread pool; more threads than pooled connections only
    # queue inside the pool (and time out there), so cap the threads at what the pool holds.
    pool = app.db.engine.pool
    capacity = int(getattr(pool, "size", lambda: 5)()) + int(getattr(pool, "_max_overflow", 10))
    anyio.to_thread.current_default_thread_limiter().total_tokens = max(4, min(40, capacity - 2))
    if opts.rehearse:
        warmup.build_routes(fastapi_app)
        await asyncio.to_thread(warmup.rehearse, app)
    await hub.start()
    if opts.scheduler:
        tasks.append(
            asyncio.create_task(
                run_scheduler(app, stop, interval_s=opts.tick_interval_s, on_tick=metrics.observe_tick)
            )
        )
    if opts.workers:
        wake: asyncio.Event = fastapi_app.state.barfill_wake
        worker = Worker(app, concurrency=opts.concurrency, wake=wake)
        tasks.append(asyncio.create_task(worker.run(stop)))
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        await hub.stop()
        fastapi_app.state.barfill_reads.close()


def error_body(message: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every error answer: ``{"error": "<one line>", "detail": [{"field", "message"}, ...]}``."""
    return {"error": message, "detail": detail or []}


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def _error_handlers(fastapi_app: FastAPI) -> None:
    @fastapi_app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = []
        for err in exc.errors():
            loc = err.get("loc", ())
            field = _field(loc)
            message = str(err.get("msg", "invalid"))
            if err.get("type") == "json_invalid":
                field, message = "body", "malformed JSON: " + str(err.get("ctx", {}).get("error", ""))
            detail.append({"field": field, "message": message})
        head = "; ".join(f"{d['field']}: {d['message']}" for d in detail[:3])
        return JSONResponse(error_body(f"invalid request: {head}", detail), status_code=422)

    @fastapi_app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        detail = [{"field": exc.field, "message": f"expected {exc.expected}"}]
        return JSONResponse(error_body(str(exc), detail), status_code=422)

    @fastapi_app.exception_handler(DatabaseError)
    async def _database(request: Request, exc: DatabaseError) -> JSONResponse:
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body("database unavailable, try again"), status_code=503)

    @fastapi_app.exception_handler(BarfillError)
    async def _barfill(request: Request, exc: BarfillError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=422)

    @fastapi_app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 304:
            return Response(status_code=304, headers=exc.headers)
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 400 and request.url.path.startswith(("/v1/", "/web/api/")):
            # FastAPI's own "error parsing the body" (e.g. not UTF-8): bad input, so 422 here.
            detail_422 = [{"field": "body", "message": "malformed JSON"}]
            return JSONResponse(error_body(f"malformed JSON body: {message}", detail_422), status_code=422)
        detail = exc.detail if isinstance(exc.detail, list) else None
        return JSONResponse(error_body(message, detail), status_code=exc.status_code, headers=exc.headers)


class _BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by header or as they stream in."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            error_body(
                f"request body over {self.max_bytes} bytes", [{"field": "body", "message": "too large"}]
            ),
            status_code=413,
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class _RequestLog:
    """Time every request for ``/metrics``; with JSON logs, one structured line per request.

    The line holds method, route template, status, duration and the caller's
    key *id* (public): never headers, query strings or bodies.
    """

    def __init__(self, app: ASGIApp, *, json_logs: bool) -> None:
        self.app = app
        self.json_logs = json_logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - t0
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            metrics.observe_request(scope["method"], path, status, elapsed)
            if self.json_logs:
                state = scope.get("state") or {}
                who = state.get("principal")
                log.info(
                    "request",
                    extra={
                        "http": {
                            "method": scope["method"],
                            "route": path,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                            "key_id": getattr(who, "key_id", None),
                            "client": (scope.get("client") or ("-",))[0],
                        }
                    },
                )
