"""The original backend's routes under ``/functions/v1/``, so its macOS client works unchanged.

Served: ``ensure-coverage``, ``chart-data-v2`` and its later name ``chart``,
``chart-read`` (with ``before``/``pageSize`` paging) and
``orchestrator?action=tick|status|retry_failed``, with the JSON keys and types
the client decodes (``shared/contracts/seed-api.md``). What differs from the
original, on purpose:

* bad input (malformed JSON, wrong types, an unknown timeframe) is a 400
  naming the field, never a 500; both timeframe spellings are accepted and
  answers use the canonical ``m15``/``h1``/``h4``/``d1``/``w1``;
* "coverage complete" means the whole requested window is covered, not just
  today's part of it;
* refreshing on read queues work with barfill's planner (``service.ensure``)
  and never waits for a provider; workers do the fetching, so ``fetch-bars``
  is not served and a tick dispatches nothing itself (``jobs_dispatched`` 0);
* there is no ML layer: ``mlSummary``, ``indicators``, ``superTrendAI`` and
  ``futures`` are null and the forecast layer holds only stored forecast bars.

Every answer, error or not, carries the original's CORS headers; errors are
``{"error": message}``. Route handlers are thin: they parse the request once
(:mod:`barfill.server.compat_shapes`) and run the blocking work in a thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from barfill.bootstrap import App
from barfill.domain.bars import Layer
from barfill.domain.symbols import validate_ticker
from barfill.domain.timeframes import Timeframe
from barfill.errors import BarfillError, InvalidInput
from barfill.server import compat_queue as queue_side
from barfill.server import compat_shapes as shapes
from barfill.server.compat_shapes import CompatError, iso
from barfill.server.deps import get_app, get_auth, require
from barfill.service.ensure import MAX_WINDOW_DAYS, ensure
from barfill.store import compat_reads as reads

log = logging.getLogger("barfill.compat")

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_ASSET_TYPES = {"us_equity": "stock"}


class _CompatRoute(APIRoute):
    """Renders every failure as ``{"error": ...}`` and adds the CORS headers to every answer.

    Done per route (not by app-wide handlers) so the original's error shape
    holds whatever the app mounting this router does for its own routes;
    dependencies (API-key checks) run inside the handler, so theirs is caught too.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            response: Response
            try:
                response = await handler(request)
            except CompatError as e:
                response = JSONResponse(e.body(), status_code=e.status)
            except InvalidInput as e:
                response = JSONResponse({"error": str(e)}, status_code=400)
            except HTTPException as e:
                response = JSONResponse(
                    {"error": str(e.detail)}, status_code=e.status_code, headers=e.headers
                )
            except RequestValidationError as e:
                fields = ", ".join(".".join(str(p) for p in err.get("loc", ())) for err in e.errors())
                response = JSONResponse({"error": f"invalid request: {fields}"}, status_code=400)
            except BarfillError as e:
                # Not the caller's fault (the database is down...): the client shows "unavailable".
                # The details (which may name the database) go to the log, not to the caller.
                log.warning("compat %s failed: %s", request.url.path, e)
                response = JSONResponse({"error": "service unavailable, try again"}, status_code=503)
            response.headers.update(shapes.CORS_HEADERS)
            return response

        return answer


router = APIRouter(prefix="/functions/v1", route_class=_CompatRoute)
AppDep = Annotated[App, Depends(get_app)]


def _scope(scope: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """``require(scope)``, except that with no keys on a loopback-only server any bearer passes.

    The original client always sends its anon key (``Authorization: Bearer``
    and ``apikey``); the contract says a compatible server accepts any bearer.
    Once keys exist, that key must be a barfill key holding ``scope``.
    """
    checked = require(scope)

    async def dependency(request: Request) -> None:
        auth = get_auth(request)
        if auth.loopback and not await run_in_threadpool(auth.keys_exist):
            return
        await checked(request)

    return dependency


Endpoint = Callable[..., Coroutine[Any, Any, Response]]


_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}},
    **{
        code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for code, text in (
            (400, "Bad input (named in the message)"),
            (401, "Missing or invalid API key (once keys exist)"),
            (403, "The API key lacks the scope"),
            (404, "Unknown symbol"),
            (413, "Request body too large"),
            (429, "Rate limit exceeded"),
            (503, "Database unavailable"),
        )
    },
}


