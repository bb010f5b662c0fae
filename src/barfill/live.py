"""A live progress bar over a hydration job, optionally with a worker in the same process."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from barfill.bootstrap import App
from barfill.service.progress import JobRef, job_progress
from barfill.service.progress import Progress as JobProgress
from barfill.service.worker import Worker, WorkerStats
from barfill.store.changes import Changes

# Progress is re-read when the database changed (see :class:`Changes`), and at least this often.
REFRESH_S = 0.5


def on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set ``stop``: workers stop claiming and finish in-flight slices."""
    if sys.platform == "win32":  # no loop signal handlers there; Ctrl-C still interrupts
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def watch(
    app: App,
    job: JobRef,
    console: Console,
    *,
    work: bool = True,
    title: str = "Hydrating",
    worker: Worker | None = None,
) -> tuple[JobProgress, WorkerStats | None]:
    """Show percent, bars, bars/s and ETA until the job is done (or Ctrl-C).

    Progress is read again soon after each commit to the database (by any
    process), so the job's end is seen within milliseconds, not at a poll.
    """
    stop = asyncio.Event()
    on_signals(stop)
    w = worker or (Worker(app) if work else None)
    task = asyncio.create_task(w.run(stop)) if w is not None else None
    t0 = time.monotonic()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[bars]:>12,} bars"),
        TextColumn("{task.fields[rate]:>10} bars/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    changes = Changes(app.db)
    try:
        with Progress(*columns, console=console) as bar:
            tid = bar.add_task(title, total=100, bars=0, rate="-")
            while True:
                p = await asyncio.to_thread(job_progress, app.db, job)
                rate = p.bars_written / max(time.monotonic() - t0, 1e-3)
                bar.update(tid, completed=p.progress_percent, bars=p.bars_written, rate=f"{rate:,.0f}")
                if p.done or stop.is_set() or (task is not None and task.done()):
                    break
                # The job ends with a commit, here or in another process: look again right after one.
                await changes.wait(REFRESH_S)
    finally:
        await changes.aclose()
    stop.set()
    stats = await task if task is not None else None
    return p, stats
