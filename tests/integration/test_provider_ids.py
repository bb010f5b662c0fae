"""bars.provider stored as an id (migration 0012): every row survives both ways; names in, names out."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.errors import DatabaseError
from barfill.store import migrate
from barfill.store.bar_reads import read_bars, read_bars_frame
from barfill.store.bars import only_written, upsert_bars
from barfill.store.db import Database
from barfill.store.reports import bar_counts
from barfill.store.schema import bars, providers
from barfill.store.symbols import ensure_symbols

# Providers, a derivation, forecast models; one name with a quote (the migration writes SQL literals).
_NAMES = ["polygon", "alpaca", "resample:polygon", "model-x.v2", "o'brien", "yahoo"]
_INSERT = (
    "INSERT INTO bars (symbol_id, timeframe, ts, provider, layer, open, high, low, close, volume, "
    "fetched_at, basis) VALUES (1, 1, :ts, :provider, :layer, 1, 2, 0.5, :close, 10, 7, 'raw')"
)
T0 = 1_700_000_040


def _downgrade(db: Database, revision: str) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _rows(conn: sa.Connection) -> list[tuple[object, ...]]:
    q = sa.select(bars.c.ts, bars.c.provider, bars.c.layer, bars.c.close).order_by(bars.c.ts)
    return [tuple(r) for r in conn.execute(q)]


def test_every_row_and_provider_survives_0012_both_ways(db: Database) -> None:
    _downgrade(db, "0011")
    # Two rows per provider, in two layers; names as stored before 0012.
    rows = [(i, name, 1 + i % 2, 1.5 + i) for i, name in enumerate(_NAMES * 2)]
    with db.write() as conn:
        for ts, name, layer, close in rows:
            conn.execute(sa.text(_INSERT), {"ts": ts, "provider": name, "layer": layer, "close": close})
    migrate.upgrade(db)
    migrate.require_current(db)
    expected = [
        (ts, name, "historical" if layer == 1 else "intraday", close) for ts, name, layer, close in rows
    ]
    with db.read() as conn:
        assert _rows(conn) == expected
        ids: dict[str, int] = dict(conn.execute(sa.text("SELECT name, id FROM providers")).all())
        stored = conn.execute(sa.text("SELECT ts, provider FROM bars ORDER BY ts")).all()
    assert sorted(ids) == sorted(_NAMES)
    assert sorted(ids, key=ids.__getitem__) == sorted(_NAMES)  # ids in name order
    assert [tuple(r) for r in stored] == [(ts, ids[name]) for ts, name, _, _ in rows]
    _downgrade(db, "0011")
    with db.read() as conn:
        text_rows = conn.execute(sa.text("SELECT ts, provider, layer, close FROM bars ORDER BY ts")).all()
    assert [tuple(r) for r in text_rows] == rows
    migrate.upgrade(db)
    with db.read() as conn:
        assert _rows(conn) == expected


def _batch(provider: str, n: int = 3, start: int = T0) -> BarBatch:
    ts = start + 60 * np.arange(n, dtype=np.int64)
    o = 100.0 + np.arange(n, dtype=np.float64)
    return BarBatch("AAPL", Timeframe.m1, provider, ts, o, o + 2, o - 2, o + 1, o * 10)


def _symbol(db: Database) -> int:
    with db.write() as conn:
        return ensure_symbols(conn, ["AAPL"])["AAPL"]


def test_a_new_provider_gets_an_id_on_first_write_and_reads_by_name(db: Database) -> None:
    sid = _symbol(db)
    with db.write() as conn:
        upsert_bars(conn, sid, _batch("polygon"), layer=Layer.historical, fetched_at=1.0)
        # A forecast model nobody named before, and a big batch (PostgreSQL's COPY path).
        upsert_bars(conn, sid, _batch("model-7", 3000, T0 + 86400), layer=Layer.forecast, fetched_at=2.0)
    with db.write() as conn:
        upsert_bars(conn, sid, _batch("polygon", 5), layer=Layer.historical, fetched_at=3.0)  # 3 updates
    with db.read() as conn:
        names = sorted(conn.execute(sa.select(providers.c.name)).scalars())
        polygon = read_bars(conn, sid, "m1", T0, T0 + 10**6, provider="polygon")
        model = read_bars(conn, sid, "m1", T0, T0 + 10**6, layers=["forecast"], provider="model-7")
        nobody = read_bars(conn, sid, "m1", T0, T0 + 10**6, provider="nobody")
        frame = read_bars_frame(conn, sid, "m1", T0, T0 + 10**6, layers=["historical", "forecast"])
        counts = bar_counts(conn)
        mine = only_written(
            conn,
            sid,
            Timeframe.m1,
            T0,
            T0 + 300,
            layers=[Layer.historical],
            provider="polygon",
            layer=Layer.historical,
            fetched_at=3.0,
        )
    assert names == ["model-7", "polygon"]
    assert (polygon.provider, len(polygon)) == ("polygon", 5)
    assert (model.provider, len(model)) == ("model-7", 3000)
    assert len(nobody) == 0
    assert set(frame["provider"]) == {"polygon", "model-7"}
    assert sorted(counts) == [("AAPL", "m1", "model-7", 3000), ("AAPL", "m1", "polygon", 5)]
    assert mine == 5


def test_a_rolled_back_first_write_leaves_no_provider_and_a_retry_makes_it(db: Database) -> None:
    sid = _symbol(db)
    with pytest.raises(RuntimeError), db.write() as conn:
        upsert_bars(conn, sid, _batch("fresh"), layer=Layer.historical, fetched_at=1.0)
        raise RuntimeError("the slice failed after its bars were written")
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(providers)).scalar_one() == 0
    with db.write() as conn:
        upsert_bars(conn, sid, _batch("other"), layer=Layer.historical, fetched_at=1.0)
        upsert_bars(conn, sid, _batch("fresh", start=T0 + 600), layer=Layer.historical, fetched_at=1.0)
    with db.read() as conn:
        counts = bar_counts(conn)
        ids = dict(conn.execute(sa.select(providers.c.name, providers.c.id)).all())
        stored: dict[int, int] = dict(conn.execute(sa.text("SELECT DISTINCT provider, 0 FROM bars")).all())
    assert sorted(counts) == [("AAPL", "m1", "fresh", 3), ("AAPL", "m1", "other", 3)]
    assert set(stored) == set(ids.values())


def test_a_provider_id_beyond_smallint_is_a_clear_error(db: Database) -> None:
    sid = _symbol(db)
    with db.write() as conn:
        conn.execute(sa.insert(providers).values(id=40_000, name="late"))
    with pytest.raises(DatabaseError, match="'late'.*32767"), db.write() as conn:
        upsert_bars(conn, sid, _batch("late"), layer=Layer.historical, fetched_at=1.0)
