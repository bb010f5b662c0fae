"""An idle worker claims work another process commits when it is committed, not at its next poll."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.db import Database
from tests.e2e.helpers import make_app

pytestmark = pytest.mark.timeout(120)
NEVER_S = 3600.0  # the worker's poll: it would not look again before the test's timeout
SETTLE_S = 60.0  # how long the test waits for the slice (far below NEVER_S)


async def test_an_idle_worker_claims_what_another_process_enqueues(db: Database) -> None:
    cal = get_calendar()
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=cal)})
    other = make_app(db, {"synthetic": SyntheticProvider(calendar=cal)})  # its own engine: `barfill ensure`
    claims: list[int] = []
    claim = app.queue.claim

    def counted(*args: Any, **kwargs: Any) -> Any:
        got = claim(*args, **kwargs)
        claims.append(len(got))
        return got

    app.queue.claim = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    worker = Worker(app, poll_s=NEVER_S)
    task = asyncio.create_task(worker.run(stop))
    try:
        while not claims:  # the worker looks once, finds the queue empty and goes idle
            await asyncio.sleep(0.05)
        assert claims == [0]
        report = await asyncio.to_thread(ensure, other, ["AAPL"], "d1", start="2025-01-02", end="2025-03-31")
        assert report.results[0].slices_queued == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while app.queue.counts().get("succeeded", 0) == 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert app.queue.counts().get("succeeded", 0) == 1
        # The commit is visible before the worker's thread returns and counts it: stop, then read.
        stop.set()
        await task
        assert worker.stats.succeeded == 1
    finally:
        stop.set()
        await task
        other.close()
        app.close()
