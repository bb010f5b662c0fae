"""One source per session on read, one adjustment basis per read, on both databases.

Each test stores what a user's providers would have stored and reads it back
the way the facade and the derivations do.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from barfill.api import Barfill
from barfill.domain.bars import BarBatch, Basis, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.resample import resample
from barfill.domain.slices import CoverageSpan
from barfill.domain.sources import Precedence
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.derive import derive_after, parse_derivations
from barfill.store import migrate
from barfill.store.bar_reads import read_bars, read_bars_frame
from barfill.store.bars import upsert_bars
from barfill.store.coverage import add_coverage
from barfill.store.db import Database
from barfill.store.schema import bars
from barfill.store.symbols import ensure_symbols

CAL = get_calendar("XNYS")
HOUR = 3600
DAY = 86_400
TUE = 1_710_216_000  # 2024-03-12 00:00 New York (EDT)
WED = TUE + DAY
THU = TUE + 2 * DAY
OPEN = TUE + 9 * HOUR + 30 * 60  # 09:30 New York
CLOSE = TUE + 16 * HOUR
PREC = Precedence(historical=("polygon", "alpaca", "yahoo"), intraday=("tradier", "alpaca", "polygon"))


def _symbol(db: Database) -> int:
    with db.write() as conn:
        return ensure_symbols(conn, ["AAPL"])["AAPL"]


def _bars(
    tf: Timeframe, ts: list[int] | np.ndarray, provider: str, base: float, basis: Basis = Basis.raw
) -> BarBatch:
    t = np.asarray(ts, dtype=np.int64)
    o = base + np.arange(len(t), dtype=np.float64)
    return BarBatch("AAPL", tf, provider, t, o, o + 1, o - 1, o + 0.5, o * 100, basis=basis)


def _write(db: Database, sid: int, batch: BarBatch, layer: Layer = Layer.historical, at: float = 1.0) -> None:
    with db.write() as conn:
        upsert_bars(conn, sid, batch, layer=layer, fetched_at=at)


def _hours(day: int) -> list[int]:
    return [day + h * HOUR for h in range(9, 16)]  # h1 labels 09:00 .. 15:00 New York


def _quarters(day: int) -> list[int]:
    start = day + 9 * HOUR + 30 * 60
    return [start + 900 * i for i in range(26)]  # m15 labels 09:30 .. 15:45 New York


def test_native_h1_and_resampled_h1_of_one_session_are_never_spliced(db: Database) -> None:
    """Polygon's 09:00 h1 bar holds pre-market trades, the resampled one does not: one or the other."""
    sid = _symbol(db)
    _write(db, sid, _bars(Timeframe.h1, _hours(TUE), "polygon", 100.0))
    # Resampled h1 for Tuesday (a later fetch) and Wednesday (polygon not fetched yet).
    _write(db, sid, _bars(Timeframe.h1, _hours(TUE) + _hours(WED), "resample:m15", 500.0), at=9.0)
    with db.read() as conn:
        got = read_bars(conn, sid, "h1", TUE, THU, precedence=PREC)
        frame = read_bars_frame(conn, sid, "h1", TUE, THU, precedence=PREC)
        part = read_bars(conn, sid, "h1", TUE + 10 * HOUR, TUE + 12 * HOUR, precedence=PREC)
        unordered = read_bars(conn, sid, "h1", TUE, THU)
    assert got.ts.tolist() == _hours(TUE) + _hours(WED)
    assert got.open.tolist() == [100.0 + i for i in range(7)] + [507.0 + i for i in range(7)]
    assert got.provider == "polygon+resample:m15" and got.basis == Basis.raw
    assert frame["provider"].tolist() == ["polygon"] * 7 + ["resample:m15"] * 7
    assert frame["layer"].tolist() == ["historical"] * 14 and set(frame["basis"]) == {"raw"}
    # A partial read of Tuesday selects as the whole session does.
    assert part.open.tolist() == [101.0, 102.0] and part.provider == "polygon"
    # Without a configured order native bars still come before resampled ones.
    np.testing.assert_array_equal(unordered.open, got.open)


