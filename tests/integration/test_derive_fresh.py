"""Derivations from the bars a slice just wrote equal derivations from the store, on both databases.

``derive_after(fresh=..., fresh_at=...)`` resamples the slice's own bars when
they are all a read would find in the bucket ranges; otherwise it reads the
store as before. Each case is derived both ways in one transaction each and
the derived bars compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.slices import CoverageSpan
from barfill.domain.timeframes import Timeframe
from barfill.service import derive
from barfill.service.derive import derive_after, parse_derivations
from barfill.store.bar_reads import read_bars
from barfill.store.bars import nothing_stored, only_written, upsert_bars
from barfill.store.coverage import add_coverage
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols

CAL = get_calendar("XNYS")
TUE = 1_710_216_000  # 2024-03-12 00:00 New York (EDT)
OPEN = TUE + 9 * 3600 + 30 * 60
CLOSE = TUE + 16 * 3600
NOW = 1_720_000_000.0


def _m1(provider: str, base: float, keep: slice = slice(None)) -> BarBatch:
    ts = np.arange(OPEN, CLOSE, 60, dtype=np.int64)[keep]
    o = base + np.sin(np.arange(len(ts)) / 7.0)
    vwap = np.where(np.arange(len(ts)) % 5 == 0, np.nan, o + 0.1)
    trades = np.where(np.arange(len(ts)) % 3 == 0, -1, np.arange(len(ts)))
    return BarBatch("AAPL", Timeframe.m1, provider, ts, o, o + 1, o - 1, o + 0.5, o * 10, vwap, trades)


def _derive(
    db: Database,
    fresh: BarBatch,
    *,
    others: list[tuple[BarBatch, float]],
    use_fresh: bool,
    alone: bool = False,
) -> BarBatch:
    """Store ``others`` then ``fresh`` (at NOW), derive m5, return the derived bars; all rolled back."""
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
    got: list[BarBatch] = []
    with pytest.raises(_RolledBack), db.write() as conn:
        for batch, at in others:
            upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=at)
        upsert_bars(conn, sid, fresh, layer=Layer.historical, fetched_at=NOW)
        add_coverage(conn, sid, Timeframe.m1, [CoverageSpan(OPEN, CLOSE, None)])
        derive_after(
            conn,
            symbol_id=sid,
            source=Timeframe.m1,
            start=OPEN,
            end=CLOSE,
            derivations=parse_derivations(["m1->m5"]),
            calendar=CAL,
            layer=Layer.historical,
            precedence=["alpaca", "polygon"],
            fresh=fresh if use_fresh else None,
            fresh_at=NOW if use_fresh else None,
            fresh_alone=alone,
        )
        got.append(read_bars(conn, sid, Timeframe.m5, TUE, TUE + 86_400, provider="resample:m1"))
        raise _RolledBack
    return got[0]


class _RolledBack(Exception):
    """Undoes one derivation so the next starts from the same store."""


def _same(a: BarBatch, b: BarBatch) -> None:
    assert len(a) == len(b) > 0
    for name in ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.basis == b.basis


CASES = {  # what else is stored, and whether the fresh bars are then all a read finds
    "the slice's bars alone": ([], True),
    "another provider first in precedence, in the same session": (
        [(_m1("alpaca", 200.0, slice(3, None)), 1.0)],
        False,
    ),
    "an older write of the same bars, replaced": ([(_m1("polygon", 50.0), 1.0)], True),
    "a newer write the upsert must not replace": ([(_m1("polygon", 70.0, slice(0, 40)), NOW + 5)], False),
}


@pytest.mark.parametrize(("others", "unread"), CASES.values(), ids=CASES.keys())
def test_derived_from_the_fresh_batch_equals_derived_from_the_store(
    db: Database, others: list[tuple[BarBatch, float]], unread: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = _m1("polygon", 100.0)
    reads: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> BarBatch:
        reads.append(args)
        return read_bars(*args, **kwargs)

    monkeypatch.setattr(derive, "read_bars", counted)
    from_fresh = _derive(db, fresh, others=others, use_fresh=True)
    assert len(reads) == (0 if unread else 1)
    _same(from_fresh, _derive(db, fresh, others=others, use_fresh=False))


def test_only_written_tells_the_fresh_upsert_from_anything_else(db: Database) -> None:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        fresh = _m1("polygon", 100.0)
        upsert_bars(conn, sid, fresh, layer=Layer.historical, fetched_at=NOW)

        def check(provider: str = "polygon", at: float = NOW) -> int | None:
            return only_written(
                conn,
                sid,
                Timeframe.m1,
                TUE,
                TUE + 86_400,
                layers=[Layer.historical],
                provider=provider,
                layer=Layer.historical,
                fetched_at=at,
            )

        assert check() == len(fresh)
        assert check(at=NOW - 1) is None and check(provider="alpaca") is None
        upsert_bars(conn, sid, _m1("polygon", 1.0, slice(0, 1)), layer=Layer.intraday, fetched_at=NOW)
        assert check() == len(fresh)  # another layer is not what a historical read considers
        upsert_bars(conn, sid, _m1("alpaca", 1.0, slice(0, 1)), layer=Layer.historical, fetched_at=NOW)
        assert check() is None


def test_fresh_alone_derives_the_same_without_counting_or_reading(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the worker does when its probe found the session empty before the upsert."""
    fresh = _m1("polygon", 100.0)
    looked: list[str] = []
    monkeypatch.setattr(derive, "only_written", lambda *a, **k: looked.append("count"))
    monkeypatch.setattr(derive, "read_bars", lambda *a, **k: looked.append("read"))
    from_fresh = _derive(db, fresh, others=[], use_fresh=True, alone=True)
    assert looked == []
    monkeypatch.undo()
    _same(from_fresh, _derive(db, fresh, others=[], use_fresh=False))


def test_nothing_stored_probes_the_spans_timeframe_and_layers(db: Database) -> None:
    day = [(TUE, TUE + 86_400)]
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]

        def empty(spans: list[tuple[int, int]], *layers: Layer, tf: Timeframe = Timeframe.m1) -> bool:
            return nothing_stored(conn, sid, tf, spans, layers=layers)

        assert empty(day, Layer.historical) and empty([], Layer.historical)
        upsert_bars(conn, sid, _m1("polygon", 1.0, slice(5, 6)), layer=Layer.intraday, fetched_at=NOW)
        assert empty(day, Layer.historical)  # another layer
        assert not empty(day, Layer.historical, Layer.intraday)
        assert empty(day, Layer.intraday, tf=Timeframe.m5)  # another timeframe
        bar = OPEN + 5 * 60
        assert empty([(TUE, bar), (bar + 60, TUE + 86_400)][:1], Layer.intraday)  # ends right before it
        assert not empty([(TUE, bar + 1)], Layer.intraday)
        assert not empty([(TUE, bar), (bar + 60, TUE + 86_400)], Layer.intraday)  # between spans: cautious
