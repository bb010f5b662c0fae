"""The slice queue on both databases: claim, leases, completion, failure, operator actions."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from barfill.domain.backoff import backoff_delay
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.slices import ClaimedSlice, CoverageSpan, NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, LeaseLost
from barfill.store.bar_reads import read_bars
from barfill.store.bars import count_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.queue import Progress, SqlQueue
from barfill.store.schema import job_runs
from barfill.store.symbols import ensure_symbols
from barfill.testing.clock import SimClock

T0 = 1_700_000_400  # a multiple of 3600
HOUR = 3_600


def _setup(db: Database, ticker: str = "AAPL") -> tuple[int, int]:
    with db.write() as conn:
        sid = ensure_symbols(conn, [ticker])[ticker.upper()]
        did, _ = upsert_definition(conn, sid, "h1", window_days=30)
    return sid, did


def _slices(
    did: int,
    sid: int,
    n: int,
    *,
    first: int = 0,
    provider: str = "synthetic",
    priority: int = 0,
    max_attempts: int = 5,
) -> list[NewSlice]:
    return [
        NewSlice(did, sid, Timeframe.h1, T0 + i * HOUR, T0 + (i + 1) * HOUR, provider, priority, max_attempts)
        for i in range(first, first + n)
    ]


def _batch(claimed: ClaimedSlice, value: float = 10.0, symbol: str | None = None) -> BarBatch:
    ts = np.array([claimed.start], dtype=np.int64)
    v = np.array([value])
    return BarBatch(
        symbol or claimed.symbol, claimed.timeframe, claimed.provider, ts, v, v + 1, v - 1, v, v * 10
    )


def _span(claimed: ClaimedSlice) -> list[CoverageSpan]:
    return [CoverageSpan(claimed.start, claimed.end)]


def _row(db: Database, slice_id: int) -> sa.Row[Any]:
    with db.read() as conn:
        return conn.execute(sa.select(job_runs).where(job_runs.c.id == slice_id)).one()


def _expire_leases(db: Database) -> None:
    with db.write() as conn:
        conn.execute(sa.update(job_runs).where(job_runs.c.status == "running").values(lease_until=0.0))


@pytest.fixture
def queue(db: Database) -> SqlQueue:
    return SqlQueue(db, backoff_base_s=10.0, backoff_cap_s=600.0, rng=random.Random(7))


def test_enqueue_is_idempotent(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    first = queue.enqueue(_slices(did, sid, 5))
    assert (first.queued, first.inserted, first.already_pending) == (5, 5, 0)
    again = queue.enqueue(_slices(did, sid, 5))
    assert (again.queued, again.already_pending, again.pending_by_definition) == (0, 5, {did: 5})
    assert queue.enqueue(_slices(did, sid, 5) + _slices(did, sid, 5)).queued == 0
    more = queue.enqueue(_slices(did, sid, 6))
    assert (more.inserted, more.already_pending, more.queued_by_definition) == (1, 5, {did: 1})
    assert queue.counts() == {"queued": 6, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    before = db.now()
    row = _row(db, queue.claim("w", 1, 30)[0].id)
    assert row.not_before <= before


def test_enqueue_without_revive_requeues_only_succeeded(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 4))
    done, failed, cancelled, running = queue.claim("w", 4, 30)
    queue.complete(done, [_batch(done)], _span(done))
    queue.fail(failed, "bad_payload", "nope", retryable=False)
    queue.cancel([cancelled.id])
    result = queue.enqueue(_slices(did, sid, 4))
    assert (result.requeued, result.revived, result.already_pending, result.held) == (1, 0, 1, 2)
    assert _row(db, failed.id).status == "failed"
    assert _row(db, cancelled.id).status == "cancelled"
    assert _row(db, running.id).status == "running"
    requeued = _row(db, done.id)
    assert (requeued.status, requeued.attempts, requeued.lease_token, requeued.finished_at) == (
        "queued",
        0,
        None,
        None,
    )
    again = queue.claim("w2", 5, 30)
    assert [c.id for c in again] == [done.id]
    assert again[0].attempts == 1


def test_claim_returns_the_slice_with_its_own_lease(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db, "msft")
    queue.enqueue(_slices(did, sid, 3))
    claimed = queue.claim("worker-1", 10, 30)
    assert len(claimed) == 3
    tokens = {c.lease_token for c in claimed}
    assert len(tokens) == 3
    assert all(uuid.UUID(t).version == 4 and str(uuid.UUID(t)) == t for t in tokens)
    first = claimed[0]
    assert (first.symbol, first.symbol_id, first.definition_id, first.timeframe) == (
        "MSFT",
        sid,
        did,
        Timeframe.h1,
    )
    assert (first.attempts, first.max_attempts, first.provider) == (1, 5, "synthetic")
    row = _row(db, first.id)
    now = db.now()
    assert row.status == "running" and row.worker_id == "worker-1"
    assert now - 5 < row.started_at <= now
    assert row.lease_until == pytest.approx(row.started_at + 30, abs=1.0)
    assert queue.claim("worker-2", 10, 30) == []


def test_claim_order_is_priority_then_fifo(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 2, first=0, priority=0))
    queue.enqueue(_slices(did, sid, 1, first=2, priority=5))
    queue.enqueue(_slices(did, sid, 1, first=3, priority=1))
    order = [queue.claim("w", 1, 30)[0].start for _ in range(4)]
    assert order == [T0 + 2 * HOUR, T0 + 3 * HOUR, T0, T0 + HOUR]


def test_claim_respects_not_before_and_providers(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 2, provider="alpha") + _slices(did, sid, 2, first=2, provider="beta"))
    assert queue.claim("w", 10, 30, providers=[]) == []
    betas = queue.claim("w", 10, 30, providers={"beta", "gamma"})
    assert sorted(c.provider for c in betas) == ["beta", "beta"]
    for c in betas:
        queue.fail(c, "http_429", "slow down", retryable=True, retry_after_s=60)
    assert queue.claim("w", 10, 30, providers=["beta"]) == []
    alphas = queue.claim("w", 10, 30)
    assert sorted(c.provider for c in alphas) == ["alpha", "alpha"]
    assert queue.counts()["queued"] == 2


def test_bad_claim_arguments(db: Database, queue: SqlQueue) -> None:
    with pytest.raises(InvalidInput):
        queue.claim("w", 1, 0)
    with pytest.raises(InvalidInput):
        queue.claim("w", -1, 10)
    assert queue.claim("w", 0, 10) == []


def test_bad_slices_are_refused(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    with pytest.raises(InvalidInput):
        queue.enqueue([NewSlice(did, sid, Timeframe.h1, T0 + HOUR, T0, "synthetic")])
    with pytest.raises(InvalidInput):
        queue.enqueue([NewSlice(did, sid, Timeframe.h1, T0, T0 + HOUR, "synthetic", max_attempts=0)])
    assert queue.counts()["queued"] == 0


def test_heartbeat_extends_the_lease(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 5)
    before = _row(db, c.id).lease_until
    queue.heartbeat(c, 300)
    row = _row(db, c.id)
    assert row.lease_until > before + 250
    assert row.lease_until == pytest.approx(db.now() + 300, abs=5)
    assert row.heartbeat_at >= row.started_at


def test_late_completion_after_reap_is_refused(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (stale,) = queue.claim("slow-worker", 1, 0.05)
    time.sleep(0.15)
    assert queue.reap() == 1
    (fresh,) = queue.claim("fast-worker", 1, 30)
    assert fresh.id == stale.id and fresh.lease_token != stale.lease_token and fresh.attempts == 2
    with pytest.raises(LeaseLost):
        queue.complete(stale, [_batch(stale, 1.0)], _span(stale))
    with pytest.raises(LeaseLost):
        queue.heartbeat(stale, 30)
    with pytest.raises(LeaseLost):
        queue.fail(stale, "timeout", "late", retryable=True)
    with pytest.raises(LeaseLost):
        queue.release(stale)
    with db.read() as conn:
        assert count_bars(conn) == 0
        assert read_coverage(conn, sid, "h1") == []
    assert _row(db, fresh.id).worker_id == "fast-worker"
    assert queue.complete(fresh, [_batch(fresh, 2.0)], _span(fresh)) == 1
    with db.read() as conn:
        assert read_bars(conn, sid, "h1", T0, T0 + HOUR).close.tolist() == [2.0]
    with pytest.raises(LeaseLost):
        queue.complete(fresh, [_batch(fresh, 3.0)], _span(fresh))


def test_complete_writes_bars_coverage_and_status(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 2))
    a, b = queue.claim("w", 2, 30)
    assert queue.complete(a, [_batch(a), _batch(a, 11.0).take(slice(0, 0))], _span(a)) == 1
    assert queue.complete(b, [], _span(b)) == 0
    row = _row(db, a.id)
    assert (row.status, row.rows_written) == ("succeeded", 1)
    assert row.finished_at >= row.started_at
    with db.read() as conn:
        assert count_bars(conn, sid, "h1") == 1
        assert read_coverage(conn, sid, "h1") == [(T0, T0 + 2 * HOUR)]
    assert queue.progress([did])[did] == Progress(total=2, succeeded=2, rows_written=1)
    assert queue.throughput(3600) == (2, 1)


def test_completion_is_atomic_when_a_batch_is_wrong(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    ensure = _setup(db, "MSFT")
    assert ensure[0] != sid
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    with pytest.raises(InvalidInput, match="AAPL"):
        queue.complete(c, [_batch(c), _batch(c, symbol="MSFT")], _span(c))
    with db.read() as conn:
        assert count_bars(conn) == 0
        assert read_coverage(conn, sid, "h1") == []
    row = _row(db, c.id)
    assert (row.status, row.lease_token, row.rows_written, row.finished_at) == (
        "running",
        c.lease_token,
        0,
        None,
    )

    # A failure after the bars and coverage were written (here: in the derived-data
    # hook, the last step) rolls back the bars, the coverage and the status change.
    def boom(conn: object) -> None:
        raise RuntimeError("derivation failed")

    with pytest.raises(RuntimeError, match="derivation failed"):
        queue.complete(c, [_batch(c)], _span(c), also=boom)
    assert _row(db, c.id).status == "running"
    with db.read() as conn:
        assert count_bars(conn) == 0
        assert read_coverage(conn, sid, "h1") == []
    # The lease is intact: the rightful completion still works.
    assert queue.complete(c, [_batch(c)], _span(c)) == 1
    assert _row(db, c.id).status == "succeeded"


def test_forecast_bars_never_cover(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    with pytest.raises(InvalidInput):
        queue.complete(c, [_batch(c)], _span(c), layer=Layer.forecast)
    assert queue.complete(c, [_batch(c)], [], layer=Layer.forecast) == 1
    with db.read() as conn:
        assert read_bars(conn, sid, "h1", T0, T0 + HOUR, layers=["forecast"]).close.tolist() == [10.0]
        assert read_coverage(conn, sid, "h1") == []


def test_fail_backs_off_on_the_database_clock(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    assert queue.fail(c, "timeout", "read timed out", retryable=True) == "queued"
    row = _row(db, c.id)
    expected = backoff_delay(1, 10.0, 600.0, random.Random(7))  # the queue's rng has the same seed
    assert row.not_before - row.updated_at == pytest.approx(expected, abs=0.05)
    assert row.not_before > db.now() or expected < 0.1
    assert (row.status, row.attempts, row.error_code, row.error_message) == (
        "queued",
        1,
        "timeout",
        "read timed out",
    )
    assert (row.lease_token, row.lease_until) == (None, None)


def test_fail_honours_retry_after(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    queue.fail(c, "http_429", "rate limited", retryable=True, retry_after_s=42)
    row = _row(db, c.id)
    assert row.not_before - row.updated_at == pytest.approx(42, abs=0.05)
    assert row.not_before > db.now() + 30
    assert queue.claim("w", 1, 30) == []


def test_last_attempt_fails_for_good_and_keeps_the_error(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 2, max_attempts=2))
    for _ in range(2):
        for c in queue.claim("w", 2, 30):
            queue.fail(c, "http_503", "unavailable", retryable=True, retry_after_s=0)
    counts = queue.counts()
    assert (counts["failed"], counts["queued"]) == (2, 0)
    row = _row(db, c.id)
    assert (row.attempts, row.error_code, row.error_message) == (2, "http_503", "unavailable")
    assert row.finished_at is not None
    assert queue.errors() == [("http_503", "unavailable", 2)]


def test_non_retryable_fails_at_once(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    assert queue.fail(c, "not_supported", "no m1 here", retryable=False) == "failed"
    assert _row(db, c.id).attempts == 1
    assert queue.errors(limit=5) == [("not_supported", "no m1 here", 1)]


def test_release_gives_the_attempt_back(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    queue.release(c)
    row = _row(db, c.id)
    assert (row.status, row.attempts, row.lease_token, row.lease_until) == ("queued", 0, None, None)
    (again,) = queue.claim("w", 1, 30)
    assert again.attempts == 1


def test_reap_requeues_expired_leases_only(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 2) + _slices(did, sid, 1, first=2, max_attempts=1))
    claimed = queue.claim("w", 3, 30)
    assert queue.reap() == 0
    _expire_leases(db)
    assert queue.reap() == 3
    counts = queue.counts()
    assert (counts["queued"], counts["failed"], counts["running"]) == (2, 1, 0)
    last = next(c for c in claimed if c.max_attempts == 1)
    row = _row(db, last.id)
    assert (row.status, row.error_code, row.attempts) == ("failed", "lease_expired", 1)
    assert "w" in row.error_message
    other = _row(db, claimed[0].id if claimed[0].max_attempts == 5 else claimed[1].id)
    assert (other.status, other.attempts, other.lease_token) == ("queued", 1, None)
    assert queue.reap() == 0


def test_cancel_and_retry_failed(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    _, did2 = _setup_second(db)
    queue.enqueue(_slices(did, sid, 3) + _slices(did2, sid, 2))
    assert queue.cancel([]) == 0
    running = queue.claim("w", 1, 30)[0]
    assert queue.cancel([running.id]) == 1
    with pytest.raises(LeaseLost):
        queue.complete(running, [], _span(running))
    assert queue.cancel(definition_ids=[did2]) == 2
    assert queue.cancel([running.id]) == 0
    (c,) = queue.claim("w", 1, 30)
    queue.fail(c, "bad_payload", "garbage", retryable=False)
    assert queue.counts() == {"queued": 1, "running": 0, "succeeded": 0, "failed": 1, "cancelled": 3}
    assert queue.retry_failed([12345]) == 0
    assert queue.retry_failed() == 1
    row = _row(db, c.id)
    assert (row.status, row.attempts, row.error_code) == ("queued", 0, None)
    assert queue.cancel() == 2
    assert queue.counts()["cancelled"] == 5


def _setup_second(db: Database) -> tuple[int, int]:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        did, _ = upsert_definition(conn, sid, "d1", window_days=365)
    return sid, did


def test_progress_counts_by_definition(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    _, did2 = _setup_second(db)
    queue.enqueue(_slices(did, sid, 5))
    a, b, c = queue.claim("w", 3, 30)
    queue.complete(a, [_batch(a)], _span(a))
    queue.fail(b, "x", "y", retryable=False)
    progress = queue.progress([did, did2, 999])
    assert progress[did] == Progress(total=5, queued=2, running=1, succeeded=1, failed=1, rows_written=1)
    assert progress[did].fraction == pytest.approx(0.2)
    assert not progress[did].finished
    assert progress[did2] == Progress() and progress[999] == Progress()
    assert progress[did2].finished and progress[did2].fraction == 1.0


def test_stuck_and_archive(simdb: Database, sim: SimClock) -> None:
    """On the simulated database clock: how long a slice was silent never depends on the machine's speed."""
    queue = SqlQueue(simdb)
    sid, did = _setup(simdb)
    queue.enqueue(_slices(did, sid, 3))
    a, b, c = queue.claim("w", 3, 600)
    assert queue.stuck(60) == []
    sim.advance(100)
    queue.heartbeat(c, 600)
    stuck = queue.stuck(60)
    assert sorted(s.id for s in stuck) == sorted([a.id, b.id])
    assert all(s.silent_s >= 100 and s.worker_id == "w" for s in stuck)
    queue.complete(a, [_batch(a)], _span(a))
    queue.fail(b, "x", "y", retryable=False)
    assert queue.archive_finished(3600) == 0
    sim.advance(1)
    assert queue.archive_finished(0) == 1
    assert queue.counts() == {"queued": 0, "running": 1, "succeeded": 0, "failed": 1, "cancelled": 0}
    with simdb.read() as conn:
        assert read_coverage(conn, sid, "h1") == [(T0, T0 + HOUR)]
    with pytest.raises(InvalidInput):
        queue.archive_finished(-1)


