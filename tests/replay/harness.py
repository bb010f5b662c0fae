"""The market replay: a simulated clock drives a client, the scheduler and a worker through days.

:func:`replay` runs one :class:`Scenario` for one :class:`Config` against the
time-aware servers of :mod:`tests.replay.market`, all in one event loop (one
httpx client). At every step it moves the :class:`SimClock` to the step's New
York time, publishes due flat files, lets a client ``ensure`` its rolling
windows, ticks the scheduler, checks that no two queued/running slices of a
(symbol, timeframe) overlap, and runs a worker ``until_idle`` (its rate-limit
waits pass in simulated time). The ``check_*`` helpers return plain-language
problems (empty: fine) naming the configuration, symbol, timeframe and session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from barfill.bootstrap import App, build
from barfill.config import load_settings
from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.ports import Provider
from barfill.service.ensure import ensure
from barfill.service.orchestrator import tick
from barfill.service.worker import Worker, WorkerStats
from barfill.store.bar_reads import read_bars
from barfill.store.schema import bars as bars_table
from barfill.store.schema import job_runs
from barfill.store.symbols import symbol_id
from barfill.testing.clock import SimClock
from tests.integration.providers.servers import NY, FakeServer
from tests.replay.market import (
    FlatFolder,
    Market,
    RecordingFlatFiles,
    RecordingSynthetic,
    RequestLog,
    TimedAlpacaWire,
    TimedPolygonWire,
    TimedTradierWire,
    TimedYahooWire,
)

CAL = get_calendar("XNYS")
STEP_TIMES = ((8, 0), (9, 30), (11, 0), (16, 30), (20, 30))  # New York, on trading days
CLOSED_DAY_TIMES = ((11, 0),)  # weekends and holidays: one look
ENSURE_TIMES = ((9, 30), (16, 30))  # when the client calls ensure (and at the very first step)


def ny(d: date, hh: int, mm: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, hh, mm, tzinfo=NY).timestamp())


def is_session(d: date) -> bool:
    label = ny(d, 0)
    i = int(np.searchsorted(CAL.midnights, label))
    return i < len(CAL.midnights) and int(CAL.midnights[i]) == label


@dataclass(frozen=True)
class Config:
    """Which providers exist, and the settings that order them."""

    name: str
    servers: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


CONFIGS = (
    Config("polygon", ("polygon",)),
    Config("polygon+tradier", ("polygon", "tradier")),
    Config("polygon+alpaca", ("polygon", "alpaca")),
    Config("flatfiles+polygon", ("flatfiles", "polygon"), {"historical_providers": ["flatfiles", "polygon"]}),
    Config("yahoo", ("yahoo",)),
    Config("synthetic", ("synthetic",)),
)


@dataclass(frozen=True)
class Scenario:
    """Calendar days ``first``..``last`` (inclusive) stepped at :data:`STEP_TIMES`, then a last morning.

    Days without a session are stepped at :data:`CLOSED_DAY_TIMES` only.
    """

    name: str
    first: date
    last: date
    windows: tuple[tuple[Timeframe, int], ...] = ((Timeframe.m15, 5), (Timeframe.d1, 10))
    symbols: tuple[str, ...] = ("AAPL",)

    def steps(self) -> Iterator[int]:
        d = self.first
        while d <= self.last:
            for hh, mm in STEP_TIMES if is_session(d) else CLOSED_DAY_TIMES:
                yield ny(d, hh, mm)
            d += timedelta(days=1)
        yield ny(self.last + timedelta(days=1), 8, 0)

    @property
    def start(self) -> int:
        return next(self.steps())

    @property
    def end(self) -> int:
        return list(self.steps())[-1]


# Wed 11-26 .. Tue 12-02: Thanksgiving (27th), early close (28th, 13:00), a weekend.
THANKSGIVING = Scenario("thanksgiving", date(2025, 11, 26), date(2025, 12, 2))
# Fri 10-31 .. Tue 11-04: New York leaves daylight time on Sunday 11-02.
DST = Scenario(
    "dst-end", date(2025, 10, 31), date(2025, 11, 4), windows=((Timeframe.m15, 4), (Timeframe.d1, 7))
)


@dataclass
class Replay:
    """What a replay leaves behind for the checks."""

    config: Config
    scenario: Scenario
    app: App
    market: Market
    log: RequestLog
    synthetic: RecordingSynthetic
    clock: SimClock
    first_windows: dict[tuple[str, Timeframe], int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    untruthful: list[str] = field(default_factory=list)  # ensure's slices_queued vs what it queued
    outcomes: list[tuple[int, WorkerStats]] = field(default_factory=list)  # (step time, worker stats)


def settings_for(db_url: str, config: Config, urls: dict[str, str], folder: Path) -> dict[str, Any]:
    s: dict[str, Any] = {
        "database_url": db_url,
        "derivations": [],
        "lease_s": 3_600.0,  # heartbeats beat in real time; simulated minutes pass during rate waits
        "backoff_base_s": 2.0,
        "backoff_cap_s": 60.0,
        "http_timeout_s": 10.0,
        # The replay checks that each session is requested as final exactly once: the one
        # deliberate second request, re-verification, is tested in tests/integration/test_reverify.py.
        "reverify_after_sessions": 0,
    }
    if "polygon" in config.servers:
        s |= {"polygon_api_key": "pk", "polygon_base_url": urls["polygon"]}
    if "tradier" in config.servers:
        s |= {"tradier_token": "tt", "tradier_base_url": urls["tradier"]}
    if "alpaca" in config.servers:
        s |= {"alpaca_key_id": "ak", "alpaca_secret_key": "as", "alpaca_base_url": urls["alpaca"]}
    if "yahoo" in config.servers:
        s |= {"yahoo_enabled": True, "yahoo_base_url": urls["yahoo"]}
    if "flatfiles" in config.servers:
        s |= {"flatfiles_dir": folder}
    return s | config.settings


@contextlib.contextmanager
def servers(config: Config, market: Market, log: RequestLog) -> Iterator[dict[str, str]]:
    wires = {
        "polygon": lambda: TimedPolygonWire(market, log),
        "tradier": lambda: TimedTradierWire(market, log),
        "alpaca": lambda: TimedAlpacaWire(market, log),
        "yahoo": lambda: TimedYahooWire(market, log),
    }
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(FakeServer(wires[name]())).url
            for name in config.servers
            if name in wires
        }
        yield urls


async def step(r: Replay, at: int, label: str, *, client: bool) -> None:
    """One moment of the replay: client ensure (when ``client``), scheduler tick, worker until idle."""
    r.clock.advance_to(at)
    app = r.app
    for tf, days in r.scenario.windows if client else ():
        before = (await asyncio.to_thread(app.queue.counts))["queued"]
        report = await asyncio.to_thread(ensure, app, list(r.scenario.symbols), tf, days=days)
        after = (await asyncio.to_thread(app.queue.counts))["queued"]
        said = sum(res.slices_queued for res in report.results)
        if said != after - before:
            r.untruthful.append(
                f"{label}: ensure {tf.value} reported {said} slices queued, queued {after - before}"
            )
        for res in report.results:
            r.first_windows.setdefault((res.symbol, tf), res.window_start)
    result = await asyncio.to_thread(tick, app)
    assert result.errors == [], f"{r.config.name} {label}: tick errors {result.errors}"
    r.overlaps.extend(f"{label}: {o}" for o in await asyncio.to_thread(live_overlaps, app))
    stats = await Worker(app, concurrency=2, poll_s=0.05).run(until_idle=True)
    r.outcomes.append((at, stats))


async def replay(db_url: str, config: Config, scenario: Scenario, tmp: Path) -> Replay:
    """Run ``scenario`` for ``config``; the caller closes ``result.app``."""
    clock = SimClock(scenario.start)
    market = Market(CAL, clock.now)
    log = RequestLog()
    folder = FlatFolder(tmp / "flat", market, scenario.symbols, since=scenario.first - timedelta(days=40))
    with servers(config, market, log) as urls:
        settings = load_settings(**settings_for(db_url, config, urls, tmp / "flat"))
        # The real wiring (HTTP client, adapters reading the database clock, which follows
        # the SimClock); only the in-process sources are swapped for recording ones.
        app = build(settings, clock=clock)
        synthetic = RecordingSynthetic(market, log)
        swap: dict[str, Provider] = {"synthetic": synthetic}
        if "flatfiles" in config.servers:
            swap["flatfiles"] = RecordingFlatFiles(tmp / "flat", market, log)
        for name, provider in swap.items():
            app.providers[name] = provider
            app.router.providers[name] = provider
        r = Replay(config, scenario, app, market, log, synthetic, clock)
        try:
            for n, at in enumerate(scenario.steps()):
                clock.advance_to(at)
                folder.publish()
                local = datetime.fromtimestamp(at, NY)
                label = f"{config.name}/{scenario.name} {local:%a %m-%d %H:%M} NY"
                await step(r, at, label, client=n == 0 or (local.hour, local.minute) in ENSURE_TIMES)
        finally:
            await app.aclose()  # the HTTP client, on the loop that made it
    return r


# -- checks ---------------------------------------------------------------------------------


def live_overlaps(app: App) -> list[str]:
    """Queued or running slices of one (symbol, timeframe) whose ranges overlap."""
    query = (
        sa.select(job_runs.c.id, job_runs.c.symbol_id, job_runs.c.timeframe, job_runs.c.start, job_runs.c.end)
        .where(job_runs.c.status.in_(("queued", "running")))
        .order_by(job_runs.c.symbol_id, job_runs.c.timeframe, job_runs.c.start)
    )
    with app.db.read() as conn:
        found = conn.execute(query).all()
    out: list[str] = []
    last: Any = None  # the slice reaching furthest so far in this (symbol, timeframe)
    for b in found:
        if last is not None and (last.symbol_id, last.timeframe) == (b.symbol_id, b.timeframe):
            if b.start < last.end:
                first = f"{last.id} [{_t(last.start)}, {_t(last.end)})"
                out.append(f"{b.timeframe} slices {first} and {b.id} [{_t(b.start)}, {_t(b.end)})")
            if b.end <= last.end:
                continue
        last = b
    return out


def final_range(r: Replay, symbol: str, tf: Timeframe) -> tuple[int, int, range]:
    """[lo, hi) that must be stored final at the end, and its sessions."""
    lo = r.first_windows[(symbol, tf)]
    now = r.clock.now()
    last = int(np.searchsorted(CAL.ext_closes, now, side="right")) - 1  # last session final by now
    if tf.intraday:
        hi = int(CAL.closes[last])
        i0 = int(np.searchsorted(CAL.closes, lo, side="right"))
    else:
        lo = int(CAL.midnights[int(np.searchsorted(CAL.midnights, lo, side="left"))])
        hi = int(CAL.midnights[last + 1])  # labels up to the last final session's
        i0 = int(np.searchsorted(CAL.midnights, lo, side="left"))
    return lo, hi, range(i0, last + 1)


def expected_bars(r: Replay, symbol: str, tf: Timeframe, lo: int, hi: int) -> BarBatch:
    if r.config.servers == ("synthetic",):
        return r.synthetic.truth(symbol, tf, lo, hi)
    return r.market.final_bars(symbol, tf, lo, hi)


def check_store_is_final_truth(r: Replay) -> list[str]:
    """The store holds the final bars, bar for bar, read as a user reads them."""
    problems: list[str] = []
    for symbol in r.scenario.symbols:
        for tf, _ in r.scenario.windows:
            lo, hi, _sessions = final_range(r, symbol, tf)
            want = expected_bars(r, symbol, tf, lo, hi)
            with r.app.db.read() as conn:
                sid = symbol_id(conn, symbol)
                got = read_bars(conn, sid if sid is not None else -1, tf, lo, hi)
            problems += _compare(f"{r.config.name}/{r.scenario.name} {symbol} {tf.value}", want, got)
    return problems


def _compare(where: str, want: BarBatch, got: BarBatch) -> list[str]:
    out: list[str] = []
    have = {int(t): i for i, t in enumerate(got.ts.tolist())}
    missing: dict[str, int] = {}
    wrong: dict[str, list[str]] = {}
    for i, t in enumerate(want.ts.tolist()):
        day = _day(t)
        j = have.pop(int(t), None)
        if j is None:
            missing[day] = missing.get(day, 0) + 1
            continue
        for col in ("open", "high", "low", "close", "volume"):
            a, b = float(getattr(want, col)[i]), float(getattr(got, col)[j])
            if abs(a - b) > 1e-9 * max(1.0, abs(a)):
                wrong.setdefault(day, []).append(f"{_t(t)} {col} stored {b:g} final {a:g}")
                break
    for day, n in missing.items():
        out.append(f"{where}: session {day}: {n} final bars missing")
    for day, items in wrong.items():
        out.append(
            f"{where}: session {day}: {len(items)} bars differ from final "
            f"(stored from {got.provider}), e.g. {items[0]}"
        )
    extra: dict[str, int] = {}
    for t in have:
        extra[_day(t)] = extra.get(_day(t), 0) + 1
    for day, n in extra.items():
        out.append(f"{where}: session {day}: {n} stored bars the final truth does not have")
    return out


def check_each_session_final_once(r: Replay) -> list[str]:
    """Every session in the window was requested, once final, exactly once per timeframe."""
    counts = r.log.final_counts()
    problems: list[str] = []
    for symbol in r.scenario.symbols:
        for tf, _ in r.scenario.windows:
            _, _, sessions = final_range(r, symbol, tf)
            for i in sessions:
                d = r.market.session_date(i)
                n = counts.get((symbol, tf, d), 0)
                if n != 1:
                    servers = sorted(
                        {
                            q.server
                            for q in r.log.requests
                            if (q.symbol, q.timeframe, q.session, q.final) == (symbol, tf, d, True)
                        }
                    )
                    problems.append(
                        f"{r.config.name}/{r.scenario.name} {symbol} {tf.value}: session {d} "
                        f"requested as final {n} times (expected 1)"
                        + (f" from {', '.join(servers)}" if servers else "")
                    )
    return problems


def check_no_failed_slices(r: Replay) -> list[str]:
    counts = r.app.queue.counts()
    if counts.get("failed", 0) == 0:
        return []
    errors = "; ".join(f"{n}x {code}: {msg[:160]}" for code, msg, n in r.app.queue.errors(limit=5))
    return [f"{r.config.name}/{r.scenario.name}: {counts['failed']} slices failed: {errors}"]


def check_no_overlaps(r: Replay) -> list[str]:
    return [f"{r.config.name}/{r.scenario.name} overlapping live slices at {o}" for o in r.overlaps[:10]]


def check_no_provisional_bars(r: Replay) -> list[str]:
    query = (
        sa.select(
            bars_table.c.timeframe, bars_table.c.provider, sa.func.count(), sa.func.min(bars_table.c.ts)
        )
        .where(bars_table.c.layer != "historical")
        .group_by(bars_table.c.timeframe, bars_table.c.provider)
    )
    with r.app.db.read() as conn:
        left = conn.execute(query).all()
    return [
        f"{r.config.name}/{r.scenario.name}: {n} provisional {tf} bars from {p} left (first {_t(first)})"
        for tf, p, n, first in left
    ]


def all_problems(r: Replay) -> dict[str, list[str]]:
    return {
        "store equals final truth": check_store_is_final_truth(r),
        "each session requested final once": check_each_session_final_once(r),
        "no failed slice": check_no_failed_slices(r),
        "no overlapping live slices": check_no_overlaps(r),
        "no provisional bar left": check_no_provisional_bars(r),
        "ensure reports what it queued": r.untruthful[:10],
    }


def _t(ts: int) -> str:
    return f"{datetime.fromtimestamp(int(ts), NY):%m-%d %H:%M}"


def _day(ts: int) -> str:
    # Bars are labelled by their open (d1: 00:00 New York), so the New York date is the session.
    return str(datetime.fromtimestamp(int(ts), NY).date())


def summary(problems: dict[str, list[str]]) -> str:
    lines = []
    for check, items in problems.items():
        if items:
            lines.append(f"[{check}] {len(items)} problem(s):")
            lines.extend(f"  - {p}" for p in items[:12])
    return "\n".join(lines)


__all__ = ["CONFIGS", "DST", "THANKSGIVING", "Sequence", "all_problems", "replay", "summary"]
