"""The server's start-up rehearsal: the newest screen played once, on an app copy whose writes roll back.

Why: a process pays for a lot of code paths the first time it runs them.
SQLAlchemy compiles every statement shape once. numpy imports ``numpy.ma``
lazily the first time the planner calls ``np.unique``, and SQLite connections
load the schema on first use. The newest screen pays about 50 ms of this:
the first ensure after ``barfill serve`` starts, the commit of its newest
slice and the first bar read. That is the case that must fit in one
provider round-trip + 100 ms (issue #8).

What runs: ``POST /v1/ensure`` for a few days of m1 of :data:`TICKER`, then
this process's real :class:`~barfill.service.worker.Worker` until it is idle,
then ``GET /v1/bars`` of the newest 500 bars. All of it goes through a FastAPI
app built on a copy of the :class:`~barfill.bootstrap.App` with three
differences:

* its database shares the engine, and so the engine's compiled-statement
  cache. Every transaction is nested in one outer transaction that is
  rolled back, so nothing is stored. (On PostgreSQL, sequences still move:
  a few ids are skipped, as after any rollback.);
* its only provider is a synthetic one under a name of its own
  (:data:`PROVIDER`), so nothing is sent anywhere and only the rehearsal's
  own slices are claimed;
* :func:`barfill.telemetry.muted`: no metric counts any of it.

The rehearsal runs on an event loop of its own, so the real loop's first
provider request is still treated as cold by the rate limiter. On SQLite the
outer transaction holds the write lock while it runs, typically 0.1-0.3 s.
A rehearsal that fails is logged and forgotten: serving never depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Iterator

import httpx
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy.engine import Connection

from barfill import telemetry
from barfill.bootstrap import App
from barfill.ports import Provider
from barfill.providers.router import Router
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.deps import Auth
from barfill.store import stamps
from barfill.store.db import Database, wrap_exceptions
from barfill.store.queue import SqlQueue
from barfill.store.ratelimit import SqlRateLimiter

log = logging.getLogger("barfill.warmup")

TICKER = "BARFILL_WARMUP"
PROVIDER = "barfill-warmup"
# A week holds some sessions on any calendar: at least one slice to fetch and commit.
WINDOW_DAYS = 7
SCREEN_BARS = 500
# Connections open at once during a newest screen: the ensure's, the worker's, the chart's poll.
POOLED = 3


def build_routes(fastapi_app: FastAPI) -> int:
    """Build FastAPI's per-route state (parameter models, dependency plans) now; returns the routes.

    FastAPI builds it for a whole router the first time a request is routed
    through it (~40 ms for all of barfill's): the first ensure or bar read
    would pay for it.
    """
    return sum(1 for _ in iter_route_contexts(fastapi_app.routes))


def rehearse(app: App) -> bool:
    """Play the newest screen once against ``app``'s engine, storing nothing. Blocking.

    Returns whether it ran to the end. Skipped under a simulated clock (a
    replay's time is not the rehearsal's).
    """
    if app.clock.simulated:
        return False
    try:
        with telemetry.muted(), _rolled_back(app.db) as db:
            asyncio.run(_play(_copy(app, db)))
        _fill_pool(app.db, POOLED)
    except Exception:  # serving must never depend on the rehearsal
        log.warning("start-up rehearsal failed; the first requests pay for it instead", exc_info=True)
        return False
    return True


class _Rehearsal(Database):
    """``db``'s engine, every transaction nested in one that the caller rolls back.

    One connection serves every thread in turn (a lock): the rehearsal runs
    one request or slice at a time, so nothing waits on it for long.
    """

    def __init__(self, db: Database, conn: Connection) -> None:
        vars(self).update(vars(db))
        self._conn = conn
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._lock, wrap_exceptions(self.url):
            yield self._conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with self._lock, wrap_exceptions(self.url):
            conn = self._conn
            stamps.begin(conn)
            try:
                with conn.begin_nested():
                    yield conn
                    stamps.flush(conn)
            finally:
                stamps.end(conn)

    def dispose(self) -> None:
        """The engine is the real app's: not ours to dispose."""


@contextlib.contextmanager
def _rolled_back(db: Database) -> Iterator[_Rehearsal]:
    with wrap_exceptions(db.url), db.engine.connect() as conn:
        if db.is_sqlite:  # BEGIN IMMEDIATE, as Database.write: the writes must not fail to upgrade
            conn = conn.execution_options(barfill_write=True)
        outer = conn.begin()
        try:
            yield _Rehearsal(db, conn)
        finally:
            outer.rollback()


def _fill_pool(db: Database, n: int) -> None:
    """Leave ``n`` connections in the pool, each having loaded the schema (a new one costs a
    connect, its settings and, on SQLite, parsing the schema at its first statement)."""
    with contextlib.ExitStack() as held:
        for _ in range(n):
            conn = held.enter_context(db.engine.connect())
            conn.exec_driver_sql("SELECT 1 FROM symbols WHERE 1 = 0").all()


def _copy(app: App, db: _Rehearsal) -> App:
    stub = SyntheticProvider(calendar=app.calendar, name=PROVIDER)
    providers: dict[str, Provider] = {PROVIDER: stub}
    return dataclasses.replace(
        app,
        db=db,
        queue=SqlQueue(db),
        limiter=SqlRateLimiter(db),
        providers=providers,
        router=Router(providers, historical=[PROVIDER], realtime=[PROVIDER], calendar=app.calendar),
        http=None,
        notices=[],
    )


class _Itself(Auth):
    """The rehearsal is the server calling itself: the loopback caller, keys or not.

    The key count is still read (a fresh server's first request reads it too).
    """

    def keys_exist(self) -> bool:
        super().keys_exist()
        return False


async def _play(app: App) -> None:
    from barfill.server.app import create_app  # app.py imports this module
    from barfill.service.worker import Worker

    fastapi_app = create_app(app)
    fastapi_app.state.barfill_auth = _Itself(app, loopback=True)
    transport = httpx.ASGITransport(app=fastapi_app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://rehearsal") as client:
            body = {"symbol": TICKER, "timeframe": "m1", "window_days": WINDOW_DAYS}
            (await client.post("/v1/ensure", json=body)).raise_for_status()
            await Worker(app, concurrency=1).run(until_idle=True)
            params = {"timeframe": "m1", "limit": str(SCREEN_BARS)}
            (await client.get(f"/v1/bars/{TICKER}", params=params)).raise_for_status()
    finally:
        fastapi_app.state.barfill_reads.close()
