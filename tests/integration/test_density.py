"""Planner density against a Polygon-wire server whose ``limit`` caps the minutes it reads.

A symbol that trades only regular hours reads 390 minutes a session where the planner's
model counts 960. The worker learns the real density from ``queryCount``; later plans are
sized to it (about the ideal number of requests), and no page is ever cut short. A page
that is cut short anyway (a density learned wrong) is detected: its complete bars are kept
and the rest is fetched by a new slice, never silently lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from barfill.bootstrap import App, build
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.service.ensure import ensure
from barfill.service.worker import Worker
from barfill.store.db import Database
from barfill.store.schema import bars, base_densities
from tests.integration.providers.servers import BaseLimitPolygonWire, FakeServer, Truth, ny

KEY = "density-key-0123456789"
REG = "REGHRS"  # trades only regular hours
CAP = 50_000


@pytest.fixture
def wire() -> BaseLimitPolygonWire:
    return BaseLimitPolygonWire(Truth(get_calendar("XNYS")), KEY, regular_only=frozenset({REG}))


@pytest.fixture
def server(wire: BaseLimitPolygonWire) -> Iterator[FakeServer]:
    with FakeServer(wire, keep_alive=True) as srv:
        yield srv


@pytest.fixture
def app(db: Database, server: FakeServer) -> Iterator[App]:
    settings = load_settings(
        database_url=db.url,
        polygon_api_key=KEY,
        polygon_base_url=server.url,
        polygon_rate_limit="1000/1",
        historical_providers=["polygon"],
        derivations=[],
    )
    application = build(settings, providers=None)
    try:
        yield application
    finally:
        application.close()


def _hydrate(app: App, start: str, end: str) -> int:
    """Ensure REG m15 over [start, end] (dates, inclusive) and fetch it; returns slices queued."""
    report = ensure(app, [REG], "m15", start=start, end=end, provider="polygon")
    app.run(Worker(app, concurrency=2, poll_s=0.05).run(drain=True))
    counts = app.queue.counts()
    assert counts.get("failed", 0) == 0 and counts.get("queued", 0) == 0, counts
    return report.results[0].slices_queued


def _ratio(app: App) -> float:
    with app.db.read() as conn:
        (row,) = conn.execute(sa.select(base_densities.c.ratio, base_densities.c.base)).all()
    assert row[1] == "minute"
    return float(row[0])


def _stored_m15(app: App) -> int:
    with app.db.read() as conn:
        query = sa.select(sa.func.count()).select_from(bars).where(bars.c.timeframe == "m15")
        return int(conn.execute(query).scalar_one())


def _learn(app: App, server: FakeServer) -> None:
    assert _hydrate(app, "2026-10-05", "2026-10-16") == 1  # two weeks: one request
    assert len(server.seen) == 1
    assert 0.37 < _ratio(app) < 0.45  # ~390 of 960 minutes, less untraded ones


def test_learned_density_sizes_later_slices_to_about_the_ideal(
    app: App, server: FakeServer, wire: BaseLimitPolygonWire
) -> None:
    _learn(app, server)
    minutes = len(wire.truth.labels(REG, Timeframe.m1, ny(2024, 10, 1), ny(2026, 10, 3), extended=False))
    ideal = math.ceil(minutes / CAP)  # from its real base aggregates
    queued = _hydrate(app, "2024-10-01", "2026-10-02")
    requests = len(server.seen) - 1
    assert requests == queued  # one request per slice: no page cut short, none re-planned
    assert wire.truncated == 0
    assert requests <= 1.10 * ideal, (requests, ideal)
    truth = len(wire.truth.labels(REG, Timeframe.m15, ny(2024, 10, 1), ny(2026, 10, 17), extended=False))
    assert _stored_m15(app) == truth


def test_a_page_cut_short_is_detected_and_the_rest_fetched(
    app: App, server: FakeServer, wire: BaseLimitPolygonWire
) -> None:
    _learn(app, server)
    with app.db.write() as conn:  # a density learned wrong: half the real one
        conn.execute(sa.update(base_densities).values(ratio=base_densities.c.ratio / 2))
    queued = _hydrate(app, "2025-10-01", "2026-10-02")
    assert wire.truncated >= 1  # pages were cut short at the limit ...
    assert len(server.seen) - 1 > queued  # ... and their rest fetched by new slices
    truth = len(wire.truth.labels(REG, Timeframe.m15, ny(2025, 10, 1), ny(2026, 10, 17), extended=False))
    assert _stored_m15(app) == truth  # every bar, none short
    assert 0.37 < _ratio(app) < 0.45  # the cut pages taught the real density back
