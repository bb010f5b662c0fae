"""``make demo``: hydrate 20 symbols offline and show it happen.

SQLite + the synthetic provider (no keys, no network): h1 for 730 days and
m15 for 60 days, with h1 and h4 also resampled from m15, a live progress bar,
then a summary: bars per symbol and timeframe, requests issued vs the ideal,
time taken, and a second tick proving nothing is left to fetch.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from barfill.bootstrap import App, build
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.domain.planner import estimate_units
from barfill.domain.resample import touched_buckets
from barfill.live import watch
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import EnsureReport, ensure
from barfill.service.orchestrator import tick
from barfill.service.progress import JobRef
from barfill.service.worker import Worker
from barfill.store import migrate, reports

_SYMBOLS = "AAPL MSFT NVDA GOOGL TSLA AMD META NFLX ADBE AMZN CRM CSCO INTC ORCL QCOM TXN AVGO MU AMAT LRCX"
DEMO_SYMBOLS = _SYMBOLS.split()
DEMO_PLAN = (("h1", 730), ("m15", 60))
DEFAULT_URL = "sqlite:///data/demo.db"


@dataclass(frozen=True)
class DemoSummary:
    seconds: float
    requests: int
    ideal_requests: int
    bars: int
    slices_failed: int
    second_tick_slices: int


def ideal_requests(app: App, reports_: list[EnsureReport]) -> int:
    """The fewest requests that could fetch every gap: total units ÷ page limit, per timeframe.

    A multi-symbol provider can put several symbols' slices in one request, so
    the bound pools all symbols of a timeframe.
    """
    caps = app.providers["synthetic"].capabilities
    units: dict[str, int] = defaultdict(int)
    for report in reports_:
        for r in report.results:
            cal = get_calendar(app.settings.calendar)
            for g in r.gap_spans:
                lo, hi = touched_buckets(r.timeframe, g.start, g.end, cal)  # aligned to bars
                units[r.timeframe.value] += estimate_units(r.timeframe, caps, cal, lo, hi)
    return sum(math.ceil(u / caps.page_limit) for u in units.values())


def _fresh_sqlite(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    for suffix in ("", "-wal", "-shm"):
        Path(parsed.database + suffix).unlink(missing_ok=True)


def run_demo(
    console: Console,
    *,
    database_url: str | None = None,
    keep: bool = False,
    serve: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> DemoSummary:
    """Hydrate the demo set, print the summary, then (``serve``) serve the web page until Ctrl-C."""
    url = database_url or DEFAULT_URL
    if not keep:
        _fresh_sqlite(url)
    settings = load_settings(database_url=url, derivations=["m15->h1", "m15->h4"], worker_concurrency=4)
    synthetic = SyntheticProvider(calendar=get_calendar(settings.calendar))
    app = build(settings, providers={"synthetic": synthetic})
    try:
        summary = _run(app, synthetic, console)
        if serve:
            _serve(app, console, host, port)
        return summary
    finally:
        app.close()


def _run(app: App, synthetic: SyntheticProvider, console: Console) -> DemoSummary:
    shown = app.db.engine.url.render_as_string(hide_password=True)
    console.print(f"[bold]barfill demo[/bold] — {shown}, synthetic provider (offline, no keys)")
    migrate.upgrade(app.db)
    t0 = time.perf_counter()
    answers = [ensure(app, DEMO_SYMBOLS, tf, days=days) for tf, days in DEMO_PLAN]
    for (tf, days), rep in zip(DEMO_PLAN, answers, strict=True):
        missing = sum(r.bars_missing for r in rep.results)
        queued = sum(r.slices_queued for r in rep.results)
        console.print(
            f"ensure {len(DEMO_SYMBOLS)} symbols {tf} {days}d: answered at once — "
            f"{missing:,} bars missing, {queued} slice(s) queued"
        )
    job = JobRef(
        tuple(i for rep in answers for i in rep.job.definition_ids), min(rep.job.since for rep in answers)
    )
    worker = Worker(app, concurrency=4)
    progress, _ = app.run(watch(app, job, console, worker=worker))
    seconds = time.perf_counter() - t0
    again = tick(app)
    ideal = ideal_requests(app, answers)
    with app.db.read() as conn:
        counts = reports.bar_counts(conn)
    _print_counts(console, counts)
    total = sum(n for *_, n in counts)
    console.print(
        f"requests issued: {synthetic.requests} (ideal {ideal}, "
        f"ratio {synthetic.requests / max(ideal, 1):.2f}); "
        f"bars stored: {total:,}; failed slices: {progress.failed_slices}; time: {seconds:.1f} s"
    )
    console.print(
        f"second tick: {again.scanned} definitions scanned, {again.slices_created} new slice(s) "
        f"in {again.duration_ms:.0f} ms — coverage is complete"
        if again.slices_created == 0
        else f"second tick queued {again.slices_created} slice(s): coverage incomplete"
    )
    return DemoSummary(
        seconds, synthetic.requests, ideal, total, progress.failed_slices, again.slices_created
    )


def _print_counts(console: Console, counts: list[tuple[str, str, str, int]]) -> None:
    columns = sorted({(tf, p) for _, tf, p, _ in counts}, key=lambda x: (x[0], x[1]))
    table = Table("symbol", *[f"{tf} {p}" for tf, p in columns], title="bars stored")
    by_symbol: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for sym, tf, p, n in counts:
        by_symbol[sym][(tf, p)] = n
    for sym in DEMO_SYMBOLS:
        table.add_row(sym, *[f"{by_symbol[sym].get(c, 0):,}" for c in columns])
    console.print(table)


def _serve(app: App, console: Console, host: str, port: int) -> None:
    """Serve the API and the web page (scheduler and worker included) until Ctrl-C."""
    from barfill.server.run import serve_forever

    def announce(base: str) -> None:
        console.print(
            f"[bold]open {base}/chart?symbol=AAPL&timeframe=h1[/bold] "
            f"(dashboard: {base}/dashboard) — serving until Ctrl-C"
        )

    serve_forever(app, host=host, port=port, announce=announce)
