"""The web page: ``/`` (index), ``/chart``, ``/dashboard``, their static files, and the JSON only they need.

The chart itself talks to ``/v1`` (ensure, bars, events, symbols). The
dashboard's aggregate views (per-minute throughput, coverage map, provider
panel, failures with the ids to retry) live here (enable/disable uses
``PATCH /v1/definitions/{id}``) under ``/web/api`` because
nothing but the page needs them. The HTML and scripts are plain files under
``barfill/web/static`` (served by :func:`static_file`); the chart library
is copied there from npm by ``make web`` (``static/vendor``, git-ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field

from barfill.bootstrap import App
from barfill.server.deps import ERROR_RESPONSES, get_app, require
from barfill.service import dashboard

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
VENDOR_CHARTS = STATIC / "vendor" / "lightweight-charts.mjs"

router = APIRouter(tags=["web"], responses=ERROR_RESPONSES)
AppDep = Annotated[App, Depends(get_app)]


_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


@router.get("/web/static/{name:path}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    """A file of ``barfill/web/static`` (never outside it); scripts as ES modules."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file() or path.suffix not in _TYPES:
        hint = " (run `make web` to install the chart library)" if name.startswith("vendor/") else ""
        raise HTTPException(404, detail=f"no such file: {name}{hint}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


def _page(name: str) -> FileResponse:
    # The HTML never holds data or secrets; every fetch it makes is authorized on its own.
    return FileResponse(STATIC / name, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
def index() -> HTMLResponse:
    """A small index: where the chart and the dashboard are."""
    missing = (
        ""
        if VENDOR_CHARTS.is_file()
        else ("<p class='error'>The chart library is not installed: run <code>make web</code>.</p>")
    )
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>barfill</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='stylesheet' href='/web/static/style.css'></head><body class='index'>"
        "<main><h1>barfill</h1>"
        f"{missing}"
        "<ul><li><a href='/chart?symbol=AAPL&amp;timeframe=h1'>Chart</a>"
        " — candles that fill in as data lands</li>"
        "<li><a href='/dashboard'>Dashboard</a> — queue, throughput, failures, providers, coverage</li>"
        "<li><a href='/docs'>API</a> — OpenAPI</li></ul></main></body></html>"
    )


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    """No icon: an empty answer instead of a 404 in every browser console."""
    return Response(status_code=204)


@router.get("/chart", include_in_schema=False)
def chart_page() -> FileResponse:
    return _page("chart.html")


@router.get("/dashboard", include_in_schema=False)
def dashboard_page() -> FileResponse:
    return _page("dashboard.html")


@router.get("/web/api/overview", dependencies=[Depends(require("read"))])
def overview(app: AppDep) -> dict[str, Any]:
    """Queue counts, throughput per minute over the last hour, definitions, failures, providers."""
    return dashboard.overview(app)


@router.get("/web/api/coverage-map", dependencies=[Depends(require("read"))])
def coverage_map(
    app: AppDep,
    timeframe: Annotated[str, Query(max_length=8)] = "h1",
    days: Annotated[int, Query(ge=1, le=dashboard.MAX_MAP_DAYS)] = 30,
) -> dict[str, Any]:
    """Symbols × days, each cell covered / provisional / gap / unfillable / closed / outside."""
    return dashboard.coverage_map(app, timeframe, days)


class RetryBody(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(min_length=1, max_length=10_000)


@router.post("/web/api/retry", dependencies=[Depends(require("write"))])
def retry(app: AppDep, body: RetryBody) -> dict[str, int]:
    """Re-queue the given failed slices (the dashboard's "retry" button on one error group)."""
    return {"requeued": app.queue.retry_failed(body.ids)}
