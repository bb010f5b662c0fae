"""A kept bar read patched after a write of its own symbol answers exactly what a cold read does.

Each test reads through one server's memory (:class:`BarReads`), writes as
another process would, reads again, and compares the ETag and the JSON body,
byte for byte, with a read by a server that never saw the symbol. The warm
read must have been patched (or renewed) without a full recompute where the
change log allows it, and read in full where it does not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.actions import split
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.server import bars_out, bars_route
from barfill.server.read_cache import BarReads
from barfill.store import stamps
from barfill.store.actions import upsert_actions
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols
from tests.e2e.helpers import make_app, ts

START, END = ts("2024-03-04T00:00"), ts("2024-03-16T00:00")
# The stored bars end mid-session on Friday 2024-03-15 (a new bar then lands after them).
CUT = ts("2024-03-15T17:00")
SESSION = (ts("2024-03-07T14:30"), ts("2024-03-07T21:00"))  # Thursday's regular hours
_FETCHED = itertools.count(1)


def _fetched() -> float:
    return time.time() + next(_FETCHED)


class Reader:
    """One server's bar-read memory, reading as ``GET /v1/bars`` does (JSON body)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.reads = BarReads(app.db)
        self.reads.version.listening(True)  # PostgreSQL: this test moves the version by hand

    def get(
        self, layers: str = "historical", adjust: str | None = None, keep: bool = True
    ) -> tuple[str, bytes]:
        """``keep``: as a read with a body (its columns read with it); else as a revalidation,
        its body's columns then read apart (not known to be the same data)."""
        args = ("AAPL", "m15", str(START), str(END), layers, None, END, adjust, False)
        key = self.reads.key(*args)
        make = functools.partial(bars_route._bar_query, self.app, *args, self.reads if keep else None)
        found = bars_route._reuse_or_compute(self.app, self.reads, key, make)
        body = asyncio.run(_join(bars_out.json_stream(self.app, found.query, reads=self.reads)))
        return found.tag, body

    def wrote(self) -> None:
        """Another process committed (what a notification or ``data_version`` tells the server)."""
        self.reads.version.bump()

    @property
    def computed(self) -> int:
        return self.reads.cache.misses