def _function(path: str, scope: str, shown: Sequence[str] = ("POST",)) -> Callable[[Endpoint], Endpoint]:
    """Serve ``path`` for every method but OPTIONS, as the original functions did.

    The methods the client uses are in the OpenAPI document, with the status
    codes they answer (the body is read as the original read it, so it is not
    declared); the others are served the same way but left out of it.
    """

    def register(endpoint: Endpoint) -> Endpoint:
        deps = [Depends(_scope(scope))]
        for method in shown:  # one route per method: each gets its own OpenAPI operation id
            router.add_api_route(path, endpoint, methods=[method], dependencies=deps, responses=_RESPONSES)
        hidden = [m for m in _METHODS if m not in shown]
        router.add_api_route(path, endpoint, methods=hidden, dependencies=deps, include_in_schema=False)
        return endpoint

    return register


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object in the body; ``{}`` when there is none (a GET)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise CompatError(400, "Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise CompatError(400, "Request body must be a JSON object")
    return data


def _with_query(request: Request, body: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters overlaid by the body (the client repeats symbol/timeframe in both)."""
    return {**dict(request.query_params), **body}


def _known_symbol(app: App, raw: str | None) -> tuple[str, int, str]:
    """(ticker, id, asset type) of a stored symbol; 400 when missing, 404 when barfill never saw it."""
    if raw is None:
        raise CompatError(400, "Symbol is required")
    ticker = validate_ticker(raw)
    with app.db.read() as conn:
        found = reads.symbol_row(conn, ticker)
    if found is None:
        raise CompatError(404, f"Symbol {ticker} not found")
    sid, asset_class = found
    return ticker, sid, _ASSET_TYPES.get(asset_class, asset_class)


# -- ensure-coverage ------------------------------------------------------------------------------


@_function("/ensure-coverage", "write")
async def ensure_coverage(request: Request, app: AppDep) -> JSONResponse:
    """Record the desired window, queue its gaps, answer at once with coverage and progress."""
    data = await _body(request)
    return JSONResponse(await run_in_threadpool(_ensure_coverage, app, data))


def _ensure_coverage(app: App, data: Mapping[str, Any]) -> dict[str, Any]:
    raw_symbol, raw_tf = shapes.symbol_field(data), data.get("timeframe")
    if raw_symbol is None or raw_tf is None or raw_tf == "":
        raise CompatError(400, "Missing required parameters: symbol, timeframe")
    ticker = validate_ticker(raw_symbol)
    tf = shapes.parse_timeframe(raw_tf)
    window_days = shapes.int_field(data, "window_days", 7, lo=1, hi=MAX_WINDOW_DAYS)
    priority = shapes.int_field(data, "priority", 150, lo=-1000, hi=1000)
    result = ensure(app, [ticker], tf, days=window_days, priority=priority).results[0]
    progress = app.queue.progress([result.definition_id])[result.definition_id]
    with app.db.read() as conn:
        found = reads.symbol_row(conn, ticker)
        assert found is not None, "ensure stored the symbol"
        last_success = reads.last_coverage_update(conn, found[0], tf)
    body: dict[str, Any] = {
        "job_def_id": shapes.uuid_of(result.definition_id),
        "symbol": ticker,
        "timeframe": tf.value,
        "status": "coverage_complete" if result.has_coverage else "gaps_detected",
        "coverage_status": {
            "from_ts": iso(result.coverage_from),
            "to_ts": iso(result.coverage_to),
            "last_success_at": iso(last_success),
            "gaps_found": result.gaps,
        },
    }
    backfill = shapes.backfill_progress(
        total=progress.total,
        succeeded=progress.succeeded,
        running=progress.running,
        queued=progress.queued,
        failed=progress.failed,
        rows_written=progress.rows_written,
    )
    if backfill is not None:
        body["backfill_progress"] = backfill
    return body


# -- chart-data-v2 and chart ------------------------------------------------------------------------


@_function("/chart-data-v2", "read")
async def chart_data_v2(request: Request, app: AppDep) -> JSONResponse:
    """The v6 superset of chart-data-v2. The query string is ignored, as the original did."""
    data = await _body(request)
    body = await run_in_threadpool(_chart_v2, app, data, unified=False)
    return JSONResponse(body)


@_function("/chart", "read", shown=("GET", "POST"))
async def chart(request: Request, app: AppDep) -> JSONResponse:
    """The later unified function: one answer that decodes as both client models.

    The client sends chart-data-v2's body here (``ChartDataV2Response``) and,
    in later versions, chart-read's (``ChartResponse``): the answer is the
    chart-data-v2 superset plus chart-read's ``assetType``, ``bars``,
    ``supertrend_ai`` and ``refresh``.
    """
    data = _with_query(request, await _body(request))
    return JSONResponse(await run_in_threadpool(_chart_v2, app, data, unified=True))


def _chart_v2(app: App, data: Mapping[str, Any], *, unified: bool) -> dict[str, Any]:
    """chart-data-v2's v6 answer; ``unified`` adds chart-read's keys (the ``chart`` function)."""
    raw = shapes.symbol_field(data)
    if raw is None:
        raise CompatError(400, "Symbol is required")
    tf = shapes.parse_timeframe(data.get("timeframe"), "d1")
    days = shapes.int_field(data, "days", 60, lo=1, hi=shapes.DAYS_MAX, clamp=True)
    include_forecast = shapes.bool_field(data, "includeForecast", True)
    forecast_days = shapes.int_field(data, "forecastDays", 10, lo=0, hi=shapes.DAYS_MAX, clamp=True)
    forecast_steps = shapes.optional_int_field(data, "forecastSteps", lo=1, hi=10_000)
    shapes.bool_field(data, "includeMLData", True)  # validated; barfill has no ML data
    ticker, sid, asset_type = _known_symbol(app, raw)
    now = app.db.now()
    with app.db.read() as conn:
        bars = reads.newest_bars(conn, sid, tf, shapes.bar_cap(tf))
        final = reads.final_ts(conn, sid, tf, bars.ts[0], bars.ts[-1] + 1) if bars.ts else set()
        historical, intraday = shapes.split_layers(bars, tf, final, now=now)
        if tf is Timeframe.d1:
            # The client builds today's daily candle from the latest h1 bars.
            hours = reads.newest_bars(conn, sid, Timeframe.h1, shapes.D1_INTRADAY_H1_BARS)
            hours_final = (
                reads.final_ts(conn, sid, Timeframe.h1, hours.ts[0], hours.ts[-1] + 1) if hours.ts else set()
            )
            intraday = [
                shapes.bar(hours, i, final=t in hours_final, is_intraday=True) for i, t in enumerate(hours.ts)
            ]
        forecast: list[dict[str, Any]] = []
        if include_forecast:
            ahead = reads.oldest_bars(
                conn, sid, tf, shapes.FORECAST_LIMIT, after=int(now) + 1, layers=[Layer.forecast]
            )
            forecast = [shapes.bar(ahead, i, final=False, is_forecast=True) for i in range(len(ahead))]
    cal, t = app.calendar, int(now)
    stale = shapes.is_stale(
        bars.ts[-1] if bars.ts else None,
        tf,
        now=now,
        market_open=cal.session_at(t) is not None,
        last_close=cal.last_close_at_or_before(t),
    )
    refresh = (
        queue_side.refresh(app, ticker, sid, tf, [tf]) if stale else queue_side.not_attempted(ticker, tf)
    )
    body = {
        "symbol": ticker,
        "symbol_id": shapes.uuid_of(sid),
        "asset_type": asset_type,
        "timeframe": tf.value,
        "layers": {
            "historical": shapes.layer(historical),
            "intraday": shapes.layer(intraday),
            "forecast": shapes.layer(forecast, provider="ml_forecast"),
        },
        "metadata": {
            "total_bars": len(bars),
            "start_date": iso(now - days * shapes.DAY_S),
            "end_date": iso(now + forecast_days * shapes.DAY_S),
            "requested_days": days,
            "forecast_days": forecast_days,
            "forecast_steps": forecast_steps,
        },
        "futures": None,
        "dataQuality": shapes.data_quality(bars.ts, now=now),
        "mlSummary": None,
        "indicators": None,
        "superTrendAI": None,
    }
    if not unified:
        return body
    own = historical if tf is Timeframe.d1 else historical + intraday  # d1's intraday holds h1 bars
    return body | {
        "assetType": asset_type,
        "bars": [shapes.read_bar(b) for b in own],
        "supertrend_ai": None,
        "refresh": refresh,
    }


# -- chart-read -------------------------------------------------------------------------------------


@_function("/chart-read", "read", shown=("GET", "POST"))
async def chart_read(request: Request, app: AppDep) -> JSONResponse:
    """Stored bars in ``ChartResponse`` shape; with ``before``, one page of older bars.

    GET reads the query string, other methods the JSON body (the query string
    fills what the body leaves out).
    """
    body = {} if request.method == "GET" else await _body(request)
    data = _with_query(request, body)
    return JSONResponse(await run_in_threadpool(_chart_read, app, data))


def _chart_read(app: App, data: Mapping[str, Any]) -> dict[str, Any]:
    tf = shapes.parse_timeframe(data.get("timeframe"), "d1")
    default_days = 730 if tf in (Timeframe.d1, Timeframe.w1) else 60
    days = shapes.int_field(data, "days", default_days, lo=1, hi=shapes.DAYS_MAX, clamp=True)
    shapes.bool_field(data, "includeMLData", True)  # validated; barfill has no ML data
    before = shapes.before_field(data)
    page_size = shapes.int_field(
        data, "pageSize", shapes.PAGE_SIZE_DEFAULT, lo=1, hi=shapes.PAGE_SIZE_MAX, clamp=True
    )
    ticker, sid, asset_type = _known_symbol(app, shapes.symbol_field(data))
    head = {"symbol": ticker, "assetType": asset_type, "timeframe": tf.value}
    if before is not None:
        with app.db.read() as conn:
            page = reads.newest_bars(conn, sid, tf, page_size, before=before)
            final = reads.final_ts(conn, sid, tf, page.ts[0], page.ts[-1] + 1) if page.ts else set()
        return {
            **head,
            "bars": [shapes.read_bar(shapes.bar(page, i, final=t in final)) for i, t in enumerate(page.ts)],
            "mlSummary": None,
            "indicators": None,
            "supertrend_ai": None,
            "dataQuality": None,
            "refresh": None,
        }
    now = app.db.now()
    cap = shapes.bar_cap(tf)
    with app.db.read() as conn:
        bars = reads.newest_bars(conn, sid, tf, cap, after=int(now) - days * shapes.DAY_S)
        final = reads.final_ts(conn, sid, tf, bars.ts[0], bars.ts[-1] + 1) if bars.ts else set()
    refresh = queue_side.refresh(app, ticker, sid, tf, queue_side.REFRESH_TIMEFRAMES)
    return {
        **head,
        "bars": [shapes.read_bar(shapes.bar(bars, i, final=t in final)) for i, t in enumerate(bars.ts)],
        "mlSummary": None,
        "indicators": None,
        "supertrend_ai": None,
        "metadata": {"total_bars": len(bars), "requested_days": days, "max_bars": cap},
        "dataQuality": shapes.data_quality(bars.ts, now=now),
        "refresh": refresh,
    }


# -- orchestrator ---------------------------------------------------------------------------------

_ACTION_SCOPES = {"tick": "admin", "status": "read", "retry_failed": "write"}


@_function("/orchestrator", "read", shown=("GET", "POST"))
async def orchestrator(request: Request, app: AppDep) -> JSONResponse:
    """``?action=tick`` (admin, the default), ``status`` (read) or ``retry_failed`` (write)."""
    action = request.query_params.get("action") or "tick"
    scope = _ACTION_SCOPES.get(action)
    if scope is None:
        raise CompatError(400, "Invalid action")
    await _scope(scope)(request)
    work = {"tick": queue_side.tick, "status": queue_side.status, "retry_failed": queue_side.retry_failed}[
        action
    ]
    return JSONResponse(await run_in_threadpool(work, app))


# -- CORS preflight and unknown functions -----------------------------------------------------------


@router.options("/{function:path}", include_in_schema=False)
async def preflight(function: str) -> PlainTextResponse:
    """``OPTIONS`` on any function: 200 ``ok`` with the CORS headers, as the original answered."""
    return PlainTextResponse("ok")


@router.api_route("/{function:path}", methods=_METHODS, include_in_schema=False)
async def unknown_function(function: str) -> JSONResponse:
    """404 for anything else, e.g. ``fetch-bars``: barfill's workers fetch queued slices themselves."""
    hint = " (barfill's workers fetch queued slices themselves)" if function.startswith("fetch-bars") else ""
    raise CompatError(404, f"Function not found: {function}{hint}")
