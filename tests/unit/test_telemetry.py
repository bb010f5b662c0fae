"""telemetry.muted: work done in a muted context counts in no metric, and creates no series."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from barfill import telemetry


def _metrics() -> tuple[CollectorRegistry, telemetry.Gated, telemetry.Gated]:
    registry = CollectorRegistry()
    plain = telemetry.Gated(Counter("t_total", "t", registry=registry))
    labelled = telemetry.Gated(Histogram("t_seconds", "t", ["provider"], registry=registry))
    return registry, plain, labelled


def test_muted_work_records_nothing_and_creates_no_series() -> None:
    registry, plain, labelled = _metrics()
    with telemetry.muted():
        plain.inc(5)
        labelled.labels("rehearsal").observe(1.0)
    assert registry.get_sample_value("t_total") == 0.0
    assert registry.get_sample_value("t_seconds_count", {"provider": "rehearsal"}) is None
    plain.inc(2)
    labelled.labels("polygon").observe(0.5)
    assert registry.get_sample_value("t_total") == 2.0
    assert registry.get_sample_value("t_seconds_count", {"provider": "polygon"}) == 1.0


def test_muting_follows_the_context_into_threads_and_tasks_and_ends_with_it() -> None:
    registry, plain, _ = _metrics()

    async def work() -> None:
        plain.inc()  # a task started in the muted context
        await asyncio.to_thread(plain.inc)  # a worker thread: the context is copied

    with telemetry.muted():
        asyncio.run(work())
    assert registry.get_sample_value("t_total") == 0.0
    asyncio.run(work())  # outside: both count
    assert registry.get_sample_value("t_total") == 2.0
