"""The market replay (issue 7): simulated days of ensure, ticks and workers against time-aware servers.

For every configuration (Polygon only; Polygon + Tradier; Polygon + Alpaca;
flat files + Polygon; Yahoo only; synthetic) and both databases, a
:class:`~barfill.testing.clock.SimClock` drives a client's ``ensure`` (rolling
m15 and d1 windows), a scheduler tick and a worker run ``until_idle`` at 08:00,
09:30, 11:00, 16:30 and 20:30 New York on every calendar day of two scenarios:

* ``thanksgiving``: Wed 2025-11-26 .. Tue 2025-12-02 (holiday on the 27th,
  13:00 early close on the 28th, a weekend), then Wed 08:00;
* ``dst-end``: Fri 2025-10-31 .. Tue 2025-11-04 (New York leaves daylight
  time on Sunday 11-02), then Wed 08:00.

At the end: the store equals the servers' final bars, bar for bar; each
session was requested as final exactly once per timeframe; no slice failed;
no two queued/running slices of a (symbol, timeframe) ever overlapped; no
provisional bar is left. Failures list every broken session by name.
The servers themselves are checked in ``tests/replay/test_market.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from barfill.store.db import Database
from tests.replay.backlog import run_backlog
from tests.replay.harness import CONFIGS, DST, THANKSGIVING, Config, Scenario, all_problems, replay, summary


@pytest.mark.parametrize("scenario", [THANKSGIVING, DST], ids=lambda s: s.name)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_market_replay(db: Database, tmp_path: Path, config: Config, scenario: Scenario) -> None:
    r = asyncio.run(replay(db.url, config, scenario, tmp_path))
    try:
        broken = summary(all_problems(r))
    finally:
        r.app.close()
    if broken:
        pytest.fail(f"{config.name} / {scenario.name}:\n{broken}", pytrace=False)


def test_backlog_under_a_five_per_minute_limit_requests_exactly_the_plan(db: Database) -> None:
    outcome = asyncio.run(run_backlog(db.url))
    assert outcome.planned > 5  # a real backlog: more requests than one minute's budget
    assert outcome.stored_missing == [], outcome.stored_missing
    assert outcome.requests == outcome.planned, (
        f"polygon served {outcome.requests} requests for a plan of {outcome.planned} slices "
        f"over {outcome.ticks} ticks; duplicated ranges: {outcome.duplicates[:5]}"
    )
