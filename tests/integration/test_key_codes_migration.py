"""Migration 0011 (bars.timeframe and bars.layer as codes) keeps every row, both ways."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from barfill.store import migrate
from barfill.store.db import Database
from barfill.store.schema import LAYER_CODES, TIMEFRAME_CODES, bars

_ROWS = [
    (tf, layer, i)
    for i, (tf, layer) in enumerate((tf, layer) for tf in TIMEFRAME_CODES for layer in LAYER_CODES)
]
_INSERT = (
    "INSERT INTO bars (symbol_id, timeframe, ts, provider, layer, open, high, low, close, volume, "
    "fetched_at, basis) VALUES (1, :tf, :ts, 'polygon', :layer, 1, 2, 0.5, 1.5, 10, 7, 'raw')"
)


def test_every_timeframe_and_layer_survives_0011_both_ways(db: Database) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    with db.write() as conn:
        for tf, layer, ts in _ROWS:  # text, as stored before 0011
            conn.execute(sa.text(_INSERT), {"tf": tf, "layer": layer, "ts": ts})
    migrate.upgrade(db)
    migrate.require_current(db)
    with db.read() as conn:
        stored = conn.execute(sa.select(bars.c.timeframe, bars.c.layer, bars.c.ts).order_by(bars.c.ts)).all()
        codes = conn.execute(sa.text("SELECT timeframe, layer FROM bars ORDER BY ts")).all()
    assert [tuple(r) for r in stored] == _ROWS
    assert [tuple(r) for r in codes] == [(TIMEFRAME_CODES[tf], LAYER_CODES[la]) for tf, la, _ in _ROWS]
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    with db.read() as conn:
        text_rows = conn.execute(sa.text("SELECT timeframe, layer, ts FROM bars ORDER BY ts")).all()
    assert [tuple(r) for r in text_rows] == _ROWS
    migrate.upgrade(db)
    migrate.require_current(db)


def test_a_token_without_a_code_is_a_clear_error(db: Database) -> None:
    with db.read() as conn, pytest.raises(sa.exc.StatementError, match="'bogus'.*historical"):
        conn.execute(sa.select(bars.c.ts).where(bars.c.layer == "bogus")).all()
