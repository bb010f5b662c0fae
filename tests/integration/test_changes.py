"""Waiting for another process's commit: SQLite's data_version, PostgreSQL's LISTEN."""

from __future__ import annotations

import asyncio

import pytest

from barfill.domain.slices import CoverageSpan, NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.store.changes import Changes
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.queue import SqlQueue
from barfill.store.symbols import ensure_symbols

pytestmark = pytest.mark.timeout(120)
FOREVER_S = 3600.0  # a wait that ends before the test's timeout ended on the change


def _one_slice(db: Database) -> SqlQueue:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        did, _ = upsert_definition(conn, sid, "h1", window_days=30)
    queue = SqlQueue(db)
    t = 1_700_000_400
    queue.enqueue([NewSlice(did, sid, Timeframe.h1, t, t + 3600, "synthetic", 0, 3)])
    return queue


async def test_a_wait_ends_when_another_engine_completes_a_slice(db: Database) -> None:
    queue = _one_slice(db)
    other = Database(db.url)  # the process filling the job
    changes = Changes(db)
    try:
        (claimed,) = SqlQueue(other).claim("w", 1, lease_s=60.0)
        await changes.wait(0.0)  # from here on it listens (PostgreSQL) / knows the version (SQLite)
        waiting = asyncio.create_task(changes.wait(FOREVER_S))
        result = await asyncio.to_thread(
            SqlQueue(other).complete_many, [(claimed, [], [CoverageSpan(claimed.start, claimed.end)])]
        )
        assert result.done == [claimed.id]
        await waiting  # returns on the commit, long before FOREVER_S
        assert queue.counts()["succeeded"] == 1
    finally:
        await changes.aclose()
        other.dispose()


async def test_a_wait_without_a_change_lasts_its_timeout(db: Database) -> None:
    changes = Changes(db)
    try:
        await changes.wait(0.05)
        await changes.wait(0.05)  # nothing committed in between: nothing to see, no error
    finally:
        await changes.aclose()
