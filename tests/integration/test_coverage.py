"""Coverage on both databases: merged final intervals, provisional ones, expiry on the database clock."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from barfill.domain.intervals import Interval, normalize
from barfill.domain.slices import CoverageSpan
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.coverage import (
    add_coverage,
    coverage_map,
    coverage_summary,
    expire_provisional,
    read_coverage,
)
from barfill.store.db import Database
from barfill.store.schema import coverage
from barfill.store.symbols import ensure_symbols


def _symbol(db: Database, ticker: str = "AAPL") -> int:
    with db.write() as conn:
        return ensure_symbols(conn, [ticker])[ticker]


def _add(db: Database, sid: int, *spans: CoverageSpan, tf: str = "m1") -> None:
    with db.write() as conn:
        add_coverage(conn, sid, tf, list(spans))


def _read(db: Database, sid: int, tf: str = "m1") -> list[Interval]:
    with db.read() as conn:
        return read_coverage(conn, sid, tf)


def _rows(db: Database, sid: int, tf: str = "m1") -> list[tuple[int, int, bool]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(coverage.c.start, coverage.c.end, coverage.c.expires_at)
            .where(coverage.c.symbol_id == sid, coverage.c.timeframe == tf)
            .order_by(coverage.c.start)
        ).all()
    return [(r.start, r.end, r.expires_at is not None) for r in rows]


def test_final_spans_merge_into_one_row(db: Database) -> None:
    sid = _symbol(db)
    _add(db, sid, CoverageSpan(0, 10), CoverageSpan(20, 30))
    assert _rows(db, sid) == [(0, 10, False), (20, 30, False)]
    _add(db, sid, CoverageSpan(10, 20))  # touches both neighbours
    assert _rows(db, sid) == [(0, 30, False)]
    _add(db, sid, CoverageSpan(25, 40), CoverageSpan(50, 60))  # overlap, and a separate one
    assert _rows(db, sid) == [(0, 40, False), (50, 60, False)]
    _add(db, sid, CoverageSpan(-5, 100))  # swallows everything
    assert _rows(db, sid) == [(-5, 100, False)]
    _add(db, sid, CoverageSpan(10, 20))  # already covered: nothing changes
    assert _rows(db, sid) == [(-5, 100, False)]
    assert _read(db, sid) == [(-5, 100)]


def test_coverage_is_per_symbol_and_timeframe(db: Database) -> None:
    a, b = _symbol(db), _symbol(db, "MSFT")
    _add(db, a, CoverageSpan(0, 10))
    _add(db, a, CoverageSpan(10, 20), tf="h1")
    _add(db, b, CoverageSpan(10, 20))
    assert _read(db, a) == [(0, 10)]
    assert _read(db, a, "1h") == [(10, 20)]
    assert _read(db, b) == [(10, 20)]
    with db.read() as conn:
        assert coverage_map(conn) == {
            (a, Timeframe.m1): [(0, 10)],
            (a, Timeframe.h1): [(10, 20)],
            (b, Timeframe.m1): [(10, 20)],
        }
        assert coverage_map(conn, [b]) == {(b, Timeframe.m1): [(10, 20)]}


def test_provisional_spans_count_until_they_expire(db: Database) -> None:
    sid = _symbol(db)
    now = db.now()
    _add(db, sid, CoverageSpan(0, 100))
    _add(db, sid, CoverageSpan(100, 200, expires_at=now + 600))
    _add(db, sid, CoverageSpan(300, 400, expires_at=now - 1))
    assert _rows(db, sid) == [(0, 100, False), (100, 200, True), (300, 400, True)]
    assert _read(db, sid) == [(0, 200)]  # the expired one no longer counts
    with db.write() as conn:
        assert expire_provisional(conn) == 1
        assert expire_provisional(conn) == 0
    assert _rows(db, sid) == [(0, 100, False), (100, 200, True)]


def test_final_coverage_replaces_the_provisional_it_covers(db: Database) -> None:
    sid = _symbol(db)
    later = db.now() + 600
    _add(db, sid, CoverageSpan(100, 200, expires_at=later))
    _add(db, sid, CoverageSpan(50, 150))  # covers half: the other half stays provisional
    assert _rows(db, sid) == [(50, 150, False), (150, 200, True)]
    with db.read() as conn:
        expiries = conn.execute(sa.select(coverage.c.expires_at).where(coverage.c.expires_at.is_not(None)))
        assert expiries.scalars().all() == [later]
    _add(db, sid, CoverageSpan(150, 200))
    assert _rows(db, sid) == [(50, 200, False)]


def test_provisional_only_adds_what_is_not_final(db: Database) -> None:
    sid = _symbol(db)
    later = db.now() + 600
    _add(db, sid, CoverageSpan(0, 100), CoverageSpan(150, 160))
    _add(db, sid, CoverageSpan(50, 200, expires_at=later))
    assert _rows(db, sid) == [(0, 100, False), (100, 150, True), (150, 160, False), (160, 200, True)]
    assert _read(db, sid) == [(0, 200)]
    _add(db, sid, CoverageSpan(90, 210, expires_at=later + 60))  # supersedes both provisional rows
    assert _rows(db, sid) == [(0, 100, False), (100, 150, True), (150, 160, False), (160, 210, True)]
    with db.read() as conn:
        expiries = conn.execute(sa.select(coverage.c.expires_at).where(coverage.c.expires_at.is_not(None)))
        assert sorted(expiries.scalars().all()) == [later + 60, later + 60]


def test_random_additions_keep_the_table_normalized(db: Database) -> None:
    sid = _symbol(db)
    rng = random.Random(11)
    added: list[tuple[int, int]] = []
    for _ in range(40):
        spans = []
        for _ in range(rng.randint(1, 3)):
            start = rng.randrange(0, 1_000)
            spans.append(CoverageSpan(start, start + rng.randint(1, 60)))
        added += [(s.start, s.end) for s in spans]
        _add(db, sid, *spans)
    rows = _rows(db, sid)
    assert [(s, e) for s, e, _ in rows] == normalize(added)
    assert all(a[1] < b[0] for a, b in zip(rows, rows[1:], strict=False))  # neither overlap nor touch


def test_summary(db: Database) -> None:
    a, b = _symbol(db), _symbol(db, "MSFT")
    _add(db, a, CoverageSpan(0, 10), CoverageSpan(20, 30))
    _add(db, a, CoverageSpan(30, 35, expires_at=db.now() + 60))
    _add(db, b, CoverageSpan(0, 5), tf="d1")
    with db.read() as conn:
        summary = coverage_summary(conn)
        only_b = coverage_summary(conn, [b])
    assert [(s.symbol, s.timeframe) for s in summary] == [("AAPL", Timeframe.m1), ("MSFT", Timeframe.d1)]
    first = summary[0]
    assert (first.intervals, first.first, first.last, first.covered_s, first.provisional) == (2, 0, 35, 25, 1)
    assert [s.symbol_id for s in only_b] == [b]


def test_bad_spans_write_nothing(db: Database) -> None:
    sid = _symbol(db)
    with pytest.raises(InvalidInput), db.write() as conn:
        add_coverage(conn, sid, "m1", [CoverageSpan(0, 10), CoverageSpan(20, 20)])
    with pytest.raises(InvalidInput), db.write() as conn:
        add_coverage(conn, sid, "m1", [CoverageSpan(30, 20)])
    with pytest.raises(InvalidInput), db.write() as conn:
        add_coverage(conn, sid, "m1", [CoverageSpan(1.5, 20)])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput), db.write() as conn:
        add_coverage(conn, sid, "3m", [CoverageSpan(0, 20)])
    assert _rows(db, sid) == []
    _add(db, sid)  # nothing to add is fine
    assert _read(db, sid) == []


def test_concurrent_writers_of_one_symbol_stay_normalized(db: Database) -> None:
    """Side-by-side completions each merge with what the previous one committed."""
    sid = _symbol(db)

    def writer(k: int) -> None:
        for i in range(k, 240, 6):
            _add(db, sid, CoverageSpan(i * 10, (i + 1) * 10))

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(writer, range(6)))
    assert _rows(db, sid) == [(0, 2_400, False)]
