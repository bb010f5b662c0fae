"""What a kept bar read must read again after the changes its symbol's log shows (pure)."""

from __future__ import annotations

import numpy as np

from barfill.domain.adjust import Adjust
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.server.bars_out import BarQuery
from barfill.server.splice import KeptLayer, KeptRead, Plan, patch, plan
from barfill.store.bar_reads import Scan
from barfill.store.bar_rows import RowStamps
from barfill.store.stamps import Change, upserted

DAY = 86_400
Q = BarQuery("AAPL", 1, Timeframe.m15, 10 * DAY, 50 * DAY, (Layer.historical,))


def _day(start: int, end: int) -> tuple[int, int]:
    """Whole days stand in for sessions."""
    return start // DAY * DAY, -(-end // DAY) * DAY


def _read(q: BarQuery = Q, limited: bool = False) -> KeptRead:
    return KeptRead(q, '"tag"', 7, ((0, 0.0, 0, 0, 0),), limited)


def test_nothing_the_read_shows_changed() -> None:
    changes = [
        upserted("m1", "historical", 12 * DAY, 12 * DAY + 60),  # another timeframe
        upserted("m15", "intraday", 12 * DAY, 12 * DAY + 900),  # a layer it does not show
        upserted("m15", "historical", 60 * DAY, 60 * DAY + 900),  # after its range
        upserted("m15", "historical", 9 * DAY, 9 * DAY + 900),  # before it
    ]
    assert plan(changes, _read(), _day) == Plan({})
    assert plan([], _read(), _day) == Plan({})


def test_upserts_read_their_whole_sessions_again_clipped_to_the_read() -> None:
    changes = [
        upserted("m15", "historical", 12 * DAY + 3600, 12 * DAY + 4500),
        upserted("m15", "historical", 12 * DAY + 7200, 13 * DAY + 60),  # overlaps: merged
        upserted("m15", "historical", 49 * DAY + 60, 51 * DAY),  # runs past the end
    ]
    assert plan(changes, _read(), _day) == Plan(
        {Layer.historical: [(12 * DAY, 14 * DAY), (49 * DAY, 50 * DAY)]}
    )


def test_what_must_be_read_in_full() -> None:
    mine = upserted("m15", "historical", 12 * DAY, 12 * DAY + 900)
    assert plan([mine, Change()], _read(), _day) is None  # flags, deletions, actions, unknown
    assert plan([mine], _read(limited=True), _day) is None  # the newest N may start elsewhere
    adjusted = BarQuery(
        "AAPL", 1, Timeframe.m15, 10 * DAY, 20 * DAY, (Layer.historical,), Adjust.all_adjusted
    )
    other = upserted("m1", "historical", 12 * DAY, 12 * DAY + 60)
    assert plan([other], _read(adjusted), _day) is None  # dividend factors read closes of any timeframe
    big = upserted("m15", "historical", 10 * DAY, 25 * DAY)
    assert plan([big], _read(), _day) is None  # over a third of the read: read it all
    # Another timeframe of a newest-N read leaves it as it is.
    assert plan([other], _read(limited=True), _day) == Plan({})


def _scan(ts: list[int], provider: str, fetched: float, extra: list[int] | None = None) -> Scan:
    t = np.asarray(ts, dtype=np.int64)
    f = np.full(len(t), 1.0)
    batch = BarBatch("AAPL", Timeframe.m15, provider, t, f, f, f, f, f)
    rows = np.sort(np.asarray(ts + (extra or []), dtype=np.int64))
    stamps = RowStamps(rows, np.full(len(rows), fetched), np.zeros(len(rows), dtype=np.bool_))
    return Scan(batch, stamps, frozenset({"raw"}), np.zeros(len(t), dtype=np.int64), (provider,))


def test_a_patch_replaces_bars_stamps_and_providers_of_its_span() -> None:
    kept = KeptLayer.of([_scan([0, 900, 1800], "zeta", 1.0, extra=[900]), _scan([2700, 3600], "beta", 2.0)])
    assert kept.provider == "beta+zeta" and kept.fingerprint() == (6, 2.0, 0, 0, 3600)
    out = patch(kept, 2700, 4500, _scan([2700, 3600, 4000], "alpha", 3.0))
    assert out.cols["t"].tolist() == [0, 900, 1800, 2700, 3600, 4000]
    assert out.provider == "alpha+zeta" and out.fingerprint() == (7, 3.0, 0, 0, 4000)
    assert kept.cols["t"].tolist() == [0, 900, 1800, 2700, 3600]  # the kept one is never modified
    empty = KeptLayer.of([])
    assert empty.provider == "" and empty.fingerprint() == (0, 0.0, 0, 0, 0)
    assert patch(empty, 0, 900, _scan([0], "alpha", 1.0)).provider == "alpha"
