"""Every store writer of a symbol's answers moves its change counter, once, when it commits."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from barfill.domain.actions import ActionKind, CorporateAction
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.store import stamps
from barfill.store.actions import replace_actions, upsert_actions
from barfill.store.bars import delete_bars, upsert_bars
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols
from barfill.store.verifications import delete_stored

T0 = 1_700_000_040  # a multiple of 60
TZ = "America/New_York"


def _batch(n: int = 10, close: float = 101.0) -> BarBatch:
    ts = T0 + 60 * np.arange(n, dtype=np.int64)
    o = np.full(n, 100.0)
    return BarBatch("AAPL", Timeframe.m1, "polygon", ts, o, o + 2, o - 2, np.full(n, close), o * 10)


def _seq(db: Database, sid: int) -> int:
    with db.read() as conn:
        return stamps.read(conn, sid)


@pytest.fixture
def sids(db: Database) -> tuple[int, int]:
    with db.write() as conn:
        ids = ensure_symbols(conn, ["AAPL", "MSFT"])
    return ids["AAPL"], ids["MSFT"]


def test_bar_writes_move_their_symbol_once_per_commit(db: Database, sids: tuple[int, int]) -> None:
    aapl, msft = sids
    assert _seq(db, aapl) == 0  # never written
    with db.write() as conn:
        upsert_bars(conn, aapl, _batch(), layer=Layer.historical, fetched_at=1.0)
        upsert_bars(conn, aapl, _batch(close=102.0), layer=Layer.intraday, fetched_at=1.0)
        assert stamps.read(conn, aapl) == 0  # moves with the commit, not before
    assert (_seq(db, aapl), _seq(db, msft)) == (1, 0)
    with db.write() as conn:
        delete_bars(conn, aapl, Timeframe.m1, T0, T0 + 600, layer=Layer.intraday)
    assert _seq(db, aapl) == 2
    with db.write() as conn:
        delete_stored(conn, aapl, _batch(), [T0])
    assert _seq(db, aapl) == 3
    with db.write() as conn:
        upsert_bars(conn, aapl, _batch(0), layer=Layer.historical, fetched_at=2.0)  # nothing to write
    assert _seq(db, aapl) == 3


def test_a_rolled_back_write_moves_nothing(db: Database, sids: tuple[int, int]) -> None:
    aapl, _ = sids
    with pytest.raises(RuntimeError), db.write() as conn:
        upsert_bars(conn, aapl, _batch(), layer=Layer.historical, fetched_at=1.0)
        raise RuntimeError("crash before commit")
    assert _seq(db, aapl) == 0
    with db.write() as conn:  # the same pooled connection: nothing left over from the failed one
        conn.exec_driver_sql("SELECT 1")
    assert _seq(db, aapl) == 0


def test_actions_move_their_symbol_only_when_they_change(db: Database, sids: tuple[int, int]) -> None:
    aapl, msft = sids
    split = CorporateAction("AAPL", ActionKind.split_, dt.date(2024, 6, 10), ratio=4.0, provider="polygon")
    with db.write() as conn:
        upsert_actions(conn, aapl, [split], TZ)
    assert _seq(db, aapl) == 1
    with db.write() as conn:  # the same action again: only its fetch time changes
        upsert_actions(conn, aapl, [split], TZ)
    assert _seq(db, aapl) == 1
    with db.write() as conn:  # withdrawn by its provider
        replace_actions(conn, aapl, "polygon", [], TZ)
    assert (_seq(db, aapl), _seq(db, msft)) == (2, 0)


def test_a_touch_outside_a_write_transaction_moves_at_once(db: Database, sids: tuple[int, int]) -> None:
    aapl, msft = sids
    with db.engine.begin() as conn:
        stamps.touch(conn, msft)
        assert stamps.read(conn, msft) == 1
    assert (_seq(db, aapl), _seq(db, msft)) == (0, 1)
