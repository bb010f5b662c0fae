"""Adjust on read: what ``adjust=split`` / ``all`` add to a bar read, as ratios to the same raw read.

One symbol (the synthetic ``SPLT``: a 4:1 split and quarterly dividends) with
six months of m1 bars in SQLite; each read is timed (median of 5) raw, then
split-adjusted, then total-return adjusted. A second figure times the pure
columnar step alone on 2 million bars against one numpy multiply of the same
columns (the least any adjustment can cost).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
from collections.abc import Callable
from functools import partial

import numpy as np

from barfill.domain.adjust import Adjust, factors
from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SPLIT_SYMBOL, SyntheticProvider
from barfill.store.actions import load_actions, upsert_actions
from barfill.store.bar_reads import read_bars
from barfill.store.bars import upsert_bars
from barfill.store.symbols import ensure_symbols
from bench.common import Result, Timer, scratch_database

SUITE = "adjust"
START, END = dt.date(2024, 3, 1), dt.date(2024, 9, 1)


def _median(fn: Callable[[], object], n: int = 5) -> float:
    times = []
    for _ in range(n):
        with Timer() as t:
            fn()
        times.append(t.seconds)
    return statistics.median(times)


def run() -> list[Result]:
    cal = get_calendar()
    synthetic = SyntheticProvider(calendar=cal)
    lo = int(np.datetime64(START, "s").astype(np.int64))
    hi = int(np.datetime64(END, "s").astype(np.int64))
    batch = synthetic.truth(SPLIT_SYMBOL, Timeframe.m1, lo, hi)
    actions = asyncio.run(synthetic.fetch_actions(SPLIT_SYMBOL, dt.date(2000, 1, 1), dt.date(2030, 1, 1)))
    out: list[Result] = []
    with scratch_database("sqlite") as db:
        with db.write() as conn:
            sid = ensure_symbols(conn, [SPLIT_SYMBOL])[SPLIT_SYMBOL]
            upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=1.0)
            upsert_actions(conn, sid, actions, cal.tz)

        def read(adjust: str | None) -> None:
            with db.read() as conn:
                read_bars(conn, sid, Timeframe.m1, lo, hi, adjust=adjust)

        raw = _median(lambda: read(None))
        for adjust in ("split", "all"):
            t = _median(partial(read, adjust))
            out.append(
                Result(
                    SUITE,
                    f"m1 read, {len(batch):,} bars, adjust={adjust}",
                    t * 1000,
                    "ms",
                    raw * 1000,
                    t / raw,
                    "close to 1: one columnar step",
                )
            )
        with db.read() as conn:
            known = load_actions(conn, sid)
    n = 2_000_000
    ts = np.sort(np.random.default_rng(0).integers(lo, hi, n))
    cols = [np.random.default_rng(i).random(n) for i in range(6)]
    base = _median(lambda: [c * 1.5 for c in cols])
    closes = {a.ex_date: 100.0 for a in known}

    def step() -> None:
        price, volume = factors(ts, known, cal.tz, Adjust.all_adjusted, closes)
        [c * price for c in cols[:5]] + [cols[5] * volume]

    t = _median(step)
    out.append(
        Result(
            SUITE,
            f"pure step, {n:,} bars ({len(known)} actions)",
            t * 1000,
            "ms",
            base * 1000,
            t / base,
            "a few numpy passes",
        )
    )
    return out
