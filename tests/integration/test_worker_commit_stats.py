"""A worker counts the time its commits take, and their thread's CPU time (the single writer's load)."""

from __future__ import annotations

import pytest

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.db import Database
from tests.e2e.helpers import make_app

pytestmark = pytest.mark.timeout(120)


async def test_commits_are_timed_and_nothing_else_is(db: Database) -> None:
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    try:
        idle = await Worker(app).run(drain=True)  # nothing queued: nothing committed
        assert (idle.commit_s, idle.commit_cpu_s) == (0.0, 0.0)
        report = ensure(app, ["AAPL", "MSFT"], "m15", start="2025-01-02", end="2025-03-31")
        assert sum(r.slices_queued for r in report.results) >= 2
        stats = await Worker(app).run(drain=True)
        assert stats.succeeded >= 2 and stats.bars_written > 0
        assert stats.commit_s > 0.0 and stats.commit_cpu_s > 0.0
    finally:
        app.close()
