"""SqlQueue.complete_many and add_coverage_many on both databases.

A batch of completions must leave exactly what the same completions made one
by one leave (statuses, rows written, bars, coverage rows), skip the slices
whose lease is gone without writing anything for them, commit all or nothing,
and keep coverage exact when workers complete slices of the same symbols side
by side (the per-symbol lock must come before the read, in one order).
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.slices import ClaimedSlice, CompleteManyResult, CompletionItem, CoverageSpan, NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.bar_reads import read_bars
from barfill.store.bars import count_bars
from barfill.store.coverage import add_coverage, add_coverage_many, read_coverage
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.queue import SqlQueue
from barfill.store.schema import coverage, job_runs
from barfill.store.symbols import ensure_symbols

T0 = 1_700_000_400  # a multiple of 3600
HOUR = 3_600
MINUTE = 60
DEADLINE_S = 120


def _setup(db: Database, *tickers: str) -> dict[str, tuple[int, int]]:
    """(symbol id, h1 definition id) per ticker."""
    out = {}
    with db.write() as conn:
        ids = ensure_symbols(conn, list(tickers))
        for ticker in tickers:
            did, _ = upsert_definition(conn, ids[ticker], "h1", window_days=365)
            out[ticker] = (ids[ticker], did)
    return out


def _enqueue(queue: SqlQueue, setup: dict[str, tuple[int, int]], n: int) -> None:
    """``n`` consecutive hourly slices per ticker, interleaved so a claim takes every symbol."""
    queue.enqueue(
        [
            NewSlice(did, sid, Timeframe.h1, T0 + i * HOUR, T0 + (i + 1) * HOUR, "synthetic")
            for i in range(n)
            for sid, did in setup.values()
        ]
    )


def _bars(c: ClaimedSlice, minutes: list[int], price: float) -> BarBatch:
    """h1 'bars' at arbitrary seconds inside the slice (the store does not check alignment)."""
    ts = np.array([c.start + m * MINUTE for m in minutes], dtype=np.int64)
    v = np.full(len(ts), price)
    return BarBatch(c.symbol, c.timeframe, c.provider, ts, v, v + 1, v - 1, v, v * 10)


def _job(db: Database, slice_id: int) -> sa.Row[Any]:
    with db.read() as conn:
        return conn.execute(sa.select(job_runs).where(job_runs.c.id == slice_id)).one()


def _coverage_rows(db: Database, sid: int, tf: str = "h1") -> list[tuple[int, int, float | None]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(coverage.c.start, coverage.c.end, coverage.c.expires_at)
            .where(coverage.c.symbol_id == sid, coverage.c.timeframe == tf)
            .order_by(coverage.c.start, coverage.c.end, coverage.c.expires_at)
        )
        return [(int(s), int(e), x) for s, e, x in rows]


def _all_bars(db: Database, sid: int) -> list[tuple[int, float, float]]:
    with db.read() as conn:
        got = read_bars(conn, sid, "h1", T0 - 10 * HOUR, T0 + 1_000 * HOUR)
    return list(zip(got.ts.tolist(), got.close.tolist(), got.volume.tolist(), strict=True))


def _relative(c: ClaimedSlice, base: int) -> tuple[int, int]:
    return c.start - base, c.end - base


def _plan(claimed: list[ClaimedSlice], later: float) -> list[tuple[list[BarBatch], list[CoverageSpan]]]:
    """Bars and coverage for each slice: a mix that exercises every merge rule.

    Slices 0-5 are consecutive hours. Two batches, an empty one, no bars; final
    spans that touch, overlap or sit apart; provisional spans that later final
    spans cut, that supersede each other, or that only partly lie outside final
    coverage.
    """
    c = claimed
    s = [x.start for x in c]
    return [
        ([_bars(c[0], [0, 5], 10.0), _bars(c[0], [7], 11.0)], [CoverageSpan(s[0], s[0] + HOUR)]),
        ([_bars(c[1], [], 0.0)], [CoverageSpan(s[1], s[1] + HOUR // 2, later)]),
        ([], [CoverageSpan(s[2], s[2] + HOUR), CoverageSpan(s[2] + HOUR // 2, s[3] + HOUR)]),
        ([_bars(c[3], [1], 13.0)], [CoverageSpan(s[1] + HOUR // 4, s[3], later + 60)]),
        ([_bars(c[4], [2, 3], 14.0)], [CoverageSpan(s[1], s[1] + HOUR // 4)]),
        (
            [_bars(c[5], [59], 15.0)],
            [CoverageSpan(s[5] + 10, s[5] + HOUR, later), CoverageSpan(s[5], s[5] + 20)],
        ),
    ]


@pytest.fixture
def queue(db: Database) -> SqlQueue:
    return SqlQueue(db)


def test_a_batch_leaves_what_single_completions_leave(db: Database, queue: SqlQueue) -> None:
    setup = _setup(db, "ONE", "MANY")
    (one_sid, one_did), (many_sid, many_did) = setup["ONE"], setup["MANY"]
    n = 6
    queue.enqueue(
        [
            NewSlice(did, sid, Timeframe.h1, T0 + i * HOUR, T0 + (i + 1) * HOUR, "synthetic")
            for sid, did in ((one_sid, one_did), (many_sid, many_did))
            for i in range(n)
        ]
    )
    claimed = queue.claim("w", 2 * n, 60)
    singles = [c for c in claimed if c.symbol_id == one_sid]
    batch = [c for c in claimed if c.symbol_id == many_sid]
    later = db.now() + 3_600
    # Coverage both symbols had before: one row the batch extends, one provisional row it cuts.
    for sid in (one_sid, many_sid):
        with db.write() as conn:
            add_coverage(
                conn,
                sid,
                "h1",
                [CoverageSpan(T0 - HOUR, T0), CoverageSpan(T0 + 4 * HOUR, T0 + 5 * HOUR, later)],
            )

    written = [
        queue.complete(c, batches, spans)
        for c, (batches, spans) in zip(singles, _plan(singles, later), strict=True)
    ]
    result = queue.complete_many([(c, b, s) for c, (b, s) in zip(batch, _plan(batch, later), strict=True)])

    assert result == CompleteManyResult(rows=sum(written), done=[c.id for c in batch], lost=[])
    assert result.rows == 7
    for one, many in zip(singles, batch, strict=True):
        a, b = _job(db, one.id), _job(db, many.id)
        assert (a.status, a.rows_written) == (b.status, b.rows_written)
        assert b.status == "succeeded" and b.finished_at >= b.started_at
    assert [_relative(c, T0) for c in batch] == [_relative(c, T0) for c in singles]
    assert _all_bars(db, many_sid) == _all_bars(db, one_sid)
    assert len(_all_bars(db, many_sid)) == 7
    assert _coverage_rows(db, many_sid) == _coverage_rows(db, one_sid)
    with db.read() as conn:
        assert (
            read_coverage(conn, many_sid, "h1")
            == read_coverage(conn, one_sid, "h1")
            == [(T0 - HOUR, T0 + 6 * HOUR)]
        )
    # One finishing instant for the whole batch, on the database clock.
    assert len({_job(db, c.id).finished_at for c in batch}) == 1


def test_lost_leases_are_reported_and_nothing_is_written_for_them(db: Database, queue: SqlQueue) -> None:
    setup = _setup(db, "AAPL")
    sid = setup["AAPL"][0]
    _enqueue(queue, setup, 5)
    stale = queue.claim("slow-worker", 5, 60)
    reaped, cancelled = stale[1], stale[3]
    with db.write() as conn:
        conn.execute(sa.update(job_runs).where(job_runs.c.id == reaped.id).values(lease_until=0.0))
    assert queue.reap() == 1
    (fresh,) = queue.claim("fast-worker", 5, 60)
    assert fresh.id == reaped.id and fresh.lease_token != reaped.lease_token
    assert queue.cancel([cancelled.id]) == 1

    result = queue.complete_many([(c, [_bars(c, [0], 1.0)], [CoverageSpan(c.start, c.end)]) for c in stale])

    assert result.lost == [reaped.id, cancelled.id]
    assert result.done == [stale[0].id, stale[2].id, stale[4].id]
    assert result.rows == 3
    after = _job(db, reaped.id)
    assert (after.status, after.worker_id, after.lease_token) == ("running", "fast-worker", fresh.lease_token)
    assert _job(db, cancelled.id).status == "cancelled"
    with db.read() as conn:
        assert read_bars(conn, sid, "h1", T0, T0 + 5 * HOUR).ts.tolist() == [c.start for c in stale[::2]]
        assert read_coverage(conn, sid, "h1") == [
            (T0, T0 + HOUR),
            (T0 + 2 * HOUR, T0 + HOUR * 3),
            (T0 + 4 * HOUR, T0 + 5 * HOUR),
        ]
    # The rightful owner completes as usual; the whole batch lost is no error either.
    assert queue.complete(fresh, [_bars(fresh, [0], 2.0)], [CoverageSpan(fresh.start, fresh.end)]) == 1
    assert queue.complete_many([(fresh, [], [])]) == CompleteManyResult(rows=0, done=[], lost=[fresh.id])
    with db.read() as conn:
        assert read_bars(conn, sid, "h1", fresh.start, fresh.end).close.tolist() == [2.0]


def test_a_failure_anywhere_commits_nothing_and_keeps_every_lease(db: Database, queue: SqlQueue) -> None:
    setup = _setup(db, "AAPL", "MSFT")
    _enqueue(queue, setup, 3)
    claimed = queue.claim("w", 6, 60)
    items = [(c, [_bars(c, [0], 5.0)], [CoverageSpan(c.start, c.end)]) for c in claimed]
    seen: list[int] = []

    def derive(conn: Connection, c: ClaimedSlice) -> None:
        # Runs after every won slice's bars and coverage, inside the transaction.
        assert count_bars(conn) == len(claimed)
        assert read_coverage(conn, c.symbol_id, "h1") == [(T0, T0 + 3 * HOUR)]
        seen.append(c.id)
        if len(seen) == 3:
            raise RuntimeError("derivation failed")

    with pytest.raises(RuntimeError, match="derivation failed"):
        queue.complete_many(items, also=derive)
    assert seen == [c.id for c in claimed[:3]]
    for c in claimed:
        row = _job(db, c.id)
        assert (row.status, row.lease_token, row.rows_written, row.finished_at) == (
            "running",
            c.lease_token,
            0,
            None,
        )
    with db.read() as conn:
        assert count_bars(conn) == 0
        assert all(read_coverage(conn, sid, "h1") == [] for sid, _ in setup.values())

    # Leases intact: the same batch commits, and ``also`` saw every slice once.
    seen.clear()
    result = queue.complete_many(items, also=lambda conn, c: seen.append(c.id))
    assert result.done == seen == [c.id for c in claimed] and result.rows == 6
    with db.read() as conn:
        assert all(read_coverage(conn, sid, "h1") == [(T0, T0 + 3 * HOUR)] for sid, _ in setup.values())


def test_invalid_items_are_refused_before_anything_is_written(db: Database, queue: SqlQueue) -> None:
    setup = _setup(db, "AAPL", "MSFT")
    _enqueue(queue, setup, 1)
    a, m = queue.claim("w", 2, 60)
    good = (a, [_bars(a, [0], 1.0)], [CoverageSpan(a.start, a.end)])
    with pytest.raises(InvalidInput, match="MSFT"):
        queue.complete_many([good, (m, [_bars(a, [0], 1.0)], [])])
    with pytest.raises(InvalidInput, match="once"):
        queue.complete_many([good, good])
    with pytest.raises(InvalidInput, match="forecast"):
        queue.complete_many([good], layer=Layer.forecast)
    with pytest.raises(InvalidInput):
        queue.complete_many([good, (m, [], [CoverageSpan(m.end, m.start)])])
    assert [_job(db, c.id).status for c in (a, m)] == ["running", "running"]
    with db.read() as conn:
        assert count_bars(conn) == 0
    assert queue.complete_many([]) == CompleteManyResult(rows=0, done=[], lost=[])
    assert queue.complete_many([(a, [_bars(a, [0], 1.0)], []), (m, [], [])], layer=Layer.forecast).done == [
        a.id,
        m.id,
    ]


def test_slices_of_one_symbol_merge_in_one_call(db: Database, queue: SqlQueue) -> None:
    setup = _setup(db, "AAPL")
    sid = setup["AAPL"][0]
    _enqueue(queue, setup, 8)
    claimed = queue.claim("w", 8, 60)
    later = db.now() + 600
    items: list[CompletionItem] = [
        (c, [], [CoverageSpan(c.start, c.end)]) for c in claimed[:4]
    ]  # adjacent: one row
    items += [(c, [], [CoverageSpan(c.start, c.end, later)]) for c in claimed[5:]]  # provisional: apart
    assert queue.complete_many(items).done == [c.id for c, _, _ in items]
    assert _coverage_rows(db, sid) == [
        (T0, T0 + 4 * HOUR, None),
        (T0 + 5 * HOUR, T0 + 6 * HOUR, later),
        (T0 + 6 * HOUR, T0 + 7 * HOUR, later),
        (T0 + 7 * HOUR, T0 + 8 * HOUR, later),
    ]
    with db.read() as conn:
        assert read_coverage(conn, sid, "h1") == [(T0, T0 + 4 * HOUR), (T0 + 5 * HOUR, T0 + 8 * HOUR)]
    # The missing hour joins the final row it touches; the provisional rows stay apart.
    gap = claimed[4]
    assert queue.complete_many([(gap, [], [CoverageSpan(gap.start, gap.end)])]).done == [gap.id]
    assert _coverage_rows(db, sid) == [
        (T0, T0 + 5 * HOUR, None),
        (T0 + 5 * HOUR, T0 + 6 * HOUR, later),
        (T0 + 6 * HOUR, T0 + 7 * HOUR, later),
        (T0 + 7 * HOUR, T0 + 8 * HOUR, later),
    ]


def _random_spans(rng: random.Random, expiries: list[float]) -> list[CoverageSpan]:
    out = []
    for _ in range(rng.randint(1, 3)):
        start = rng.randrange(0, 2_000, 10)
        end = start + rng.randrange(10, 300, 10)
        out.append(CoverageSpan(start, end, rng.choice([None, None, *expiries])))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_add_coverage_many_equals_add_coverage_in_order(db: Database, seed: int) -> None:
    """Random final and provisional spans on several keys: batched == one call per (key, spans)."""
    with db.write() as conn:
        ids = ensure_symbols(conn, ["A1", "A2", "B1", "B2"])
    pairs_of = [(ids["A1"], ids["B1"]), (ids["A2"], ids["B2"])]
    rng = random.Random(seed)
    now = db.now()
    expiries = [now + 60, now + 120, now + 180]
    for _round in range(4):
        calls = []
        for _ in range(8):
            k, tf = rng.randrange(2), rng.choice(["m1", "h1"])
            calls.append((k, tf, _random_spans(rng, expiries)))
        for k, tf, spans in calls:
            with db.write() as conn:
                add_coverage(conn, pairs_of[k][0], tf, spans)
        with db.write() as conn:
            add_coverage_many(conn, [((pairs_of[k][1], tf), spans) for k, tf, spans in calls])
        for single, batched in pairs_of:
            for tf in ("m1", "h1"):
                assert _coverage_rows(db, batched, tf) == _coverage_rows(db, single, tf)


def test_add_coverage_many_takes_a_mapping(db: Database) -> None:
    with db.write() as conn:
        ids = ensure_symbols(conn, ["A", "B"])
        add_coverage_many(
            conn,
            {
                (ids["B"], "m1"): [CoverageSpan(0, 60), CoverageSpan(60, 120)],
                (ids["A"], Timeframe.h1): [CoverageSpan(0, 3_600)],
                (ids["A"], "m1"): [],
            },
        )
    assert _coverage_rows(db, ids["B"], "m1") == [(0, 120, None)]
    assert _coverage_rows(db, ids["A"], "h1") == [(0, 3_600, None)]
    assert _coverage_rows(db, ids["A"], "m1") == []
    with pytest.raises(InvalidInput), db.write() as conn:
        add_coverage_many(
            conn, {(ids["A"], "m1"): [CoverageSpan(0, 60)], (ids["B"], "3m"): [CoverageSpan(0, 60)]}
        )
    assert _coverage_rows(db, ids["A"], "m1") == []


def test_concurrent_batches_of_the_same_symbols_keep_every_span(db: Database) -> None:
    """Four workers complete batches of distinct slices of the same symbols side by side.

    Every batch touches every symbol, in claim order, so the workers contend for
    the same symbol locks; each must merge with what the previous holder just
    committed (coverage exact: one row per symbol) and none may deadlock.
    """
    tickers = ["AAA", "BBB", "CCC", "DDD", "EEE"]
    setup = _setup(db, *tickers)
    per_symbol = 120
    _enqueue(SqlQueue(db), setup, per_symbol)
    start = threading.Barrier(4)

    def worker(k: int) -> int:
        queue = SqlQueue(db)
        rng = random.Random(k)
        done = 0
        start.wait(timeout=30)
        while claimed := queue.claim(f"w{k}", rng.randint(3, 12), 60):
            rng.shuffle(claimed)  # lock order must not depend on the order of the items
            result = queue.complete_many(
                [(c, [_bars(c, [0], float(c.id))], [CoverageSpan(c.start, c.end)]) for c in claimed]
            )
            assert not result.lost
            done += len(result.done)
        return done

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(worker, k) for k in range(4)]
        done = [f.result(timeout=DEADLINE_S) for f in futures]  # a deadlock would hang: fail instead
    assert sum(done) == per_symbol * len(tickers)
    assert SqlQueue(db).counts()["succeeded"] == per_symbol * len(tickers)
    for sid, _ in setup.values():
        assert _coverage_rows(db, sid) == [(T0, T0 + per_symbol * HOUR, None)]
        assert len(_all_bars(db, sid)) == per_symbol


def test_before_sees_the_store_as_it_was_before_each_slices_bars(db: Database, queue: SqlQueue) -> None:
    setup = _setup(db, "AAPL", "MSFT")
    _enqueue(queue, setup, 1)
    claimed = queue.claim("w", 6, 60)
    items = [(c, [_bars(c, [0, 1], 5.0)], [CoverageSpan(c.start, c.end)]) for c in claimed]
    stored_before: list[int] = []

    def before(conn: Connection, c: ClaimedSlice) -> None:
        stored_before.append(count_bars(conn))  # the earlier slices' bars are in, its own are not

    result = queue.complete_many(items, before=before)
    assert result.done == [c.id for c in claimed]
    assert stored_before == [2 * i for i in range(len(claimed))]
