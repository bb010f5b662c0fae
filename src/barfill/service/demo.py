"""``make demo``: hydrate 20 symbols offline and show it happen.

SQLite + the synthetic provider (no keys, no network): h1 for 730 days and
m15 for 60 days, with h1 and h4 also resampled from m15, a live progress bar,
then a summary: bars per symbol and timeframe, requests issued vs the ideal,
time taken, and a second tick proving nothing is left to fetch.
"""

from __future__ import annotations

import asyncio
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
            asyncio.run(_serve(app, console, host, port))
        return summary
    finally:
        app.close()


async def _serve(app: App, console: Console, host: str, port: int) -> None:
    """Serve the API and the web page (scheduler and worker included) until Ctrl-C."""
    from barfill.server.run import serve_until_signalled

    def announce(base: str) -> None:
        console.print(
            f"[bold]open {base}/chart?symbol=AAPL&timeframe=h1[/bold] "
            f"(dashboard: {base}/dashboard) — Ctrl-C to stop"
        )

    await serve_until_signalled(app, host=host, port=port, announce=announce)
