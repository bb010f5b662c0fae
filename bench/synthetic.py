"""The offline provider's speed: bars made per second, as a ratio against the calendar alone.

Was a unit test's ``elapsed < 2.0`` (and ``0.2 <= elapsed < 0.6`` for latency);
on a loaded 2-core box that failed for no fault of the code. Here the figures
are ratios against baselines measured in the same run, so they mean the same
on any machine:

* two years of h1 bars for twenty symbols, against computing those bars'
  open times with the trading calendar (the least work any generator must do);
* four fetches with 0.2 s latency gathered at once, against one such fetch
  (1.0 = fully concurrent, 4.0 = one after another).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from bench.common import Result, Timer

SYMBOLS = [f"SYM{i}" for i in range(20)]
LATENCY_S = 0.2


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


START, END = _ts("2023-01-01"), _ts("2025-01-01")


def run() -> list[Result]:
    calendar = get_calendar("XNYS")
    provider = SyntheticProvider(calendar=calendar)
    provider.truth("WARM", Timeframe.h1, START, END)  # caches outside the timers
    with Timer() as base:
        labels = sum(len(calendar.bar_opens(Timeframe.h1, START, END)) for _ in SYMBOLS)
    with Timer() as made:
        bars = sum(len(provider.truth(s, Timeframe.h1, START, END)) for s in SYMBOLS)
    results = [
        Result(
            suite="synthetic",
            name=f"2y h1 x {len(SYMBOLS)} symbols ({bars:,} bars)",
            value=made.seconds,
            unit="s",
            baseline=base.seconds,
            ratio=made.seconds / max(base.seconds, 1e-9),
            target="lower is better (time per bar vs the calendar computing their labels)",
            extra={"bars": bars, "labels": labels},
        )
    ]
    slow = SyntheticProvider(calendar=calendar, latency_s=LATENCY_S)
    day = (_ts("2024-01-02"), _ts("2024-01-03"))

    async def one() -> None:
        await slow.fetch(["A"], Timeframe.d1, *day)

    async def four() -> None:
        await asyncio.gather(*(slow.fetch([s], Timeframe.d1, *day) for s in "ABCD"))

    with Timer() as single:
        asyncio.run(one())
    with Timer() as gathered:
        asyncio.run(four())
    results.append(
        Result(
            suite="synthetic",
            name=f"4 fetches with {LATENCY_S} s latency, gathered",
            value=gathered.seconds,
            unit="s",
            baseline=single.seconds,
            ratio=gathered.seconds / max(single.seconds, 1e-9),
            target="≈ 1.0 (latency awaited concurrently)",
        )
    )
    return results
