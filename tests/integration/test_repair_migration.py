"""Migration 0008 (bars.flag, job_runs.purpose, verifications, corrections) keeps existing rows."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from barfill.store import migrate
from barfill.store.db import Database
from barfill.store.schema import bars, job_runs


def test_existing_bars_and_slices_survive_0008_both_ways(db: Database) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO symbols (id, ticker, created_at) VALUES (1, 'OLD', 0)"))
        conn.execute(
            sa.text(
                "INSERT INTO job_definitions (id, symbol_id, timeframe, window_days, created_at, updated_at) "
                "VALUES (1, 1, 'd1', 30, 0, 0)"
            )
        )
        conn.execute(
            sa.text(
                'INSERT INTO job_runs (definition_id, symbol_id, timeframe, "start", "end", provider, '
                "not_before, created_at, updated_at) VALUES (1, 1, 'd1', 0, 86400, 'polygon', 0, 0, 0)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO bars (symbol_id, timeframe, ts, provider, layer, open, high, low, close, "
                "volume, fetched_at) VALUES (1, 'd1', 0, 'polygon', 'historical', 1, 2, 0.5, 1.5, 10, 0)"
            )
        )
    migrate.upgrade(db)
    migrate.require_current(db)
    with db.read() as conn:
        assert conn.execute(sa.select(job_runs.c.purpose)).scalars().all() == ["fill"]
        assert conn.execute(sa.select(bars.c.flag, bars.c.close)).all() == [(None, 1.5)]
    # Down again: verify slices go (the old key has no room for them), fill slices and bars stay.
    with db.write() as conn:
        conn.execute(
            sa.insert(job_runs).values(
                definition_id=1,
                symbol_id=1,
                timeframe="d1",
                start=0,
                end=86400,
                provider="polygon",
                purpose="verify",
                not_before=0,
                created_at=0,
                updated_at=0,
            )
        )
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_runs")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM bars")).scalar_one() == 1
    migrate.upgrade(db)
    migrate.require_current(db)
