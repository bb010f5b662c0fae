"""``GET /metrics`` (Prometheus text format) and ``GET /healthz``.

Process counters come from :mod:`barfill.telemetry`; queue depth by status
and the last five minutes' slices/s and bars/s are read from the database at
scrape time, so any API process reports the queue all workers share.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from barfill import telemetry
from barfill.bootstrap import App
from barfill.server.deps import ERROR_RESPONSES, get_app, require
from barfill.service.orchestrator import TickResult

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES)
_WINDOW_S = 300.0


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    telemetry.API_SECONDS.labels(method, route, str(status)).observe(seconds)


def observe_tick(result: TickResult) -> None:
    telemetry.TICK_SECONDS.observe(result.duration_ms / 1000.0)


class _QueueCollector(Collector):
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("barfill_queue_slices", "Slices in the queue by status.", labels=["status"])
        for status, n in self.app.queue.counts().items():
            depth.add_metric([status], n)
        yield depth
        slices, bars = self.app.queue.throughput(_WINDOW_S)
        yield GaugeMetricFamily(
            "barfill_slices_per_second",
            "Slices completed per second, last 5 minutes.",
            value=slices / _WINDOW_S,
        )
        yield GaugeMetricFamily(
            "barfill_bars_per_second", "Bars written per second, last 5 minutes.", value=bars / _WINDOW_S
        )


def render(app: App) -> bytes:
    """Process metrics followed by the shared queue's gauges."""
    shared = CollectorRegistry(auto_describe=False)
    shared.register(_QueueCollector(app))
    return generate_latest(REGISTRY) + generate_latest(shared)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require("read"))],
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def get_metrics(app: Annotated[App, Depends(get_app)]) -> Response:
    """Prometheus metrics."""
    body = await run_in_threadpool(render, app)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/healthz")
async def healthz(app: Annotated[App, Depends(get_app)]) -> JSONResponse:
    """``{"ok": true}`` when the database answers (503 otherwise). Needs no key."""
    try:
        now = await run_in_threadpool(app.db.now)
    except Exception as e:  # any failure means unhealthy; say why without a traceback
        return JSONResponse({"ok": False, "error": type(e).__name__}, status_code=503)
    return JSONResponse({"ok": True, "db_time": now})
