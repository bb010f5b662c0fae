"""Provider requests against the ideal, and hydration wall time under a shared rate limit.

Two figures, each a ratio against a baseline computed in the same run:

1. **Requests issued ÷ ideal.** Two years (730 days ending 2026-11-20 00:00
   New York) of one symbol with nothing covered, for m1, m15, h1 and d1, per
   provider. The plan is :func:`plan_slices` over :func:`find_gaps`; every
   planned slice is then fetched through the real adapter from a local fake
   server speaking that provider's wire format (``tests/integration/providers/
   servers.py``), and the requests the *server* saw are counted, pagination
   included. The servers page at the provider's real maximum (Polygon 50,000
   rows, Alpaca ``limit``=10,000), not the tests' small pages. The ideal is
   :func:`ideal_requests`. Where a provider cannot serve a timeframe, or only
   its recent history, only the fillable part is planned, fetched and
   compared; ``extra`` says how many sessions were unfillable. The synthetic
   provider has no server: its fetch calls are counted. Planning time (gap
   detection plus slice planning, all four timeframes) is reported per
   provider.
2. **Hydration wall time ÷ (requests ÷ rate).** Four ``barfill worker``
   processes (concurrency 4 each) on PostgreSQL hydrate ~150 symbols of d1
   from a Polygon fake server that answers 429 whenever more than 20 requests
   arrive within one second (a sliding window counting every arrival), with
   barfill configured for 20 requests per second. The clock runs from the
   ``ensure`` call until no slice is queued or running; the ideal is
   ``requests ÷ 20`` (the strict bound, with the first request free, is
   ``(requests - 1) ÷ 20``; both are in ``extra``). 429s are counted at the
   server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.planner import find_gaps, ideal_requests, plan_slices
from barfill.domain.timeframes import Timeframe
from barfill.ports import Provider
from barfill.providers.alpaca import AlpacaProvider
from barfill.providers.polygon import PolygonProvider
from barfill.providers.synthetic import SyntheticProvider
from barfill.providers.tradier import TradierProvider
from barfill.providers.yahoo import YahooProvider
from bench.common import Result, scratch_database

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # the fake servers live with the integration tests
    sys.path.insert(0, str(_ROOT))

from tests.integration.providers.servers import (  # noqa: E402
    AlpacaWire,
    FakeServer,
    PolygonWire,
    TradierWire,
    Truth,
    Wire,
    YahooWire,
    most_in_any_window,
)

NY = ZoneInfo("America/New_York")
SYMBOL = "AAPL"
TIMEFRAMES = (Timeframe.m1, Timeframe.m15, Timeframe.h1, Timeframe.d1)
END = int(datetime(2026, 11, 20, tzinfo=NY).timestamp())
WINDOW = Interval(END - 730 * 86_400, END)
KEY = "bench-key-0123456789"
TARGET_REQUESTS = 1.05
CASE_BUDGET_S = 30.0  # a case slower than this is fetched in part (every k-th slice)
PLAN_REPEATS = 5

RATE_N = 20  # requests per second, at the server and in barfill's configuration
RATE_SYMBOLS = 150
RATE_WORKERS = 4
RATE_CONCURRENCY = 4
TARGET_WALL = 1.10


# -- 1. requests issued vs ideal ---------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A provider under test: how to build it against a server, and that server's wire."""

    name: str
    wire: Callable[[Truth], Wire] | None  # None: no HTTP (synthetic)
    make: Callable[[httpx.AsyncClient, str], Provider]
    page_rows: int | None  # rows per page the fake server answers with (the provider's real maximum)


def _clock() -> float:
    return float(END)


def _subjects() -> list[Subject]:
    return [
        Subject(
            "polygon",
            lambda t: PolygonWire(t, KEY),
            lambda c, url: PolygonProvider(c, api_key=KEY, base_url=url),
            50_000,
        ),
        Subject(
            "alpaca",
            lambda t: AlpacaWire(t, "key-id", KEY),
            lambda c, url: AlpacaProvider(c, key_id="key-id", secret_key=KEY, base_url=url),
            10_000,
        ),
        Subject(
            "tradier",
            lambda t: TradierWire(t, KEY),
            lambda c, url: TradierProvider(c, token=KEY, base_url=url, clock=_clock),
            None,
        ),
        Subject(
            "yahoo",
            YahooWire,
            lambda c, url: YahooProvider(c, base_url=url, clock=_clock),
            None,
        ),
        Subject("synthetic", None, lambda c, url: SyntheticProvider(now=_clock), None),
    ]


def _sessions_in(intervals: list[Interval], calendar: TradingCalendar) -> int:
    """Trading sessions (extended hours) that some interval meets."""
    found: set[int] = set()
    for iv in intervals:
        i0, i1 = calendar.session_indices(iv.start, iv.end, extended=True)
        found.update(range(i0, i1))
    return len(found)


