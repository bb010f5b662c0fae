"""No range is lost for good: the queue revives failed and cancelled slices, each when it should.

``enqueue(revive=True)`` is an explicit ``ensure``; ``enqueue()`` is the
scheduler's tick, which waits out a failed slice's cool-down and never undoes
a cancel. The queue reads the database clock, so the tests move a slice's
``finished_at`` back instead of waiting.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import sqlalchemy as sa

from barfill.domain.backoff import failed_cooldown
from barfill.domain.intervals import Interval
from barfill.domain.slices import NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, NotPublishedYet
from barfill.providers.flatfiles import NOT_PUBLISHED_RETRY_S
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.queue import SqlQueue
from barfill.store.queue_reports import open_work
from barfill.store.schema import job_runs
from barfill.store.symbols import ensure_symbols

T0 = 1_700_000_400
HOUR = 3_600
BASE, CAP = 3_600.0, 86_400.0


@pytest.fixture
def queue(db: Database) -> SqlQueue:
    return SqlQueue(db, failed_cooldown_s=BASE, failed_cooldown_max_s=CAP, rng=random.Random(1))


def _setup(db: Database) -> tuple[int, int]:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        did, _ = upsert_definition(conn, sid, "h1", window_days=30)
    return sid, did


def _slices(did: int, sid: int, n: int) -> list[NewSlice]:
    return [
        NewSlice(did, sid, Timeframe.h1, T0 + i * HOUR, T0 + (i + 1) * HOUR, "synthetic", max_attempts=3)
        for i in range(n)
    ]


def _row(db: Database, slice_id: int) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(job_runs).where(job_runs.c.id == slice_id)).one()


def _failed_ago(db: Database, slice_id: int, seconds: float) -> None:
    """Pretend the slice failed ``seconds`` ago on the database clock."""
    with db.write() as conn:
        conn.execute(
            sa.update(job_runs).where(job_runs.c.id == slice_id).values(finished_at=db.now() - seconds)
        )


def _fail_all(queue: SqlQueue, n: int) -> list[int]:
    claimed = queue.claim("w", n, 30)
    for c in claimed:
        assert queue.fail(c, "not_supported", "polygon: range is live", retryable=False) == "failed"
    return [c.id for c in claimed]


def test_explicit_ensure_revives_failed_and_cancelled_at_once_and_counts_them(
    db: Database, queue: SqlQueue
) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 4))
    failed = _fail_all(queue, 2)
    cancelled = [r.id for r in queue.claim("w", 1, 30)]
    queue.cancel(cancelled)
    result = queue.enqueue(_slices(did, sid, 4), revive=True)
    assert (result.inserted, result.requeued, result.revived, result.already_pending, result.held) == (
        0,
        0,
        3,
        1,
        0,
    )
    assert result.queued == 3 and result.queued_by_definition == {did: 3}
    for slice_id in [*failed, *cancelled]:
        row = _row(db, slice_id)
        assert (row.status, row.attempts, row.error_code, row.finished_at, row.revivals) == (
            "queued",
            0,
            None,
            None,
            0,
        )
    again = queue.enqueue(_slices(did, sid, 4), revive=True)
    assert (again.queued, again.already_pending) == (0, 4)


def test_the_tick_revives_a_failed_slice_only_after_its_growing_cool_down(
    db: Database, queue: SqlQueue
) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (slice_id,) = _fail_all(queue, 1)
    # Just failed: held.
    held = queue.enqueue(_slices(did, sid, 1))
    assert (held.queued, held.held) == (0, 1)
    # One base cool-down later: revived, and its next cool-down doubles.
    _failed_ago(db, slice_id, BASE + 5)
    revived = queue.enqueue(_slices(did, sid, 1))
    assert (revived.revived, revived.queued) == (1, 1)
    row = _row(db, slice_id)
    assert (row.status, row.attempts, row.revivals) == ("queued", 0, 1)
    _fail_all(queue, 1)
    _failed_ago(db, slice_id, BASE + 5)
    assert queue.enqueue(_slices(did, sid, 1)).held == 1  # needs 2 * BASE now
    _failed_ago(db, slice_id, 2 * BASE + 5)
    assert queue.enqueue(_slices(did, sid, 1)).revived == 1
    assert _row(db, slice_id).revivals == 2
    # The cool-down is capped: after many revivals, CAP is enough.
    _fail_all(queue, 1)
    with db.write() as conn:
        conn.execute(sa.update(job_runs).where(job_runs.c.id == slice_id).values(revivals=30))
    _failed_ago(db, slice_id, CAP - 60)
    assert queue.enqueue(_slices(did, sid, 1)).held == 1
    _failed_ago(db, slice_id, CAP + 5)
    assert queue.enqueue(_slices(did, sid, 1)).revived == 1
    assert _row(db, slice_id).revivals == 31


def test_the_tick_never_undoes_a_cancel(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 2))
    assert queue.cancel(definition_ids=[did]) == 2
    with db.write() as conn:
        conn.execute(sa.update(job_runs).values(finished_at=db.now() - 10 * CAP))
    result = queue.enqueue(_slices(did, sid, 2))
    assert (result.queued, result.held) == (0, 2)
    assert queue.counts()["cancelled"] == 2


def test_a_succeeded_slice_is_requeued_and_its_revivals_restart(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    with db.write() as conn:
        conn.execute(sa.update(job_runs).where(job_runs.c.id == c.id).values(revivals=3))
    queue.complete(c, [], [])
    result = queue.enqueue(_slices(did, sid, 1))
    assert (result.requeued, result.queued) == (1, 1)
    assert (_row(db, c.id).status, _row(db, c.id).revivals) == ("queued", 0)


def test_retry_takes_failed_cancelled_or_all(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 4))
    failed = _fail_all(queue, 2)
    queue.cancel()
    with pytest.raises(InvalidInput, match="status"):
        queue.retry(status="succeeded")
    assert queue.retry(status="cancelled") == 2
    assert queue.counts()["queued"] == 2 and queue.counts()["failed"] == 2
    queue.cancel()
    assert queue.retry([failed[0]], status="all") == 1
    assert queue.retry(status="all") == 3
    assert queue.counts() == {"queued": 4, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert queue.retry_failed() == 0


def test_open_work_sorts_ranges_into_pending_and_held(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 5))
    a, b = _fail_all(queue, 2)  # slices 0 and 1
    running = queue.claim("w", 1, 30)[0]  # slice 2
    queue.cancel([queue.claim("w", 1, 30)[0].id])  # slice 3; slice 4 stays queued
    _failed_ago(db, b, BASE + 5)  # slice 1's cool-down is over
    now = db.now()
    with db.read() as conn:
        work = open_work(conn, now=now, cooldown_s=BASE, cooldown_max_s=CAP)
        other = open_work(conn, now=now, cooldown_s=BASE, cooldown_max_s=CAP, timeframe=Timeframe.d1)
    key = (sid, Timeframe.h1)
    span = [Interval(T0 + i * HOUR, T0 + (i + 1) * HOUR) for i in range(5)]
    assert running.start == span[2].start
    assert work.pending == {key: [span[2], span[4]]}
    assert work.held == {key: [span[0], span[3]]}
    assert work.blocked(key) == [span[0], Interval(span[2].start, span[4].end)]
    assert other.pending == {} and other.held == {}
    assert a != b


def test_failed_cooldown_doubles_and_is_capped() -> None:
    assert [failed_cooldown(n, 10.0, 50.0) for n in range(5)] == [10.0, 20.0, 40.0, 50.0, 50.0]
    assert failed_cooldown(10_000, 1.0, 7.0) == 7.0
    with pytest.raises(ValueError, match="revivals"):
        failed_cooldown(-1, 1.0, 2.0)


def test_not_published_yet_waits_an_hour_per_attempt(db: Database, queue: SqlQueue) -> None:
    sid, did = _setup(db)
    queue.enqueue(_slices(did, sid, 1))
    (c,) = queue.claim("w", 1, 30)
    before = db.now()
    error = NotPublishedYet("files: no file for 2024-03-14 yet", retry_after_s=NOT_PUBLISHED_RETRY_S)
    status = queue.fail(
        c, error.code, str(error), retryable=error.retryable, retry_after_s=error.retry_after_s
    )
    assert status == "queued"
    row = _row(db, c.id)
    assert (row.attempts, row.error_code) == (1, "not_published")
    assert row.not_before >= before + NOT_PUBLISHED_RETRY_S - 1
    assert queue.claim("w", 1, 30) == []  # not before an hour has passed