def test_a_gap_in_the_preferred_source_is_not_filled_from_another(db: Database) -> None:
    sid = _symbol(db)
    _write(db, sid, _bars(Timeframe.h1, _hours(TUE)[:3], "polygon", 100.0))
    _write(db, sid, _bars(Timeframe.h1, _hours(TUE), "alpaca", 200.0), at=5.0)
    with db.read() as conn:
        got = read_bars(conn, sid, "h1", TUE, THU, precedence=PREC)
        flipped = read_bars(conn, sid, "h1", TUE, THU, precedence=["alpaca", "polygon"])
        only = read_bars(conn, sid, "h1", TUE, THU, precedence=PREC, provider="alpaca")
    assert got.open.tolist() == [100.0, 101.0, 102.0] and got.provider == "polygon"
    assert flipped.open.tolist() == [200.0 + i for i in range(7)] and flipped.provider == "alpaca"
    assert len(only) == 7 and only.provider == "alpaca"


def test_split_adjusted_and_raw_bars_are_never_mixed(db: Database) -> None:
    sid = _symbol(db)
    days = [TUE - DAY, TUE, WED, THU, THU + DAY]  # Monday .. Friday
    _write(db, sid, _bars(Timeframe.d1, days[:2], "polygon", 400.0))
    _write(db, sid, _bars(Timeframe.d1, days, "yahoo", 100.0, Basis.split_adjusted), at=7.0)
    with db.read() as conn:
        raw = read_bars(conn, sid, "d1", days[0], days[-1] + DAY, precedence=PREC)
        split = read_bars(conn, sid, "d1", days[0], days[-1] + DAY, precedence=PREC, basis="split")
        yahoo_first = read_bars(conn, sid, "d1", days[0], days[-1] + DAY, precedence=["yahoo", "polygon"])
        frame = read_bars_frame(conn, sid, "d1", days[0], days[-1] + DAY, precedence=PREC)
        stored = dict(conn.execute(sa.select(bars.c.provider, bars.c.basis).distinct()).all())
        with pytest.raises(InvalidInput, match="basis"):
            read_bars(conn, sid, "d1", days[0], days[-1], basis="adjusted")
    assert stored == {"polygon": "raw", "yahoo": "split"}
    # Raw Polygon is preferred: its basis is the read's, and Yahoo's split-adjusted days stay out.
    assert raw.ts.tolist() == days[:2] and raw.open.tolist() == [400.0, 401.0]
    assert raw.basis == Basis.raw and raw.provider == "polygon"
    assert set(frame["basis"]) == {"raw"} and len(frame) == 2
    assert split.ts.tolist() == days and split.basis == Basis.split_adjusted and split.provider == "yahoo"
    assert (
        yahoo_first.open.tolist() == [100.0 + i for i in range(5)]
        and yahoo_first.basis == Basis.split_adjusted
    )


def test_an_intraday_bar_without_a_historical_twin_is_not_returned(db: Database) -> None:
    sid = _symbol(db)
    quarters = _quarters(TUE)
    _write(db, sid, _bars(Timeframe.m15, quarters[:-1], "polygon", 100.0))  # 15:45 never came
    _write(db, sid, _bars(Timeframe.m15, quarters, "tradier", 300.0), layer=Layer.intraday, at=9.0)
    _write(db, sid, _bars(Timeframe.m15, _quarters(WED), "tradier", 600.0), layer=Layer.intraday, at=9.0)
    _write(db, sid, _bars(Timeframe.m15, quarters + _quarters(THU), "model", 0.5), layer=Layer.forecast)
    with db.read() as conn:
        got = read_bars(conn, sid, "m15", TUE, THU + DAY, precedence=PREC)
        frame = read_bars_frame(conn, sid, "m15", TUE, THU + DAY, precedence=PREC, layers=list(Layer))
        provisional = read_bars(conn, sid, "m15", TUE, THU + DAY, layers=["intraday"], precedence=PREC)
    assert got.ts.tolist() == quarters[:-1] + _quarters(WED)
    assert got.open[:25].tolist() == [100.0 + i for i in range(25)]  # no 15:45 from tradier
    assert got.provider == "polygon+tradier"
    assert len(provisional) == 52 and provisional.open[25] == 325.0
    # Forecast bars only where no real bar exists for the session (Thursday), never in between.
    by_day = frame.groupby(pd.DatetimeIndex(frame.index).normalize())["layer"]
    assert [sorted(set(v)) for _, v in by_day] == [["historical"], ["intraday"], ["forecast"]]
    assert frame[frame["layer"] == "forecast"].index[0].value // 10**9 == _quarters(THU)[0]


