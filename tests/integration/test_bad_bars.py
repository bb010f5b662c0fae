"""Bad bars flagged at commit, kept, hidden from reads unless asked for; on SQLite and PostgreSQL.

A provider in this process serves one session of m15 bars per symbol with
the defects under test: a 100x spike that reverts (SPIK), a 4:1 split-like
step that does not (SPLT), an empty bar in a busy session (BUSY) and in a
thin one (THIN). The worker commits them; the flags come from
:mod:`barfill.domain.badbars`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import sqlalchemy as sa

from barfill.api import Barfill
from barfill.bootstrap import App
from barfill.cli import main
from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.slices import NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.worker import Worker
from barfill.store.bar_reads import read_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.schema import bars
from barfill.store.symbols import ensure_symbols
from tests.e2e.helpers import make_app
from tests.integration.providers.servers import Truth, ny

CAL = get_calendar("XNYS")
M15 = Timeframe.m15
DAY = (2024, 3, 12)
LO, HI = ny(*DAY), ny(*DAY, 20)
SYMBOLS = ("SPIK", "SPLT", "BUSY", "THIN")


def _session(symbol: str) -> BarBatch:
    b = Truth(CAL).bars(symbol, M15, LO, HI)
    close, high, low, volume = b.close.copy(), b.high.copy(), b.low.copy(), b.volume.copy()
    k = len(b) // 2
    if symbol == "SPIK":
        close[k] *= 100
        high[k] = close[k]
    elif symbol == "SPLT":
        o = b.open.copy()
        o[k:], close[k:], high[k:], low[k:] = o[k:] / 4, close[k:] / 4, high[k:] / 4, low[k:] / 4
        return dataclasses.replace(b, open=o, close=close, high=high, low=low)
    elif symbol == "BUSY":
        volume[k] = 0.0
    elif symbol == "THIN":
        volume = np.minimum(volume, 40.0)
        volume[k] = 0.0
    return dataclasses.replace(b, close=close, high=high, low=low, volume=volume)


class Session:
    """A historical provider answering each symbol's one defective session."""

    def __init__(self) -> None:
        caps = SyntheticProvider(calendar=CAL).capabilities
        self._caps = dataclasses.replace(caps, name="polygon", realtime=False)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        return {s: dataclasses.replace(_session(s).between(start, end), provider="polygon") for s in symbols}

    async def aclose(self) -> None:
        return None


@pytest.fixture
def app(db: Database) -> Iterator[App]:
    a = make_app(db, {"polygon": Session()}, historical_providers=["polygon"], derivations=[])
    yield a
    a.close()


def _hydrate(app: App) -> dict[str, int]:
    """One slice per symbol over the session, worked to the end; returns symbol ids."""
    with app.db.write() as conn:
        ids = ensure_symbols(conn, list(SYMBOLS))
        defs = {s: upsert_definition(conn, ids[s], M15, start=LO, end=HI)[0] for s in SYMBOLS}
    app.queue.enqueue([NewSlice(defs[s], ids[s], M15, LO, HI, "polygon") for s in SYMBOLS])
    asyncio.run(Worker(app, concurrency=2, poll_s=0.05).run(drain=True))
    return ids


def _flags(app: App) -> dict[tuple[int, int], str]:
    b = bars.c
    with app.db.read() as conn:
        rows = conn.execute(sa.select(b.symbol_id, b.ts, b.flag).where(b.flag.is_not(None))).all()
    return {(int(s), int(t)): str(f) for s, t, f in rows}


def test_flags_at_commit_hidden_by_default_shown_on_request_and_recomputed_on_rehydration(
    app: App, db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _hydrate(app)
    spike = _session("SPIK")
    k = len(spike) // 2
    spike_ts, busy_ts = int(spike.ts[k]), int(_session("BUSY").ts[len(_session("BUSY")) // 2])
    # Only the reverting spike and the empty bar of the busy session; the step and the thin
    # session's empty bar are real data.
    assert _flags(app) == {(ids["SPIK"], spike_ts): "spike", (ids["BUSY"], busy_ts): "zero_volume"}

    with app.db.read() as conn:
        shown = read_bars(conn, ids["SPIK"], M15, LO, HI)
        everything = read_bars(conn, ids["SPIK"], M15, LO, HI, include_flagged=True)
        covered = read_coverage(conn, ids["SPIK"], M15)
        split = read_bars(conn, ids["SPLT"], M15, LO, HI)
        thin = read_bars(conn, ids["THIN"], M15, LO, HI)
    assert spike_ts not in shown.ts and len(shown) == len(spike) - 1
    np.testing.assert_array_equal(everything.close, spike.close)
    assert covered and covered[0].start <= LO and covered[-1].end >= HI  # flagged is not a gap
    assert len(split) == len(_session("SPLT")) and len(thin) == len(_session("THIN"))

    # The Python API and the CLI: hidden by default, shown with include_flagged.
    fx = Barfill.wrap(app)
    assert spike_ts * 10**9 not in fx.bars("SPIK", "m15", start="2024-03-12", end="2024-03-12").index.asi8
    frame = fx.bars("SPIK", "m15", start="2024-03-12", end="2024-03-12", include_flagged=True)
    assert frame["close"].max() == pytest.approx(float(spike.close[k]))
    for key in [k for k in os.environ if k.startswith("BARFILL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BARFILL_DATABASE_URL", db.url)
    argv = ["bars", "SPIK", "-t", "m15", "--start", "2024-03-12", "--end", "2024-03-12", "--format", "json"]
    for flag, expect in (([], False), (["--include-flagged"], True)):
        try:
            main([*argv, *flag])
        except SystemExit as e:
            assert not e.code
        rows = json.loads(capsys.readouterr().out)
        assert (max(r["close"] for r in rows) == pytest.approx(float(spike.close[k]))) is expect

    # Re-hydration rewrites the bars (clearing their flags) and recomputes the same flags.
    before = _flags(app)
    with app.db.write() as conn:
        conn.execute(sa.update(bars).values(fetched_at=0.0))  # every stored bar is older than a refetch
    _hydrate(app)
    assert _flags(app) == before
    with app.db.read() as conn:
        assert spike_ts not in read_bars(conn, ids["SPIK"], M15, LO, HI).ts
        fresh = conn.execute(sa.select(sa.func.min(bars.c.fetched_at))).scalar_one()
    assert fresh > 0.0  # every bar was rewritten
