"""Process-wide Prometheus metrics (the official client library), recorded where things happen.

The worker counts provider requests, errors (429s included) and rate-limit
waits; the server times API requests and scheduler ticks. Queue depth and
throughput are read from the database when ``/metrics`` is scraped (see
:mod:`barfill.server.metrics`), so every process reports the shared queue.

Work done under :func:`muted` records nothing: the server's start-up
rehearsal (:mod:`barfill.server.warmup`) runs the real request and worker
code, but none of it happened as far as ``/metrics`` is concerned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from prometheus_client import Counter, Histogram

_MUTED: ContextVar[bool] = ContextVar("barfill_telemetry_muted", default=False)


class Gated:
    """A metric (or one labelled series) that records nothing in a :func:`muted` context.

    ``labels`` creates no series while muted: a rehearsal's provider name never
    shows up in ``/metrics``, not even at zero.
    """

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric

    def labels(self, *values: str) -> Gated:
        if _MUTED.get():
            return _SILENT
        return Gated(self._metric.labels(*values))

    def inc(self, amount: float = 1) -> None:
        if not _MUTED.get():
            self._metric.inc(amount)  # type: ignore[union-attr]

    def observe(self, amount: float) -> None:
        if not _MUTED.get():
            self._metric.observe(amount)  # type: ignore[union-attr]


class _Silent(Gated):
    def __init__(self) -> None:
        pass

    def labels(self, *values: str) -> Gated:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_SILENT = _Silent()


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Record no metric from this context (threads and tasks started in it inherit it)."""
    token = _MUTED.set(True)
    try:
        yield
    finally:
        _MUTED.reset(token)


PROVIDER_REQUESTS = Gated(
    Counter("barfill_provider_requests_total", "Provider fetch requests sent by this process.", ["provider"])
)
PROVIDER_ERRORS = Gated(
    Counter(
        "barfill_provider_errors_total",
        "Provider fetch failures by error code (http_429 = rate limited).",
        ["provider", "code"],
    )
)
RATE_LIMIT_WAIT = Gated(
    Histogram(
        "barfill_rate_limit_wait_seconds",
        "Time a fetch waited for its provider's shared rate-limit slot.",
        ["provider"],
        buckets=(0.0, 0.01, 0.1, 0.5, 1, 2, 5, 15, 60, 300),
    )
)
SLICES_DONE = Gated(Counter("barfill_worker_slices_total", "Slices completed by this process's worker."))
BARS_WRITTEN = Gated(Counter("barfill_worker_bars_total", "Bars written by this process's worker."))
TICK_SECONDS = Gated(
    Histogram(
        "barfill_tick_duration_seconds",
        "Orchestrator tick duration.",
        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
)
API_SECONDS = Gated(
    Histogram(
        "barfill_http_request_duration_seconds",
        "HTTP API latency by route template and status.",
        ["method", "route", "status"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )
)
