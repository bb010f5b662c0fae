"""Process-wide Prometheus metrics (the official client library), recorded where things happen.

The worker counts provider requests, errors (429s included) and rate-limit
waits; the server times API requests and scheduler ticks. Queue depth and
throughput are read from the database when ``/metrics`` is scraped (see
:mod:`barfill.server.metrics`), so every process reports the shared queue.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PROVIDER_REQUESTS = Counter(
    "barfill_provider_requests_total", "Provider fetch requests sent by this process.", ["provider"]
)
PROVIDER_ERRORS = Counter(
    "barfill_provider_errors_total",
    "Provider fetch failures by error code (http_429 = rate limited).",
    ["provider", "code"],
)
RATE_LIMIT_WAIT = Histogram(
    "barfill_rate_limit_wait_seconds",
    "Time a fetch waited for its provider's shared rate-limit slot.",
    ["provider"],
    buckets=(0.0, 0.01, 0.1, 0.5, 1, 2, 5, 15, 60, 300),
)
SLICES_DONE = Counter("barfill_worker_slices_total", "Slices completed by this process's worker.")
BARS_WRITTEN = Counter("barfill_worker_bars_total", "Bars written by this process's worker.")
TICK_SECONDS = Histogram(
    "barfill_tick_duration_seconds",
    "Orchestrator tick duration.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_SECONDS = Histogram(
    "barfill_http_request_duration_seconds",
    "HTTP API latency by route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