@pytest.mark.parametrize(
    "n", [5, 2_500]
)  # 2,500 complete bars: PostgreSQL's direct COPY into bars, then its staged merge
def test_every_write_path_stores_the_basis(db: Database, n: int) -> None:
    sid = _symbol(db)
    ts = OPEN + 60 * np.arange(n, dtype=np.int64)
    o = 50.0 + np.arange(n, dtype=np.float64)
    complete = BarBatch(
        "AAPL",
        Timeframe.m1,
        "alpaca",
        ts,
        o,
        o + 1,
        o - 1,
        o,
        o,
        o + 0.1,
        np.ones(n, dtype=np.int64),
        basis=Basis.all_adjusted,
    )
    _write(db, sid, complete, at=1.0)
    vwap = complete.vwap.copy()
    vwap[0] = np.nan  # PostgreSQL: staged, plain INSERT for a fresh range
    _write(
        db,
        sid,
        dataclasses.replace(complete, provider="yahoo", vwap=vwap, basis=Basis.split_adjusted),
        at=1.0,
    )
    with db.read() as conn:
        stored = conn.execute(
            sa.select(bars.c.provider, bars.c.basis, sa.func.count()).group_by(bars.c.provider, bars.c.basis)
        ).all()
    assert sorted(tuple(r) for r in stored) == [("alpaca", "all", n), ("yahoo", "split", n)]
    # A newer fetch of the same bars under another basis replaces the basis with the values (merge path).
    _write(db, sid, complete.with_basis(Basis.raw), at=2.0)
    with db.read() as conn:
        bases = conn.execute(sa.select(bars.c.basis).where(bars.c.provider == "alpaca").distinct()).all()
        got = read_bars(conn, sid, "m1", OPEN, OPEN + n * 60, precedence=["alpaca"])
    assert [b for (b,) in bases] == ["raw"] and got.basis == Basis.raw and len(got) == n


def _session_m15(db: Database, sid: int, provider: str, base: float, keep: slice = slice(None)) -> BarBatch:
    batch = _bars(
        Timeframe.m15,
        _quarters(TUE),
        provider,
        base,
        Basis.split_adjusted if provider == "alpaca" else Basis.raw,
    )
    batch = batch.take(keep)
    _write(db, sid, batch, at=3.0)
    return batch


@pytest.mark.parametrize("first", ["polygon", "alpaca"])
def test_derived_h1_comes_from_one_provider_of_m15(db: Database, first: str) -> None:
    sid = _symbol(db)
    polygon = _session_m15(db, sid, "polygon", 100.0)
    alpaca = _session_m15(db, sid, "alpaca", 200.0, slice(1, None))  # alpaca lacks 09:30
    with db.write() as conn:
        add_coverage(conn, sid, Timeframe.m15, [CoverageSpan(OPEN, CLOSE, None)])
        derive_after(
            conn,
            symbol_id=sid,
            source=Timeframe.m15,
            start=OPEN,
            end=CLOSE,
            derivations=parse_derivations(["m15->h1"]),
            calendar=CAL,
            layer=Layer.historical,
            precedence=[first, "polygon" if first == "alpaca" else "alpaca"],
        )
    with db.read() as conn:
        derived = read_bars(conn, sid, "h1", TUE, WED, provider="resample:m15")
        stored = conn.execute(sa.select(bars.c.basis).where(bars.c.timeframe == "h1").distinct()).all()
    want = resample(polygon if first == "polygon" else alpaca, Timeframe.h1, CAL, provider="resample:m15")
    assert derived.ts.tolist() == _hours(TUE)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(derived, col), getattr(want, col), err_msg=col)
    # The 09:00 bucket is alpaca's 09:45 bar alone, never polygon's 09:30 spliced in.
    assert derived.open[0] == (100.0 if first == "polygon" else 201.0)
    assert [b for (b,) in stored] == [want.basis.value]


