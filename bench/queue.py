"""Queue throughput: slices claimed and completed per second by several worker processes.

Each completion is the real thing minus the provider: the lease-checked status
change plus a coverage span, in one transaction, with zero bars. Two ways to
complete: one :meth:`SqlQueue.complete` (one transaction) per slice, or one
:meth:`SqlQueue.complete_many` (one transaction) per claimed batch. Workers are
separate processes (spawned, each opening its own :class:`Database`) and start
together on an event, so interpreter start-up is not timed. Slices are spread
over several symbols, as a real backlog is; claims take ``batch`` slices at a
time. The baseline is the same run with one slice per claim, completed one by one.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from barfill.domain.slices import CoverageSpan, NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.queue import SqlQueue
from barfill.store.symbols import ensure_symbols
from bench.common import Result, scratch_database

T0 = 1_600_000_200
STEP = 3_600
TARGET_PG = 5_000.0


def _worker(url: str, batch: int, many: bool, go: Any, results: Any) -> None:
    db = Database(url)
    queue = SqlQueue(db)
    done = 0
    go.wait()
    while True:
        claimed = queue.claim(f"bench-{mp.current_process().pid}", batch, 60)
        if not claimed:
            counts = queue.counts()
            if counts["queued"] == 0 and counts["running"] == 0:
                break
            continue
        if many:
            result = queue.complete_many([(c, [], [CoverageSpan(c.start, c.end)]) for c in claimed])
            assert not result.lost, result.lost
            done += len(result.done)
            continue
        for c in claimed:
            queue.complete(c, [], [CoverageSpan(c.start, c.end)])
            done += 1
    results.put((done, time.perf_counter()))
    db.dispose()


def _enqueue(db: Database, slices: int, symbols: int) -> None:
    with db.write() as conn:
        ids = ensure_symbols(conn, [f"S{i:03d}" for i in range(symbols)])
        defs = [upsert_definition(conn, sid, "h1", window_days=3650)[0] for sid in ids.values()]
    sids = list(ids.values())
    per = slices // symbols
    SqlQueue(db).enqueue(
        [
            NewSlice(defs[k], sids[k], Timeframe.h1, T0 + i * STEP, T0 + (i + 1) * STEP, "synthetic")
            for i in range(per)
            for k in range(symbols)
        ]
    )


def measure(
    kind: str, *, processes: int, slices: int, batch: int, many: bool = False, symbols: int = 50
) -> float:
    """Slices per second for ``processes`` workers draining ``slices`` queued slices.

    ``many``: complete each claimed batch with one ``complete_many`` instead of
    one ``complete`` per slice.
    """
    ctx = mp.get_context("spawn")
    with scratch_database(kind) as db:
        _enqueue(db, slices, symbols)
        go = ctx.Event()
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(db.url, batch, many, go, results)) for _ in range(processes)
        ]
        for p in procs:
            p.start()
        time.sleep(1.5 + 0.3 * processes)  # let every interpreter finish importing
        start = time.perf_counter()
        go.set()
        outcomes = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        finished = max(t for _, t in outcomes)
        total = sum(n for n, _ in outcomes)
        counts = SqlQueue(db).counts()
    assert total == slices and counts["succeeded"] == slices, (total, counts)
    return float(slices / (finished - start))


def run() -> list[Result]:
    out: list[Result] = []
    for kind, slices, target in (("postgresql", 20_000, TARGET_PG), ("sqlite", 10_000, None)):
        one = measure(kind, processes=4, slices=slices // 4, batch=1)
        batched = measure(kind, processes=4, slices=slices, batch=50)
        many = measure(kind, processes=4, slices=slices, batch=50, many=True)
        baseline = "claim(1)+complete, same processes"
        out.append(
            Result(
                suite="queue",
                name=f"{kind}: claim(50)+complete, 4 processes",
                value=batched,
                unit="slices/s",
                baseline=one,
                ratio=batched / one,
                target="reference",
                extra={"slices": slices, "baseline": baseline},
            )
        )
        out.append(
            Result(
                suite="queue",
                name=f"{kind}: claim(50)+complete_many(50), 4 processes",
                value=many,
                unit="slices/s",
                baseline=one,
                ratio=many / one,
                target=f">= {target:,.0f} slices/s" if target else "reference",
                extra={"slices": slices, "baseline": baseline, "vs claim(50)+complete": many / batched},
            )
        )
    return out
