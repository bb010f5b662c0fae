"""Progress of a hydration job: slice counts, bars written, percent and ETA.

A *job* is what one ``ensure`` call started: its definitions and the database
time it was made. It counts the slices created since then plus any still open
from earlier rounds, so a repeated ``ensure`` reports on the work in flight,
not on last month's finished slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from barfill.store.db import Database, db_now
from barfill.store.schema import job_runs


@dataclass(frozen=True)
class JobRef:
    """A handle on one ensure call's work (``since`` is database-clock Unix seconds)."""

    definition_ids: tuple[int, ...]
    since: float


@dataclass(frozen=True)
class Progress:
    total_slices: int
    completed_slices: int
    running_slices: int
    queued_slices: int
    failed_slices: int
    cancelled_slices: int
    progress_percent: float
    bars_written: int
    eta_seconds: float | None

    @property
    def done(self) -> bool:
        """Nothing queued or running: every slice succeeded, failed or was cancelled."""
        return self.queued_slices == 0 and self.running_slices == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_progress(db: Database, job: JobRef) -> Progress:
    if not job.definition_ids:
        return Progress(0, 0, 0, 0, 0, 0, 100.0, 0, 0.0)
    t = job_runs
    in_job = sa.and_(
        t.c.definition_id.in_(job.definition_ids),
        sa.or_(t.c.created_at >= job.since, t.c.status.in_(("queued", "running"))),
    )
    with db.read() as conn:
        rows = conn.execute(
            sa.select(t.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.rows_written), 0))
            .where(in_job)
            .group_by(t.c.status)
        ).all()
        now = float(conn.execute(sa.select(db_now(conn))).scalar_one())
    counts = {status: int(n) for status, n, _ in rows}
    bars = sum(int(b) for _, _, b in rows)
    return _summarize(counts, bars, elapsed_s=max(now - job.since, 1e-3))


def _summarize(counts: dict[str, int], bars: int, *, elapsed_s: float) -> Progress:
    total = sum(counts.values())
    done = counts.get("succeeded", 0)
    finished = done + counts.get("failed", 0) + counts.get("cancelled", 0)
    remaining = counts.get("queued", 0) + counts.get("running", 0)
    percent = 100.0 if total == 0 else round(100.0 * done / total, 1)
    eta: float | None
    if remaining == 0:
        eta = 0.0
    elif finished == 0:
        eta = None
    else:
        eta = round(remaining * elapsed_s / finished, 1)
    return Progress(
        total_slices=total,
        completed_slices=done,
        running_slices=counts.get("running", 0),
        queued_slices=counts.get("queued", 0),
        failed_slices=counts.get("failed", 0),
        cancelled_slices=counts.get("cancelled", 0),
        progress_percent=percent,
        bars_written=bars,
        eta_seconds=eta,
    )


def merge(progresses: Sequence[Progress]) -> Progress:
    """Sum several jobs' progress (the CLI's multi-symbol ensure)."""
    if not progresses:
        return Progress(0, 0, 0, 0, 0, 0, 100.0, 0, 0.0)
    total = sum(p.total_slices for p in progresses)
    done = sum(p.completed_slices for p in progresses)
    etas = [p.eta_seconds for p in progresses]
    return Progress(
        total_slices=total,
        completed_slices=done,
        running_slices=sum(p.running_slices for p in progresses),
        queued_slices=sum(p.queued_slices for p in progresses),
        failed_slices=sum(p.failed_slices for p in progresses),
        cancelled_slices=sum(p.cancelled_slices for p in progresses),
        progress_percent=100.0 if total == 0 else round(100.0 * done / total, 1),
        bars_written=sum(p.bars_written for p in progresses),
        eta_seconds=None if any(e is None for e in etas) else max(e or 0.0 for e in etas),
    )
