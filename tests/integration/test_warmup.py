"""The server's start-up rehearsal: it warms the newest screen's path and leaves no trace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy import event
from sqlalchemy.engine.interfaces import CacheStats

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.server import warmup
from barfill.server.app import ServerOptions, create_app
from barfill.service.worker import Worker
from barfill.store.db import Database
from barfill.store.schema import metadata
from tests.e2e.helpers import make_app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(db: Database) -> Iterator[tuple[App, SyntheticProvider]]:
    provider = SyntheticProvider(calendar=get_calendar())
    app = make_app(db, {"synthetic": provider})
    yield app, provider
    app.close()


def _everything(app: App) -> dict[str, list[tuple[Any, ...]]]:
    with app.db.read() as conn:
        rows = {t.name: conn.execute(sa.select(t)).all() for t in metadata.sorted_tables}
    return {name: sorted(map(tuple, found), key=repr) for name, found in rows.items()}


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in REGISTRY.collect()
        if m.name.startswith("barfill_")
        for s in m.samples
    }


def test_rehearsal_stores_nothing_fetches_nothing_counts_nothing(app: tuple[App, SyntheticProvider]) -> None:
    a, provider = app
    # Something stored already, so a rehearsal that wrote over it would show.
    asyncio.run(_newest_screen(a, "AAPL"))
    before, metrics = _everything(a), _samples()
    assert before["bars"] and before["job_runs"]
    assert warmup.rehearse(a) is True
    assert _everything(a) == before
    assert provider.requests == 1  # AAPL's one slice; the rehearsal has a provider of its own
    after = _samples()
    assert after == metrics, {k: (metrics.get(k), v) for k, v in after.items() if metrics.get(k) != v}


def test_after_the_rehearsal_a_fresh_chart_compiles_no_statement(app: tuple[App, SyntheticProvider]) -> None:
    a, _ = app
    assert warmup.rehearse(a) is True
    compiled: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if context is not None and context.cache_hit == CacheStats.CACHE_MISS:
            compiled.append(statement)

    event.listen(a.db.engine, "after_cursor_execute", seen)
    try:
        bars = asyncio.run(_newest_screen(a, "AAPL"))
    finally:
        event.remove(a.db.engine, "after_cursor_execute", seen)
    assert bars == warmup.SCREEN_BARS
    assert compiled == []


def test_a_fresh_process_does_compile_them(app: tuple[App, SyntheticProvider]) -> None:
    """The test above would pass for nothing if the newest screen compiled nothing anyway."""
    a, _ = app
    misses = 0

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        nonlocal misses
        misses += context is not None and context.cache_hit == CacheStats.CACHE_MISS

    event.listen(a.db.engine, "after_cursor_execute", seen)
    try:
        asyncio.run(_newest_screen(a, "AAPL"))
    finally:
        event.remove(a.db.engine, "after_cursor_execute", seen)
    assert misses >= 10


def test_the_server_rehearses_before_it_serves(db: Database) -> None:
    """Through the lifespan: the first ensure after start-up compiles nothing either."""
    from fastapi.testclient import TestClient

    a = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    compiled: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if context is not None and context.cache_hit == CacheStats.CACHE_MISS:
            compiled.append(statement)

    try:
        with TestClient(create_app(a, ServerOptions())) as client:
            event.listen(a.db.engine, "after_cursor_execute", seen)
            body = {"symbol": "AAPL", "timeframe": "m1", "window_days": warmup.WINDOW_DAYS}
            assert client.post("/v1/ensure", json=body).status_code == 200
    finally:
        event.remove(a.db.engine, "after_cursor_execute", seen)
        a.close()
    assert compiled == []


async def _newest_screen(app: App, ticker: str) -> int:
    """What a chart does on a fresh store, in this process: ensure, the worker fills, read."""
    fastapi_app = create_app(app)
    transport = httpx.ASGITransport(app=fastapi_app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"symbol": ticker, "timeframe": "m1", "window_days": warmup.WINDOW_DAYS}
            assert (await client.post("/v1/ensure", json=body)).status_code == 200
            await Worker(app, concurrency=1).run(until_idle=True)
            params = {"timeframe": "m1", "limit": str(warmup.SCREEN_BARS)}
            got = (await client.get(f"/v1/bars/{ticker}", params=params)).json()
            return sum(int(layer["count"]) for layer in got["layers"].values())
    finally:
        fastapi_app.state.barfill_reads.close()


def test_the_rehearsal_leaves_connections_ready_in_the_pool(app: tuple[App, SyntheticProvider]) -> None:
    """The newest screen's ensure, claim and poll run at once: none of them opens a connection."""
    a, _ = app
    assert warmup.rehearse(a) is True
    opened = 0

    def connected(dbapi: Any, record: Any) -> None:
        nonlocal opened
        opened += 1

    event.listen(a.db.engine, "connect", connected)
    try:
        with a.db.read(), a.db.read(), a.db.read():
            pass
    finally:
        event.remove(a.db.engine, "connect", connected)
    assert opened == 0
