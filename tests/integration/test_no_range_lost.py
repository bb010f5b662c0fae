"""No range is lost for good, as a user hits it: failed and cancelled slices come back, counts are true.

An explicit ``ensure`` revives the failed and cancelled slices of its window
at once and counts them; the scheduler's tick revives a failed slice only
after its cool-down and never a cancelled one; ``jobs retry --status
cancelled`` brings cancelled slices back. The queue reads the database
clock, so the tests move ``finished_at`` back instead of waiting.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.cli import main
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.service.orchestrator import tick
from barfill.service.worker import Worker
from barfill.store.db import Database
from barfill.store.schema import job_runs
from tests.e2e.helpers import make_app

CAL = get_calendar()
START, END = "2024-01-02", "2024-03-01"
COOLDOWN = 600.0


@pytest.fixture
def app(db: Database) -> Iterator[App]:
    # A small page: the window is several slices.
    synthetic = SyntheticProvider(calendar=CAL, page_limit=100)
    built = make_app(
        db, {"synthetic": synthetic}, failed_cooldown_s=COOLDOWN, failed_cooldown_max_s=4 * COOLDOWN
    )
    yield built
    built.close()


def _ensure(app: App) -> tuple[int, int]:
    (result,) = ensure(app, ["AAPL"], "h1", start=START, end=END).results
    return result.slices_queued, result.slices_pending


def _fail_everything(app: App) -> int:
    """What a provider that refuses the range does: every claimed slice fails for good."""
    claimed = app.queue.claim("w", 1_000, 30)
    for c in claimed:
        app.queue.fail(c, "not_supported", "polygon: range is live", retryable=False)
    return len(claimed)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code in (0, None)
    return capsys.readouterr().out


def _ended_ago(app: App, seconds: float) -> None:
    with app.db.write() as conn:
        conn.execute(
            sa.update(job_runs)
            .where(job_runs.c.status.in_(("failed", "cancelled")))
            .values(finished_at=app.db.now() - seconds)
        )


def test_a_failed_range_comes_back_on_the_next_ensure_and_is_counted(app: App) -> None:
    queued, pending = _ensure(app)
    assert queued > 1 and pending == 0
    assert _fail_everything(app) == queued
    # The second ensure revives every failed slice, and says so.
    assert _ensure(app) == (queued, 0)
    assert app.queue.counts()["queued"] == queued and app.queue.counts()["failed"] == 0
    # A third identical ensure queues nothing and reports the work as pending.
    assert _ensure(app) == (0, queued)
    assert app.queue.counts()["queued"] == queued
    # And the range is really fetched.
    stats = asyncio.run(Worker(app, poll_s=0.05).run(drain=True))
    assert stats.succeeded == queued and stats.failed == 0
    (done,) = ensure(app, ["AAPL"], "h1", start=START, end=END).results
    assert done.has_coverage and (done.slices_queued, done.slices_pending) == (0, 0)


def test_the_tick_brings_a_failed_range_back_only_after_the_cool_down(app: App) -> None:
    queued, _ = _ensure(app)
    assert _fail_everything(app) == queued
    held = tick(app)
    assert (held.slices_created, held.slices_revived) == (0, 0)
    assert app.queue.counts()["failed"] == queued
    _ended_ago(app, COOLDOWN + 30)
    revived = tick(app)
    assert (revived.slices_created, revived.slices_revived) == (queued, queued)
    assert app.queue.counts()["queued"] == queued
    # Failing again doubles the cool-down.
    assert _fail_everything(app) == queued
    _ended_ago(app, COOLDOWN + 30)
    assert tick(app).slices_created == 0
    _ended_ago(app, 2 * COOLDOWN + 30)
    assert tick(app).slices_revived == queued
    with app.db.read() as conn:
        assert set(conn.execute(sa.select(job_runs.c.revivals)).scalars()) == {2}


def test_a_cancelled_range_comes_back_only_on_ensure_or_jobs_retry(
    app: App,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    queued, _ = _ensure(app)
    assert app.queue.cancel() == queued
    _ended_ago(app, 100 * COOLDOWN)
    assert tick(app).slices_created == 0
    assert app.queue.counts()["cancelled"] == queued
    assert _ensure(app) == (queued, 0)
    assert app.queue.counts()["queued"] == queued
    # The operator's way: `barfill jobs retry --status cancelled`.
    assert app.queue.cancel() == queued
    for key in [k for k in os.environ if k.startswith("BARFILL_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BARFILL_DATABASE_URL", db.url)
    assert "re-queued 0 slice(s)" in _cli(capsys, "jobs", "retry")  # failed only, the default
    assert f"re-queued {queued} slice(s)" in _cli(capsys, "jobs", "retry", "--status", "cancelled")
    assert app.queue.counts()["queued"] == queued and app.queue.counts()["cancelled"] == 0
