"""Job definitions on both databases: idempotent, race-safe upsert; listing; enabling."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.db import Database
from barfill.store.definitions import get_definition, list_definitions, set_enabled, upsert_definition
from barfill.store.schema import job_definitions
from barfill.store.symbols import ensure_symbols


def _symbol(db: Database, ticker: str = "AAPL") -> int:
    with db.write() as conn:
        return ensure_symbols(conn, [ticker])[ticker]


def test_upsert_creates_then_updates(db: Database) -> None:
    sid = _symbol(db)
    with db.write() as conn:
        did, created = upsert_definition(conn, sid, "1h", window_days=730, priority=3)
    assert created
    with db.write() as conn:
        again, created_again = upsert_definition(
            conn, sid, Timeframe.h1, start=100, end=200, provider="polygon"
        )
    assert (again, created_again) == (did, False)
    with db.read() as conn:
        d = get_definition(conn, did)
        assert get_definition(conn, did + 100) is None
    assert d is not None
    assert (d.symbol, d.symbol_id, d.timeframe) == ("AAPL", sid, Timeframe.h1)
    assert (d.window_days, d.start, d.end, d.priority, d.enabled, d.provider) == (
        None,
        100,
        200,
        0,
        True,
        "polygon",
    )
    assert d.updated_at >= d.created_at


def test_concurrent_upserts_leave_one_row(db: Database) -> None:
    sid = _symbol(db)

    def call(i: int) -> tuple[int, bool]:
        with db.write() as conn:
            return upsert_definition(conn, sid, "m5", window_days=30 + i)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, range(100)))
    assert len({i for i, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_definitions)).scalar_one() == 1


def test_list_and_enable(db: Database) -> None:
    a, b = _symbol(db), _symbol(db, "MSFT")
    with db.write() as conn:
        d1, _ = upsert_definition(conn, a, "d1", window_days=365, priority=1)
        d2, _ = upsert_definition(conn, b, "d1", window_days=365, priority=5)
        d3, _ = upsert_definition(conn, a, "m1", window_days=5, enabled=False)
    with db.read() as conn:
        assert [d.id for d in list_definitions(conn)] == [d2, d1, d3]
        assert [d.id for d in list_definitions(conn, enabled=True)] == [d2, d1]
        assert [d.id for d in list_definitions(conn, enabled=False)] == [d3]
    with db.write() as conn:
        assert set_enabled(conn, [d1, d3], False) == 1  # d3 already was
        assert set_enabled(conn, [], True) == 0
        assert set_enabled(conn, [d1, d2, d3, 999], True) == 2
    with db.read() as conn:
        assert all(d.enabled for d in list_definitions(conn))


def test_aware_datetimes_are_accepted(db: Database) -> None:
    sid = _symbol(db)
    start = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    with db.write() as conn:
        did, _ = upsert_definition(conn, sid, "m1", start=start, end=start + dt.timedelta(days=1))
        d = get_definition(conn, did)
    assert d is not None and (d.start, d.end) == (1704205800, 1704205800 + 86_400)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"window_days": 0},
        {"window_days": -3},
        {"window_days": 10**6},
        {"window_days": True},
        {"window_days": 30, "start": 1, "end": 2},
        {"start": 10},
        {"start": 10, "end": 10},
        {"start": 20, "end": 10},
        {"start": dt.datetime(2024, 1, 1), "end": dt.datetime(2024, 2, 1)},
        {"window_days": 30, "priority": "high"},
    ],
)
def test_bad_windows_are_refused(db: Database, kwargs: dict[str, object]) -> None:
    sid = _symbol(db)
    with pytest.raises(InvalidInput), db.write() as conn:
        upsert_definition(conn, sid, "h1", **kwargs)  # type: ignore[arg-type]
    with db.read() as conn:
        assert list_definitions(conn) == []


def test_bad_timeframe_is_refused(db: Database) -> None:
    sid = _symbol(db)
    with pytest.raises(InvalidInput, match="timeframe"), db.write() as conn:
        upsert_definition(conn, sid, "2h", window_days=10)
