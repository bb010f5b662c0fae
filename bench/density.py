"""Planner density: Polygon requests for a regular-hours-only symbol, against the ideal.

Polygon's ``limit`` counts the minute aggregates an answer reads, pre/post-market
included, so the planner's model assumes 960 a session. A symbol that trades only
regular hours has ~390: planned on the model it costs ~2.5x the requests it needs.
barfill learns the real density from ``queryCount`` and sizes later slices to it.

Against a local Polygon-wire server that caps the minutes it reads at ``limit`` and
reports them (``tests/integration/providers/servers.py: BaseLimitPolygonWire``),
SQLite, one symbol trading regular hours only, m15 (the base is minutes):

1. two years (2024-10-01 .. 2026-10-02) with nothing learned: planned on the model;
   the answers teach the density;
2. the two years before (2022-09-26 .. 2024-09-30), planned on the learned density.

Each figure is requests seen at the server ÷ the ideal ``ceil(real minute aggregates
in the window ÷ 50,000)``, computed from the server's own data; the target for (2) is
<= 1.10. Pages cut short at the limit are counted at the server (target 0).
"""

from __future__ import annotations

import math

from barfill.bootstrap import build
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from bench.common import Result, scratch_database
from tests.integration.providers.servers import BaseLimitPolygonWire, FakeServer, Truth, ny

KEY = "bench-density-0123456789"
SYMBOL = "REGHRS"
CAP = 50_000
TARGET = 1.10
WINDOWS = [  # (label, start, end) as ensure takes them; the second is planned on what the first taught
    ("nothing learned (960 min/session model)", "2024-10-01", "2026-10-02"),
    ("density learned", "2022-09-26", "2024-09-30"),
]


def _ideal(wire: BaseLimitPolygonWire, start: str, end: str) -> int:
    y0, m0, d0 = map(int, start.split("-"))
    y1, m1, d1 = map(int, end.split("-"))
    minutes = wire.truth.labels(SYMBOL, Timeframe.m1, ny(y0, m0, d0), ny(y1, m1, d1) + 86_400, extended=False)
    return math.ceil(len(minutes) / CAP)


def run() -> list[Result]:
    wire = BaseLimitPolygonWire(Truth(get_calendar("XNYS")), KEY, regular_only=frozenset({SYMBOL}))
    results: list[Result] = []
    with FakeServer(wire, keep_alive=True) as server, scratch_database("sqlite") as db:
        settings = load_settings(
            database_url=db.url,
            polygon_api_key=KEY,
            polygon_base_url=server.url,
            polygon_rate_limit="1000/1",
            historical_providers=["polygon"],
        )
        app = build(settings, providers=None)
        try:
            for label, start, end in WINDOWS:
                seen, cut = len(server.seen), wire.truncated
                ensure(app, [SYMBOL], "m15", start=start, end=end, provider="polygon")
                app.run(Worker(app, concurrency=2, poll_s=0.05).run(drain=True))
                requests = len(server.seen) - seen
                ideal = _ideal(wire, start, end)
                learned = label == "density learned"
                results.append(
                    Result(
                        "density",
                        f"polygon m15 {start}..{end}, regular-hours symbol, {label}: requests vs ideal",
                        float(requests),
                        "requests",
                        float(ideal),
                        requests / ideal,
                        f"<= {TARGET}" if learned else "reference (today ~2.5)",
                        {"pages_cut_short": wire.truncated - cut, "counts": app.queue.counts()},
                    )
                )
            results.append(
                Result(
                    "density",
                    "pages cut short at the limit (both windows)",
                    float(wire.truncated),
                    "pages",
                    target="<= 0",
                )
            )
        finally:
            app.close()
    return results