def test_final_derived_bars_are_built_from_final_source_bars_only(db: Database) -> None:
    sid = _symbol(db)
    _write(db, sid, _bars(Timeframe.m15, _quarters(TUE), "tradier", 300.0), layer=Layer.intraday)
    with db.write() as conn:
        add_coverage(conn, sid, Timeframe.m15, [CoverageSpan(OPEN, CLOSE, None)])
        written = derive_after(
            conn,
            symbol_id=sid,
            source=Timeframe.m15,
            start=OPEN,
            end=CLOSE,
            derivations=parse_derivations(["m15->h1"]),
            calendar=CAL,
            layer=Layer.historical,
            precedence=PREC,
        )
    assert written == 0


class _SplitSynthetic(SyntheticProvider):
    """A synthetic provider declaring split-adjusted bars (as Yahoo does)."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, basis=Basis.split_adjusted)


def test_facade_reads_by_the_routers_order_and_one_basis(db: Database) -> None:
    polygon = SyntheticProvider(calendar=CAL, seed=1, name="polygon")
    yahoo = _SplitSynthetic(calendar=CAL, seed=2, name="yahoo")
    bf = Barfill(db.url, providers={"polygon": polygon, "yahoo": yahoo})
    try:
        # Polygon (pinned) fetched Tuesday and Wednesday; then Yahoo (pinned) the rest of the week.
        job = bf.ensure("AAPL", "h1", start="2024-03-12", end="2024-03-13", provider="polygon").job
        bf.wait(job, poll_s=0.05)
        job = bf.ensure("AAPL", "h1", start="2024-03-11", end="2024-03-16", provider="yahoo").job
        bf.wait(job, poll_s=0.05)
        assert bf.app.precedence.historical[:2] == ("polygon", "yahoo")
        frame = bf.bars("AAPL", "h1", start="2024-03-11", end="2024-03-16")
        split = bf.bars("AAPL", "h1", start="2024-03-11", end="2024-03-16", basis="split")
    finally:
        bf.close()
    truth = polygon.truth("AAPL", Timeframe.h1, TUE, THU)
    # Raw Polygon is preferred: its two sessions only; Yahoo's split-adjusted days are not mixed in.
    assert set(frame["provider"]) == {"polygon"} and set(frame["basis"]) == {"raw"}
    np.testing.assert_array_equal(frame["close"].to_numpy(), truth.close)
    assert len(frame) == 14
    assert set(split["provider"]) == {"yahoo"} and set(split["basis"]) == {"split"}
    assert {11, 14, 15} <= set(split.index.day)  # Monday, Thursday, Friday at least


def test_migration_keeps_bars_and_records_yahoo_as_split_adjusted(db: Database) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    with db.write() as conn:
        for provider in ("polygon", "yahoo"):
            conn.execute(
                sa.text(
                    "INSERT INTO bars (symbol_id, timeframe, ts, provider, layer, open, high, low, close, "
                    "volume, fetched_at) VALUES (1, 'd1', :ts, :p, 'historical', 1, 2, 0.5, 1.5, 10, 1)"
                ),
                {"ts": TUE, "p": provider},
            )
    migrate.upgrade(db)
    migrate.require_current(db)
    with db.read() as conn:
        rows = conn.execute(
            sa.select(bars.c.provider, bars.c.close, bars.c.basis).order_by(bars.c.provider)
        ).all()
    assert [tuple(r) for r in rows] == [("polygon", 1.5, "raw"), ("yahoo", 1.5, "split")]
