"""Real worker processes against one queue: nothing lost, nothing done twice, SIGKILL survived.

Each worker is this file run as a script (``python test_queue_processes.py ...``):
its own interpreter and its own :class:`Database` opened from the URL. A
worker appends the id of every slice it completed to its own file, flushed at
once, so the parent can count completions even of a worker it killed.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from barfill.domain.bars import BarBatch
from barfill.domain.slices import ClaimedSlice, CoverageSpan, NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.errors import LeaseLost
from barfill.store.bar_reads import read_bars
from barfill.store.bars import count_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.queue import SqlQueue
from barfill.store.schema import job_runs
from barfill.store.symbols import ensure_symbols

T0 = 1_700_000_400
HOUR = 3_600
WAIT_S = 240  # a condition's generous limit on a loaded 2-core box, not a speed target
pytestmark = pytest.mark.timeout(3 * WAIT_S)


def _bar(c: ClaimedSlice) -> BarBatch:
    """One bar unique to the slice: at its start, priced with its id."""
    ts = np.array([c.start], dtype=np.int64)
    v = np.array([float(c.id)])
    return BarBatch(c.symbol, c.timeframe, c.provider, ts, v, v + 1, v - 1, v, v)


def _work(url: str, out: Path, worker_id: str, lease_s: float, hold: int) -> None:
    """Claim and complete until the queue is empty; with ``hold``, claim that many and freeze."""
    db = Database(url)
    queue = SqlQueue(db)
    with out.open("a") as log:
        if hold:
            claimed = queue.claim(worker_id, hold, lease_s)
            for c in claimed[: hold // 2]:
                queue.complete(c, [_bar(c)], [CoverageSpan(c.start, c.end)])
                log.write(f"{c.id}\n")
                log.flush()
            # Written whole, then renamed: the parent polls for the name and must never read it half-written.
            staging = Path(f"{out}.ready.tmp")
            staging.write_text(" ".join(str(c.id) for c in claimed[hold // 2 :]))
            os.replace(staging, f"{out}.ready")
            time.sleep(WAIT_S * 2)  # killed long before this ends
            return
        while True:
            claimed = queue.claim(worker_id, 4, lease_s)
            if not claimed:
                queue.reap()
                counts = queue.counts()
                if counts["queued"] == 0 and counts["running"] == 0:
                    return
                time.sleep(0.05)
                continue
            for c in claimed:
                try:
                    queue.complete(c, [_bar(c)], [CoverageSpan(c.start, c.end)])
                except LeaseLost:
                    log.write(f"lost {c.id}\n")
                else:
                    log.write(f"{c.id}\n")
                log.flush()


def _setup(db: Database, n: int) -> int:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        did, _ = upsert_definition(conn, sid, "h1", window_days=365)
    queue = SqlQueue(db)
    queue.enqueue(
        [NewSlice(did, sid, Timeframe.h1, T0 + i * HOUR, T0 + (i + 1) * HOUR, "synthetic") for i in range(n)]
    )
    return sid


def _spawn(db: Database, tmp_path: Path, name: str, lease_s: float, hold: int = 0) -> subprocess.Popen[bytes]:
    out = tmp_path / f"{name}.log"
    with (tmp_path / f"{name}.err").open("wb") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, __file__, db.url, str(out), name, str(lease_s), str(hold)],
            stdout=err,
            stderr=subprocess.STDOUT,
        )


def _wait(procs: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
                q.wait()
            pytest.fail("workers did not finish in time")
    errors = {f.name: f.read_text() for f in tmp_path.glob("*.err") if f.read_text().strip()}
    assert [p.returncode for p in procs] == [0] * len(procs), errors


def _completions(tmp_path: Path, names: list[str]) -> collections.Counter[int]:
    done: collections.Counter[int] = collections.Counter()
    for name in names:
        path = tmp_path / f"{name}.log"
        for line in path.read_text().splitlines() if path.exists() else []:
            if not line.startswith("lost"):
                done[int(line)] += 1
    return done


def _assert_all_done_once(db: Database, sid: int, n: int, done: collections.Counter[int]) -> None:
    assert len(done) == n
    assert max(done.values()) == 1, [i for i, k in done.items() if k > 1]
    counts = SqlQueue(db).counts()
    assert counts == {"queued": 0, "running": 0, "succeeded": n, "failed": 0, "cancelled": 0}
    with db.read() as conn:
        assert count_bars(conn) == n
        bars = read_bars(conn, sid, "h1", T0, T0 + n * HOUR)
        assert read_coverage(conn, sid, "h1") == [(T0, T0 + n * HOUR)]
    # Every bar was written by its own slice's completion: priced with that slice's id.
    assert sorted(bars.close.astype(int).tolist()) == sorted(done)
    assert len(np.unique(bars.ts)) == n


@pytest.mark.parametrize("n", [300, pytest.param(2_000, marks=pytest.mark.slow)])
def test_workers_complete_every_slice_exactly_once(db: Database, tmp_path: Path, n: int) -> None:
    workers = 8 if db.is_postgres else 4
    sid = _setup(db, n)
    names = [f"w{i}" for i in range(workers)]
    procs = [_spawn(db, tmp_path, name, lease_s=30) for name in names]
    _wait(procs, tmp_path)
    done = _completions(tmp_path, names)
    _assert_all_done_once(db, sid, n, done)
    # The work was shared, not done by one process while the others slept.
    per_worker = [len((tmp_path / f"{name}.log").read_text().splitlines()) for name in names]
    assert sum(1 for k in per_worker if k > 0) >= 2


def test_killed_workers_slices_are_reclaimed_and_done_once(db: Database, tmp_path: Path) -> None:
    n = 200
    lease_s = 1.5
    sid = _setup(db, n)
    victim = _spawn(db, tmp_path, "victim", lease_s=lease_s, hold=10)
    try:
        ready = tmp_path / "victim.log.ready"
        deadline = time.monotonic() + WAIT_S
        while not ready.exists() and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), (tmp_path / "victim.err").read_text()
        held = [int(i) for i in ready.read_text().split()]
        assert len(held) == 5
    finally:  # a failed check must not leave the frozen victim running into the next test
        victim.kill()
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert SqlQueue(db).counts()["running"] == 5
    dead_leases = _column(db, job_runs.c.lease_until, held)

    names = ["s0", "s1", "s2"] if db.is_postgres else ["s0", "s1"]
    procs = [_spawn(db, tmp_path, name, lease_s=lease_s) for name in names]
    _wait(procs, tmp_path)
    # They had to wait for the leases to lapse: each held slice was claimed again (database
    # clock) only after the dead worker's lease on it ran out.
    restarted = _column(db, job_runs.c.started_at, held)
    assert all(restarted[i] >= dead_leases[i] for i in held)
    victims = _completions(tmp_path, ["victim"])
    assert len(victims) == 5 and not set(victims) & set(held)
    survivors = _completions(tmp_path, names)
    assert set(held) <= set(survivors)
    _assert_all_done_once(db, sid, n, victims + survivors)
    queue = SqlQueue(db)
    with db.read() as conn:
        rows = conn.execute(job_runs.select().with_only_columns(job_runs.c.id, job_runs.c.attempts))
        attempts = {int(i): int(a) for i, a in rows}
    assert all(attempts[i] == 2 for i in held)
    assert queue.errors() == []


def _column(db: Database, column: sa.Column[Any], ids: list[int]) -> dict[int, float]:
    with db.read() as conn:
        rows = conn.execute(sa.select(job_runs.c.id, column).where(job_runs.c.id.in_(ids)))
        return {int(i): float(v) for i, v in rows}


if __name__ == "__main__":
    _url, _out, _name, _lease, _hold = sys.argv[1:6]
    _work(_url, Path(_out), _name, float(_lease), int(_hold))
