"""A read's fingerprint taken from its own rows equals the fingerprint query (the ETag's input)."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.store.bar_reads import read_bars, read_bars_scan
from barfill.store.bar_rows import NO_ROWS, merge_fingerprints
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.http_reads import bars_fingerprint
from barfill.store.schema import bars
from barfill.store.symbols import ensure_symbols

T0 = 1_700_000_040  # a multiple of 60
DAY = 86_400


def _batch(start: int, n: int, provider: str, base: float, trades: int = 7) -> BarBatch:
    ts = start + 60 * np.arange(n, dtype=np.int64)
    o = base + np.arange(n, dtype=np.float64) / 8
    vwap = o + 0.25
    vwap[::5] = np.nan
    count = np.full(n, trades, dtype=np.int64)
    count[1::4] = -1
    return BarBatch("AAPL", Timeframe.m1, provider, ts, o, o + 2, o - 2, o + 1, o * 10, vwap, count)


def _store(db: Database, huge_trades: bool) -> int:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        upsert_bars(conn, sid, _batch(T0, 3 * 1440, "alpha", 100.0), layer=Layer.historical, fetched_at=5.0)
        # A second provider over part of the range, fetched later; intraday bars on the last day.
        beta = _batch(T0 + DAY, 700, "beta", 90.0, trades=2**60 if huge_trades else 9)
        upsert_bars(conn, sid, beta, layer=Layer.historical, fetched_at=8.5)
        upsert_bars(
            conn, sid, _batch(T0 + 2 * DAY, 900, "live", 95.0), layer=Layer.intraday, fetched_at=11.25
        )
        flagged = [T0 + 60 * 17, T0 + DAY + 60 * 3, T0 + 2 * DAY + 60 * 400]
        conn.execute(sa.update(bars).where(bars.c.ts.in_(flagged)).values(flag="spike"))
    return sid


@pytest.mark.parametrize("huge_trades", [False, True])  # True: integers float64 cannot hold
@pytest.mark.parametrize("include_flagged", [False, True])
def test_fingerprint_from_the_rows_equals_the_query(
    db: Database, huge_trades: bool, include_flagged: bool
) -> None:
    sid = _store(db, huge_trades)
    spans = [
        (T0, T0 + 3 * DAY),
        (T0 + 60 * 7, T0 + 2 * DAY + 60 * 13),  # cuts sessions and sources
        (T0 + DAY + 60 * 3, T0 + DAY + 60 * 4),  # one flagged bar
        (T0 - 10 * DAY, T0 - DAY),  # nothing stored
    ]
    with db.read() as conn:
        for start, end in spans:
            for layers in (["historical"], ["historical", "intraday"], ["intraday"]):
                parts = []
                for layer in layers:
                    scan = read_bars_scan(
                        conn, sid, Timeframe.m1, start, end, layers=[layer], include_flagged=include_flagged
                    )
                    got = scan.batch
                    parts.append(scan.fingerprint)
                    want = read_bars(
                        conn, sid, Timeframe.m1, start, end, layers=[layer], include_flagged=include_flagged
                    )
                    assert got.provider == want.provider
                    for col in ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"):
                        np.testing.assert_array_equal(getattr(got, col), getattr(want, col), err_msg=col)
                expected = bars_fingerprint(conn, sid, Timeframe.m1, start, end, layers)
                assert merge_fingerprints(parts) == expected, (start, end, layers)
                # Same types too: the ETag hashes the tuple's repr.
                assert repr(merge_fingerprints(parts)) == repr(expected)

    with db.read() as conn:
        whole = bars_fingerprint(conn, sid, Timeframe.m1, T0, T0 + 3 * DAY, ["historical", "intraday"])
    # Every row at a flagged time is flagged: one, two (alpha, beta) and two (alpha, live).
    assert whole[0] == 3 * 1440 + 700 + 900 and whole[2] == 5 and whole[1] == 11.25


def test_merging_adjacent_ranges() -> None:
    assert merge_fingerprints([]) == NO_ROWS
    assert merge_fingerprints([NO_ROWS, (3, 2.5, 1, 60, 180), NO_ROWS, (2, 1.5, 0, 240, 300)]) == (
        5,
        2.5,
        1,
        60,
        300,
    )