async def _fetch_all(
    provider: Provider, slices: list[tuple[int, int]], tf: Timeframe, truth: Truth | None
) -> tuple[int, int, int]:
    """Fetch ``slices``; returns (slices fetched, bars returned, bars the server's truth holds there).

    The synthetic provider has no server (``truth`` None): its bars are its own truth.
    """
    got = want = 0
    for start, end in slices:
        batch = (await provider.fetch([SYMBOL], tf, start, end))[SYMBOL]
        got += len(batch)
        want += len(batch) if truth is None else len(truth.labels(SYMBOL, tf, start, end, extended=False))
    return len(slices), got, want


def _case(subject: Subject, tf: Timeframe, calendar: TradingCalendar, truth: Truth) -> Result:
    base = f"{subject.name} {tf.value} 2y"
    with contextlib.ExitStack() as stack:
        server: FakeServer | None = None
        url = "http://127.0.0.1:9"  # never used: no server
        if subject.wire is not None:
            wire = subject.wire(truth)
            if subject.page_rows is not None:
                wire.page_size = subject.page_rows
            server = stack.enter_context(FakeServer(wire))
            url = server.url
        return asyncio.run(_measure_case(subject, tf, calendar, truth, server, url, base))


async def _measure_case(
    subject: Subject,
    tf: Timeframe,
    calendar: TradingCalendar,
    truth: Truth,
    server: FakeServer | None,
    url: str,
    base: str,
) -> Result:
    async with httpx.AsyncClient(timeout=60.0) as client:
        provider = subject.make(client, url)
        caps = provider.capabilities
        gaps = find_gaps(WINDOW, [], calendar, extended=caps.extended_hours)
        plan = plan_slices(gaps, tf, caps, calendar, now=END)
        ideal = ideal_requests(gaps, tf, caps, calendar, now=END)
        extra: dict[str, Any] = {
            "slices": len(plan.slices),
            "unfillable_sessions": _sessions_in(plan.unfillable, calendar),
        }
        if not caps.supports(tf):
            extra["note"] = f"{tf.value} not served natively (barfill derives it); nothing fillable"
        elif plan.unfillable:
            extra["note"] = "history depth: only the fillable (recent) part planned and fetched"
        if not plan.slices:
            return Result(
                "providers",
                f"{base}: requests vs ideal",
                0.0,
                "requests",
                float(ideal),
                None,
                f"<= {TARGET_REQUESTS}" if caps.supports(tf) else "n/a",
                extra,
            )
        ranges = [(s.start, s.end) for s in plan.slices]
        # Time one slice first: when the whole case would exceed the budget, fetch every k-th
        # slice (a representative subset: slices are alike) and scale the request count.
        started = time.perf_counter()
        before = _requests(provider, server)
        truth_ = truth if server is not None else None
        fetched, got, want = await _fetch_all(provider, ranges[:1], tf, truth_)
        first_s = time.perf_counter() - started
        projected_s = first_s * len(ranges)
        stride = 1 if projected_s <= CASE_BUDGET_S else -(-int(projected_s) // int(CASE_BUDGET_S))
        rest = ranges[1:][::stride]
        more = await _fetch_all(provider, rest, tf, truth_)
        fetched, got, want = fetched + more[0], got + more[1], want + more[2]
        seconds = time.perf_counter() - started
        seen = _requests(provider, server) - before
        requests = seen * len(ranges) / fetched
        extra.update(
            {
                "requests_seen": seen,
                "slices_fetched": fetched,
                "fetch_s": round(seconds, 2),
                "bars": got,
                "bars_expected": want,
            }
        )
        if subject.page_rows is not None:
            extra["server_page_rows"] = subject.page_rows
        if fetched < len(ranges):
            extra["note"] = (
                f"{extra.get('note', '') + '; ' if 'note' in extra else ''}"
                f"too slow to fetch whole: {fetched}/{len(ranges)} slices fetched, requests scaled"
            )
        if got != want:
            extra["mismatch"] = "bars returned differ from the server's truth"
        if server is not None and server.errors:
            extra["server_errors"] = [repr(e) for e in server.errors[:3]]
        return Result(
            "providers",
            f"{base}: requests vs ideal",
            float(requests),
            "requests",
            float(ideal),
            requests / ideal if ideal else None,
            f"<= {TARGET_REQUESTS}",
            extra,
        )


def _requests(provider: Provider, server: FakeServer | None) -> int:
    if server is not None:
        return len(server.seen)
    assert isinstance(provider, SyntheticProvider)
    return provider.requests


def _planning_time(subject: Subject, calendar: TradingCalendar) -> Result:
    async def caps_of() -> Any:
        async with httpx.AsyncClient() as client:
            return subject.make(client, "http://127.0.0.1:9").capabilities

    caps = asyncio.run(caps_of())

    def once() -> None:
        for tf in TIMEFRAMES:
            gaps = find_gaps(WINDOW, [], calendar, extended=caps.extended_hours)
            plan_slices(gaps, tf, caps, calendar, now=END)

    once()  # warm-up: numpy/pandas caches
    best = float("inf")
    for _ in range(PLAN_REPEATS):
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return Result(
        "providers",
        f"{subject.name}: plan 2y m1+m15+h1+d1 (1 symbol)",
        best * 1000,
        "ms",
        target="reference",
        extra={"best_of": PLAN_REPEATS},
    )


def requests_vs_ideal() -> list[Result]:
    calendar = get_calendar("XNYS")
    truth = Truth(calendar)
    results: list[Result] = []
    for subject in _subjects():
        results.append(_planning_time(subject, calendar))
        for tf in TIMEFRAMES:
            results.append(_case(subject, tf, calendar, truth))
    return results


# -- 2. hydration under a shared rate limit ----------------------------------------------------


class RateLimitedServer(FakeServer):
    """A :class:`FakeServer` that answers 429 when more than ``limit`` requests arrive within 1 s.

    Every arrival counts, answered or refused (a strict server). ``arrivals``
    keeps every arrival time (monotonic seconds) and whether it was refused.
    """

    def __init__(self, wire: Wire, limit: int, window_s: float = 1.0, *, keep_alive: bool = True) -> None:
        super().__init__(wire, keep_alive=keep_alive, steady=True)
        self.limit = limit
        self.window_s = window_s
        self.refused = 0
        self.arrivals: list[tuple[float, bool]] = []
        self._recent: collections.deque[float] = collections.deque()
        self._gate = threading.Lock()

    def _serve(self, handler: Any) -> None:
        with self._gate:
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - self.window_s:
                self._recent.popleft()
            self._recent.append(now)
            over = len(self._recent) > self.limit
            self.arrivals.append((now, over))
            if over:
                self.refused += 1
        if over:
            body = json.dumps({"status": "ERROR", "error": "rate limit exceeded"}).encode()
            handler._send(429, body, {})
            return
        super()._serve(handler)

    def max_in_window(self) -> int:
        """Most arrivals within any ``window_s`` (what the server judged by)."""
        return most_in_any_window((t for t, _ in self.arrivals), self.window_s)


def _worker_env(db_url: str, server_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARFILL_")}
    env.update(
        {
            "BARFILL_DATABASE_URL": db_url,
            "BARFILL_POLYGON_API_KEY": KEY,
            "BARFILL_POLYGON_BASE_URL": server_url,
            "BARFILL_POLYGON_RATE_LIMIT": f"{RATE_N}/1",
            "BARFILL_WORKER_POLL_S": "0.05",
            "BARFILL_HISTORICAL_PROVIDERS": '["polygon"]',
        }
    )
    return env


@contextlib.contextmanager
def _workers(env: dict[str, str], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the worker processes; on exit SIGTERM them and make sure they are gone."""
    barfill = Path(sys.executable).parent / "barfill"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(RATE_WORKERS):
            err = (logs / f"worker{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [str(barfill), "worker", "--concurrency", str(RATE_CONCURRENCY)],
                    env=env,
                    cwd=logs,  # no ./barfill.toml from the repo can leak in
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
            err.close()
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_started(procs: list[subprocess.Popen[bytes]], logs: Path, timeout_s: float = 60.0) -> None:
    """Until every worker has said it runs (then it is idle: the queue is empty)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        texts = [(logs / f"worker{i}.log").read_text(errors="replace") for i in range(len(procs))]
        for p, text in zip(procs, texts, strict=True):
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited early ({p.returncode}): {text[-2000:]}")
        if all("concurrency" in t for t in texts):
            return
        time.sleep(0.1)
    raise RuntimeError("workers did not start in time")


def _worker_stats(logs: Path, n: int) -> dict[str, int]:
    """Sums of the counters the workers print when they stop (``WorkerStats(claimed=..., ...)``)."""
    totals: collections.Counter[str] = collections.Counter()
    for i in range(n):
        text = (logs / f"worker{i}.log").read_text(errors="replace")
        for stats in re.findall(r"WorkerStats\((.*?)\)", text, flags=re.S):
            for key, value in re.findall(r"(\w+)=(\d+)", stats):
                totals[key] += int(value)
    return {k: totals[k] for k in ("claimed", "released", "requests", "succeeded", "retried", "failed")}


def _ensure_child(db_url: str, server_url: str, symbols: list[str], start: str, end: str, pipe: Any) -> None:
    """Build the app, say ready, run ``ensure`` on "go" and send back (queued, monotonic end).

    ``ensure`` runs in a process of its own, as ``barfill ensure`` or the HTTP
    API would: in the bench's process its CPU would hold the GIL that the fake
    server's threads need to stamp arrivals, and the server would see late,
    bunched arrivals that no real provider sees.
    """
    from barfill.bootstrap import build
    from barfill.config import load_settings
    from barfill.service.ensure import ensure

    settings = load_settings(
        database_url=db_url,
        polygon_api_key=KEY,
        polygon_base_url=server_url,
        polygon_rate_limit=f"{RATE_N}/1",
    )
    app = build(settings, providers=None)
    try:
        pipe.send("ready")
        pipe.recv()
        report = ensure(app, symbols, "d1", start=start, end=end)
        pipe.send((sum(r.slices_queued for r in report.results), time.monotonic()))
    finally:
        app.close()


def hydration_under_rate_limit() -> list[Result]:
    # Imported here: building the app pulls in the whole service layer.
    from barfill.bootstrap import build
    from barfill.config import load_settings

    calendar = get_calendar("XNYS")
    wire = PolygonWire(Truth(calendar), KEY)
    wire.page_size = 50_000
    symbols = [f"S{i:03d}" for i in range(RATE_SYMBOLS)]
    start, end = "2026-01-02", "2026-11-20"
    server = RateLimitedServer(wire, RATE_N)
    with (
        tempfile.TemporaryDirectory() as tmp,
        scratch_database("postgresql") as db,
        server,
    ):
        logs = Path(tmp)
        env = _worker_env(db.url, server.url)
        with _workers(env, logs) as procs:
            _wait_started(procs, logs)
            time.sleep(1.0)  # past start-up: every worker polls an empty queue
            settings = load_settings(
                database_url=db.url,
                polygon_api_key=KEY,
                polygon_base_url=server.url,
                polygon_rate_limit=f"{RATE_N}/1",
            )
            app = build(settings, providers=None)
            ctx = mp.get_context("spawn")
            ours, theirs = ctx.Pipe()
            child = ctx.Process(target=_ensure_child, args=(db.url, server.url, symbols, start, end, theirs))
            child.start()
            try:
                if not ours.poll(60) or ours.recv() != "ready":
                    raise RuntimeError("the ensure process did not start")
                t0 = time.monotonic()  # the server stamps arrivals on this clock too (system-wide)
                ours.send("go")
                if not ours.poll(120):
                    raise RuntimeError("ensure did not answer in 120 s")
                queued, ensure_end = ours.recv()
                ensure_s = ensure_end - t0
                if queued != len(symbols):
                    raise RuntimeError(f"expected one d1 slice per symbol, ensure queued {queued}")
                deadline = t0 + 120
                while True:
                    counts = app.queue.counts()
                    if counts["queued"] == 0 and counts["running"] == 0:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"hydration did not finish in 120 s: {counts}")
                    time.sleep(0.01)
                wall = time.monotonic() - t0
            finally:
                child.join(timeout=30)
                if child.is_alive():
                    child.kill()
                app.close()
        exit_codes = [p.returncode for p in procs]
        stats = _worker_stats(logs, len(procs))
    arrivals = len(server.arrivals)
    answered = arrivals - server.refused
    ideal = answered / RATE_N
    return [
        Result(
            "providers",
            f"hydrate {RATE_SYMBOLS} symbols d1, 4 workers x 4, polygon {RATE_N}/s: wall vs ideal",
            wall,
            "s",
            ideal,
            wall / ideal,
            f"<= {TARGET_WALL}",
            {
                "slices_queued": queued,
                "requests_answered": answered,
                "ideal": f"requests/{RATE_N} s; strict bound (first request free) "
                f"{(answered - 1) / RATE_N:.2f} s",
                "ensure_s": round(ensure_s, 3),
                "wall_after_ensure_returned_s": round(wall - ensure_s, 3),
                "first_request_at_s": round(server.arrivals[0][0] - t0, 3) if arrivals else None,
                "last_request_at_s": round(server.arrivals[-1][0] - t0, 3) if arrivals else None,
                "achieved_rate_per_s": round(
                    (arrivals - 1) / (server.arrivals[-1][0] - server.arrivals[0][0]), 2
                )
                if arrivals > 1
                else None,
                "final_counts": counts,
                "server_max_in_1s": server.max_in_window(),
                "worker_exit_codes": exit_codes,
                "worker_stats": stats,
            },
        ),
        Result(
            "providers",
            f"hydrate {RATE_SYMBOLS} symbols d1: 429s from the server",
            float(server.refused),
            "429s",
            target="<= 0",
            extra={"requests_seen": arrivals},
        ),
    ]


def run() -> list[Result]:
    return [*requests_vs_ideal(), *hydration_under_rate_limit()]