async def _join(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


@pytest.fixture
def provider() -> SyntheticProvider:
    return SyntheticProvider(calendar=get_calendar())


@pytest.fixture
def app(db: Database, provider: SyntheticProvider) -> Iterator[App]:
    built = make_app(db, {"synthetic": provider})
    yield built
    built.close()


def _sid(db: Database) -> int:
    with db.write() as conn:
        return ensure_symbols(conn, ["AAPL"])["AAPL"]


def _write(db: Database, batch: BarBatch, layer: Layer = Layer.historical) -> None:
    sid = _sid(db)
    with db.write() as conn:
        upsert_bars(conn, sid, batch, layer=layer, fetched_at=_fetched())


def _truth(provider: SyntheticProvider, start: int, end: int, tf: Timeframe = Timeframe.m15) -> BarBatch:
    return provider.truth("AAPL", tf, start, end)


def _cold(app: App, **kw: Any) -> tuple[str, bytes]:
    reader = Reader(app)
    try:
        return reader.get(**kw)
    finally:
        reader.reads.close()


def _check_spliced(
    app: App, warm: Reader, before: tuple[str, bytes], *, full: bool = False, **kw: Any
) -> bytes:
    """The warm read after a write: equal to a cold read, a new ETag, computed in full only if ``full``."""
    computed = warm.computed
    warm.wrote()
    after = warm.get(**kw)
    assert warm.computed == computed + int(full)
    assert after == _cold(app, **kw)
    assert after[0] != before[0]
    return after[1]


@pytest.mark.parametrize("chunk_bars", [bars_out.CHUNK_BARS, 37])
def test_a_correction_in_the_middle_of_the_range(
    app: App, db: Database, provider: SyntheticProvider, chunk_bars: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with the range read in chunks that cut sessions (as two years of m1 are)."""
    monkeypatch.setattr(bars_out, "CHUNK_BARS", chunk_bars)
    _write(db, _truth(provider, START, CUT))
    warm = Reader(app)
    before = warm.get()
    bar = _truth(provider, SESSION[0] + 3600, SESSION[0] + 4500)
    bar.close[:] = bar.close + 0.37
    _write(db, bar)
    body = _check_spliced(app, warm, before)
    assert body != before[1]
    t = json.loads(body)["layers"]["historical"]
    assert t["c"][t["t"].index(SESSION[0] + 3600)] == pytest.approx(float(bar.close[0]))


def test_a_new_bar_at_the_end(app: App, db: Database, provider: SyntheticProvider) -> None:
    _write(db, _truth(provider, START, CUT))
    warm = Reader(app)
    before = warm.get()
    _write(db, _truth(provider, CUT, CUT + 900))
    body = json.loads(_check_spliced(app, warm, before))["layers"]["historical"]
    assert (
        body["t"][-1] == CUT and body["count"] == json.loads(before[1])["layers"]["historical"]["count"] + 1
    )


def test_one_source_per_session_across_providers(app: App, db: Database, provider: SyntheticProvider) -> None:
    """Thursday comes from "zeta" alone; "alpha" (preferred: alphabetical) then writes half of it,
    so the whole session switches to alpha's bars and zeta leaves the provider label."""
    truth = _truth(provider, START, CUT)
    thursday = (truth.ts >= SESSION[0]) & (truth.ts < SESSION[1])
    _write(db, truth.take(~thursday))
    _write(db, truth.take(thursday).with_provider("zeta"))
    warm = Reader(app)
    before = warm.get()
    assert json.loads(before[1])["layers"]["historical"]["provider"] == "synthetic+zeta"
    half = truth.take(thursday).between(SESSION[0], SESSION[0] + 3 * 3600).with_provider("alpha")
    half.close[:] = half.close + 0.01
    _write(db, half)
    got = json.loads(_check_spliced(app, warm, before))["layers"]["historical"]
    assert got["provider"] == "alpha+synthetic"
    on_thursday = [t for t in got["t"] if SESSION[0] <= t < SESSION[1]]
    assert on_thursday == half.ts.tolist()


def test_split_adjusted(app: App, db: Database, provider: SyntheticProvider) -> None:
    _write(db, _truth(provider, START, CUT))
    sid = _sid(db)
    with db.write() as conn:
        upsert_actions(
            conn, sid, [split("AAPL", dt.date(2024, 3, 11), 4.0, provider="polygon")], "America/New_York"
        )
    warm = Reader(app)
    before = warm.get(adjust="split")
    bar = _truth(provider, SESSION[0], SESSION[0] + 900)  # before the ex date: divided by 4 on read
    bar.close[:] = bar.close + 1.0
    _write(db, bar)
    got = json.loads(_check_spliced(app, warm, before, adjust="split"))["layers"]["historical"]
    assert got["c"][got["t"].index(SESSION[0])] == pytest.approx(float(bar.close[0]) / 4)


def test_another_timeframe_leaves_the_read_as_it_is(
    app: App, db: Database, provider: SyntheticProvider
) -> None:
    """Renewed without reading its bars; its ETag moves with the counter, as a cold read's does."""
    _write(db, _truth(provider, START, CUT))
    warm = Reader(app)
    before = warm.get()
    _write(db, _truth(provider, SESSION[0], SESSION[1], Timeframe.m1))
    body = _check_spliced(app, warm, before)
    assert body == before[1]


def test_intraday_bars_after_the_historical_ones(app: App, db: Database, provider: SyntheticProvider) -> None:
    _write(db, _truth(provider, START, CUT))
    warm = Reader(app)
    layers = "historical,intraday"
    before = warm.get(layers=layers)
    _write(db, _truth(provider, CUT - 1800, CUT + 1800), Layer.intraday)  # overlaps two historical bars
    got = json.loads(_check_spliced(app, warm, before, layers=layers))["layers"]
    assert got["intraday"]["t"] == [CUT, CUT + 900]


def test_unknown_changes_and_other_bases_are_read_in_full(
    app: App, db: Database, provider: SyntheticProvider
) -> None:
    _write(db, _truth(provider, START, CUT))
    warm = Reader(app)
    before = warm.get()
    sid = _sid(db)
    bars = sa.table("bars", sa.column("ts"), sa.column("flag"))
    with db.write() as conn:  # a flag set by hand, as store.flags does (a touch without details)
        conn.execute(sa.update(bars).where(bars.c.ts == SESSION[0]).values(flag="spike"))
        stamps.touch(conn, sid)
    after = _check_spliced(app, warm, before, full=True)
    assert SESSION[0] not in json.loads(after)["layers"]["historical"]["t"]
    # Split-adjusted bars from another provider (preferred: alphabetical): the read's basis may
    # change everywhere, not just in that session.
    other = _truth(provider, SESSION[0], SESSION[1]).with_provider("adjusted").with_basis("split")
    middle = warm.get()
    _write(db, other)
    got = json.loads(_check_spliced(app, warm, middle, full=True))["layers"]["historical"]
    assert got["provider"] == "adjusted" and got["count"] == len(other)


def test_the_log_says_what_changed_and_keeps_the_last_values(
    db: Database, provider: SyntheticProvider
) -> None:
    sid = _sid(db)
    m15 = _truth(provider, START, CUT)
    with db.write() as conn:
        upsert_bars(conn, sid, m15.take(slice(0, 5)), layer=Layer.historical, fetched_at=1.0)
        upsert_bars(conn, sid, m15.take(slice(20, 30)), layer=Layer.historical, fetched_at=1.0)
        upsert_bars(conn, sid, m15.take(slice(0, 3)), layer=Layer.intraday, fetched_at=1.0)
    with db.read() as conn:
        got = stamps.changes(conn, sid, 0, stamps.read(conn, sid))
    assert got is not None and sorted(got, key=lambda c: str(c.layer)) == [
        stamps.upserted("m15", "historical", int(m15.ts[0]), int(m15.ts[29])),
        stamps.upserted("m15", "intraday", int(m15.ts[0]), int(m15.ts[2])),
    ]
    for i in range(stamps.KEEP + 5):
        with db.write() as conn:
            upsert_bars(conn, sid, m15.take(slice(i, i + 1)), layer=Layer.historical, fetched_at=2.0 + i)
    with db.read() as conn:
        seq = stamps.read(conn, sid)
        rows = conn.execute(sa.text("SELECT count(*), min(seq) FROM symbol_changes")).one()
        assert stamps.changes(conn, sid, 1, seq) is None  # pruned: read in full
        assert stamps.changes(conn, sid, seq - stamps.KEEP, seq) is not None
        assert stamps.changes(conn, sid, seq, seq) == []
        assert stamps.changes(conn, sid, seq + 1, seq) is None  # went back: a restored database
    assert seq == stamps.KEEP + 6 and rows[0] == stamps.KEEP and rows[1] == seq - stamps.KEEP + 1


def test_the_first_bars_of_a_read_of_nothing(app: App, db: Database, provider: SyntheticProvider) -> None:
    _sid(db)
    warm = Reader(app)
    before = warm.get()
    assert json.loads(before[1])["layers"]["historical"]["count"] == 0
    _write(db, _truth(provider, SESSION[0], SESSION[1]))
    got = json.loads(_check_spliced(app, warm, before))["layers"]["historical"]
    assert got["provider"] == "synthetic" and got["count"] == 26


def test_columns_read_apart_from_the_etag_are_read_in_full(
    app: App, db: Database, provider: SyntheticProvider
) -> None:
    _write(db, _truth(provider, START, CUT))
    warm = Reader(app)
    before = warm.get(keep=False)
    _write(db, _truth(provider, CUT, CUT + 900))
    _check_spliced(app, warm, before, full=True)