def test_release_until_defers_without_counting_the_attempt(db: Database) -> None:
    """A final slice whose range is not final yet goes back until it is (finality)."""
    queue = SqlQueue(db)
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 60.0)
    assert c.layer is Layer.historical
    later = db.now() + 7200
    queue.release(c, not_before=later)
    with db.read() as conn:
        row = conn.execute(sa.select(job_runs)).one()
    assert (row.status, row.attempts, row.not_before) == ("queued", 0, later)
    assert queue.claim("w", 1, 60.0) == []  # not runnable before then


def test_supersede_finishes_a_provisional_slice_unfetched(db: Database) -> None:
    queue = SqlQueue(db)
    sid, did = _setup(db)
    queue.enqueue([NewSlice(did, sid, Timeframe.h1, T0, T0 + HOUR, "alpaca", layer=Layer.intraday)])
    (c,) = queue.claim("w", 1, 60.0)
    assert c.layer is Layer.intraday
    queue.supersede(c, "superseded: range is final for polygon")
    with db.read() as conn:
        row = conn.execute(sa.select(job_runs)).one()
    assert (row.status, row.error_code, row.rows_written, row.layer) == (
        "succeeded",
        "superseded",
        0,
        "intraday",
    )
    with pytest.raises(LeaseLost):
        queue.supersede(c, "again")
