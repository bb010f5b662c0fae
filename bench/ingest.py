"""Unthrottled hydration: committed bars/s against a raw bulk insert, and the worker's peak memory.

4 symbols x 2 years (730 days ending 2026-11-20 00:00 New York) of m1 from a
local Polygon-wire server, on a scratch SQLite and a scratch PostgreSQL
database. ``ensure`` plans and queues the slices first; every answer the
worker will ask for (pages of up to 50,000 bars, extended hours included, as
Polygon sends them) is then rendered to bytes *before* the clock starts, so
the server only looks a page up and writes it. One ``barfill worker --drain``
process (default concurrency and derivations) hydrates the window.

* **Committed bars/s**: m1 bars stored ÷ seconds from the server's first
  request until no slice is queued or running (worker start-up is not
  counted). The baseline is the raw bulk insert of the same bars into an
  unindexed table in the same database, in the same run
  (:func:`bench.store.raw_insert_rate`: ``executemany`` on SQLite, binary
  ``COPY`` on PostgreSQL). Target: ratio >= 0.5.
* **Worker peak RSS**: the worker process's ``VmHWM`` (its resident
  high-water mark since ``exec``), read from ``/proc`` every 20 ms until it
  exits. Not ``ru_maxrss``: that one counts the forked child before ``exec``,
  which shares the bench's own pages (the pre-rendered answers). Target:
  <= 200 MB. Shown beside it (``idle_mb``): the resident size of a
  ``barfill worker`` that has started and found nothing to do, so the
  growth while hydrating reads as peak minus idle.

Where the CPU goes, in the same window (``cpu_*_s``, CPU seconds): the
worker process, this bench process (the fake server's threads, almost all
of it), the database server (PostgreSQL's processes; 0 on SQLite, whose work
is the worker's) and the whole machine (every core's busy time, from
``/proc/stat``). ``busy`` is the machine's share of its cores kept busy;
``cpu_bound_ratio`` is the ratio the run would reach if that same CPU work
were spread perfectly over every core: close to ``ratio`` with ``busy`` near
1 means the run was bound by the CPU the parts need, not by waiting.

Where the time goes, beside the rate: ``worker_cpu_s`` (the worker's CPU
seconds in the window), ``commit_s`` (seconds inside its commit
transactions, from the stats it prints as it stops) and ``commit_cpu_s``
(those commits' thread CPU, the database's own work included on SQLite).
On SQLite (one commit at a time) ``commit_s`` close to ``seconds`` means the
single writer set the pace, and ``commit_s - commit_cpu_s`` is how long the
committing thread was ready but not running (the GIL held by fetching and
parsing, or a busy machine). On PostgreSQL commits overlap (one per slice in
flight) and the server does the writing: ``commit_s`` sums them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.store.bar_reads import read_bars
from barfill.store.bars import count_bars
from barfill.store.db import Database
from barfill.store.schema import job_runs, symbols
from bench.common import Result, scratch_database
from bench.store import raw_insert_rate

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # the Polygon wire lives with the integration tests
    sys.path.insert(0, str(_ROOT))

from tests.integration.providers.servers import FakeServer, PolygonWire, Truth  # noqa: E402

NY = ZoneInfo("America/New_York")
END = int(datetime(2026, 11, 20, tzinfo=NY).timestamp())
START = END - 730 * 86_400
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN")
KEY = "bench-ingest-key"
PAGE = 50_000
TARGET_RATIO = 0.5
TARGET_RSS_MB = 200.0
CORES = os.cpu_count() or 1


class CpuSnapshot(NamedTuple):
    """CPU seconds used so far: by the whole machine, this process, and PostgreSQL's processes."""

    machine: float
    bench: float
    database: float

    @classmethod
    def take(cls) -> CpuSnapshot:
        tick = os.sysconf("SC_CLK_TCK")
        # cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        machine = (sum(fields) - fields[3] - fields[4]) / tick
        return cls(machine, time.process_time(), _postgres_jiffies() / tick)

    def until(self, later: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(*(b - a for a, b in zip(self, later, strict=True)))


def _postgres_jiffies() -> int:
    """utime + stime of every live PostgreSQL process, plus what its exited children used
    (a backend that exits is added to the postmaster's cutime/cstime when it is reaped)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        if comm == "postgres":  # fields after the comm: state is rest[0], utime rest[11] .. cstime rest[14]
            total += sum(int(x) for x in rest[11:15])
    return total


class PrerenderedServer(FakeServer):
    """Answers from pages rendered ahead; counts requests and stamps the first one (monotonic)."""

    def __init__(self, wire: PolygonWire) -> None:
        super().__init__(wire, keep_alive=True, steady=True)
        self.pages: dict[tuple[str, str | None], bytes] = {}
        self.first_at: float | None = None
        self.first_cpu: CpuSnapshot | None = None
        self.requests = 0
        self.misses = 0
        self._count = threading.Lock()

    def render(self, path: str) -> int:
        """Render every page of ``path`` (following ``next_url``); returns bars rendered."""
        headers = {"authorization": f"Bearer {KEY}"}
        cursor: str | None = None
        bars = 0
        while True:
            query = {"adjusted": "false"} if cursor is None else {"cursor": cursor, "adjusted": "false"}
            answer = self.wire.answer(path, query, headers)
            self.pages[(path, cursor)] = orjson.dumps(answer.body)
            bars += len(answer.body.get("results", ()))
            next_url = answer.body.get("next_url")
            if not next_url:
                return bars
            cursor = parse_qs(urlsplit(next_url).query)["cursor"][0]

    def _serve(self, handler: Any) -> None:
        with self._count:
            if self.first_at is None:
                self.first_at = time.monotonic()
                self.first_cpu = CpuSnapshot.take()
            self.requests += 1
        split = urlsplit(handler.path)
        cursor = parse_qs(split.query).get("cursor", [None])[0]
        body = self.pages.get((unquote(split.path), cursor))
        if body is None:  # not planned ahead: rendered now (counted, it costs the clock)
            with self._count:
                self.misses += 1
            super()._serve(handler)
            return
        handler._send(200, body, {})


def _planned_paths(db: Database) -> list[str]:
    query = sa.select(symbols.c.ticker, job_runs.c.start, job_runs.c.end).join(
        symbols, symbols.c.id == job_runs.c.symbol_id
    )
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [f"/v2/aggs/ticker/{t}/range/1/minute/{s * 1000}/{e * 1000 - 1}" for t, s, e in rows]


def _worker_env(db_url: str, server_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARFILL_")}
    env.update(
        {
            "BARFILL_DATABASE_URL": db_url,
            "BARFILL_POLYGON_API_KEY": KEY,
            "BARFILL_POLYGON_BASE_URL": server_url,
            "BARFILL_POLYGON_RATE_LIMIT": "1000/1",
            "BARFILL_WORKER_POLL_S": "0.05",
            "BARFILL_HISTORICAL_PROVIDERS": '["polygon"]',
        }
    )
    return env


class _PeakRss:
    """The highest ``VmHWM`` (KiB) seen in ``/proc/PID/status`` while the process lives,
    and its CPU seconds (user + system, ``/proc/PID/stat``) over time, to tell how
    much of the window the worker spent computing (one process: its threads share a GIL).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kib = 0
        self.cpu: list[tuple[float, float]] = []  # (monotonic, CPU seconds so far)
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                stat = Path(f"/proc/{self.pid}/stat").read_text()
            except OSError:
                return
            if "VmHWM:" not in status:  # a zombie: its memory is gone
                return
            self.kib = max(self.kib, int(status.split("VmHWM:")[1].split()[0]))
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
            self.cpu.append((time.monotonic(), (int(fields[11]) + int(fields[12])) / self._tick))
            time.sleep(0.02)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the process used between two monotonic instants (nearest samples)."""

        def at(when: float) -> float:
            before = [cpu for t, cpu in self.cpu if t <= when]
            return before[-1] if before else 0.0

        return at(end) - at(start)

    def result(self) -> int:
        self._thread.join()
        return self.kib


def _idle_rss_kib(db: Database, server: PrerenderedServer, logs: Path) -> int:
    """``VmRSS`` (KiB) of a ``barfill worker`` once it has started and polled an empty queue."""
    barfill = Path(sys.executable).parent / "barfill"
    proc = subprocess.Popen(
        [str(barfill), "worker"],
        env=_worker_env(db.url, server.url),
        cwd=logs,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # "worker <id>: concurrency N" once it runs its loop
            if b"concurrency" in line:
                break
        time.sleep(1.0)  # a few empty polls
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _hydrate(
    db: Database, server: PrerenderedServer, logs: Path
) -> tuple[float, int, dict[str, int], float, CpuSnapshot]:
    """Run one draining worker; returns (seconds from first request to empty queue, peak RSS KiB,
    counts, worker CPU seconds in that window, the rest of the CPU used in that window)."""
    from barfill.store.queue import SqlQueue

    queue = SqlQueue(db)
    barfill = Path(sys.executable).parent / "barfill"
    err = (logs / "worker.log").open("wb")
    proc = subprocess.Popen(
        [str(barfill), "worker", "--drain"],
        env=_worker_env(db.url, server.url),
        cwd=logs,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    err.close()
    peak = _PeakRss(proc.pid)
    try:
        deadline = time.monotonic() + 600
        while True:
            counts = queue.counts()
            if counts.get("queued", 0) == 0 and counts.get("running", 0) == 0:
                done_at = time.monotonic()
                done_cpu = CpuSnapshot.take()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (logs / "worker.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker stopped or timed out with {counts}: {log}")
            time.sleep(0.02)
        status = proc.wait(timeout=60)
    finally:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()
    if server.first_at is None or server.first_cpu is None:
        raise RuntimeError("the worker made no request")
    if status != 0:
        raise RuntimeError(f"worker exit status {status}: {(logs / 'worker.log').read_text()[-3000:]}")
    rss = peak.result()
    cpu = server.first_cpu.until(done_cpu)
    return done_at - server.first_at, rss, counts, peak.cpu_between(server.first_at, done_at), cpu


def _commit_stats(log: str) -> dict[str, float]:
    """``commit_s`` and ``commit_cpu_s`` from the stats a stopping worker prints (left out if absent)."""
    found = {k: re.search(rf"\b{k}=([0-9.e+-]+)", log) for k in ("commit_s", "commit_cpu_s")}
    return {k: round(float(m.group(1)), 2) for k, m in found.items() if m is not None}


def _stored_chunks(db: Database, ids: dict[str, int]) -> list[tuple[int, BarBatch]]:
    """The m1 bars the worker committed, in chunks of ``PAGE`` rows, for the raw baseline."""
    chunks: list[tuple[int, BarBatch]] = []
    with db.read() as conn:
        for ticker in SYMBOLS:
            batch = read_bars(conn, ids[ticker], Timeframe.m1, START, END, layers=("historical",))
            chunks.extend((ids[ticker], batch.take(slice(i, i + PAGE))) for i in range(0, len(batch), PAGE))
    return chunks


def _measure(kind: str) -> list[Result]:
    from barfill.bootstrap import build
    from barfill.config import load_settings
    from barfill.service.ensure import ensure

    calendar = get_calendar("XNYS")
    wire = PolygonWire(Truth(calendar), KEY)
    wire.page_size = PAGE
    server = PrerenderedServer(wire)
    with tempfile.TemporaryDirectory() as tmp, scratch_database(kind) as db, server:
        idle_kib = _idle_rss_kib(db, server, Path(tmp))  # before anything is queued
        settings = load_settings(
            database_url=db.url,
            polygon_api_key=KEY,
            polygon_base_url=server.url,
            historical_providers=["polygon"],
        )
        app = build(settings, providers=None)
        try:
            ensure(app, list(SYMBOLS), "m1", start=START, end=END)
        finally:
            app.close()
        t0 = time.perf_counter()
        paths = _planned_paths(db)
        served = sum(server.render(p) for p in paths)
        render_s = time.perf_counter() - t0
        page_mb = sum(len(b) for b in server.pages.values()) / 1e6
        seconds, rss_kib, counts, cpu_s, cpu = _hydrate(db, server, Path(tmp))
        commits = _commit_stats((Path(tmp) / "worker.log").read_text(errors="replace"))
        with db.read() as conn:
            ids = {
                str(t): int(i)
                for t, i in conn.execute(sa.select(symbols.c.ticker, symbols.c.id)).all()
                if t in SYMBOLS
            }
            committed = count_bars(conn, timeframe=Timeframe.m1)
            derived = count_bars(conn) - committed
        raw = raw_insert_rate(db, _stored_chunks(db, ids))
    rate = committed / seconds
    rss_mb = rss_kib * 1024 / 1e6
    extra = {
        "slices": len(paths),
        "requests": server.requests,
        "requests_not_prerendered": server.misses,
        "bars_served": served,
        "pages_mb": round(page_mb, 1),
        "render_s": round(render_s, 2),
        "seconds": round(seconds, 2),
        "worker_cpu_s": round(cpu_s, 2),  # ~seconds: the one worker process computed all along
        **commits,
        "cpu_bench_s": round(cpu.bench, 2),
        "cpu_database_s": round(cpu.database, 2),
        "cpu_machine_s": round(cpu.machine, 2),
        "busy": round(cpu.machine / (CORES * seconds), 2),
        "cpu_bound_ratio": round(committed / (cpu.machine / CORES) / raw, 3),
        "derived_bars": derived,
        "final_counts": counts,
    }
    return [
        Result(
            "ingest",
            f"{kind}: hydrate {len(SYMBOLS)} symbols x 2 years m1 (polygon wire, unthrottled): committed",
            rate,
            "bars/s",
            baseline=raw,
            ratio=rate / raw,
            target=f">= {TARGET_RATIO} x raw bulk insert",
            extra=extra,
        ),
        Result(
            "ingest",
            f"{kind}: worker peak RSS while hydrating",
            rss_mb,
            "MB",
            target=f"<= {TARGET_RSS_MB:.0f} MB",
            extra={"idle_mb": round(idle_kib * 1024 / 1e6, 1)},
        ),
    ]


def run() -> list[Result]:
    return [r for kind in ("sqlite", "postgresql") for r in _measure(kind)]
