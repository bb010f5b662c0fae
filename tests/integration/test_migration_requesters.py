"""Migration 0003 keeps existing definitions and slices: they become the ``default`` requester's."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from barfill.store import migrate
from barfill.store.db import Database
from barfill.store.definitions import list_definitions, upsert_definition


def _to(db: Database, revision: str, *, down: bool = False) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_existing_definitions_and_slices_survive_as_the_default_requesters(db: Database) -> None:
    _to(db, "0001", down=True)
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO symbols (id, ticker, created_at) VALUES (7, 'AAPL', 1.0)"))
        conn.execute(
            sa.text(
                "INSERT INTO job_definitions (id, symbol_id, timeframe, window_days, provider, created_at, "
                "updated_at) VALUES (3, 7, 'd1', 365, 'polygon', 1.0, 2.0)"
            )
        )
        conn.execute(
            sa.text(
                'INSERT INTO job_runs (id, definition_id, symbol_id, timeframe, "start", "end", provider, '
                "status, not_before, created_at, updated_at, finished_at) "
                "VALUES (11, 3, 7, 'd1', 100, 200, 'polygon', 'failed', 1.0, 1.0, 1.0, 5.0)"
            )
        )
    _to(db, "head")
    migrate.require_current(db)
    with db.write() as conn:
        (defn,) = list_definitions(conn)
        assert (defn.id, defn.symbol, defn.requester, defn.window_days, defn.provider) == (
            3,
            "AAPL",
            "default",
            365,
            "polygon",
        )
        run = conn.execute(sa.text("SELECT definition_id, status, revivals FROM job_runs")).one()
        assert tuple(run) == (3, "failed", 0)
        # A second requester of the same (symbol, timeframe) is now a row of its own...
        other, created = upsert_definition(conn, 7, "d1", start=0, end=86_400, requester="notebook")
        assert created and other != 3
        # ...and the same requester again is still one row.
        assert upsert_definition(conn, 7, "d1", window_days=30, requester="default") == (3, False)
    with db.read() as conn:
        assert {d.requester: d.window_days for d in list_definitions(conn)} == {
            "default": 30,
            "notebook": None,
        }


def test_downgrade_refuses_to_merge_requesters_silently(db: Database) -> None:
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO symbols (id, ticker, created_at) VALUES (7, 'AAPL', 1.0)"))
        upsert_definition(conn, 7, "d1", window_days=365, requester="scheduler")
        upsert_definition(conn, 7, "d1", window_days=30, requester="notebook")
    with pytest.raises(RuntimeError, match="several requesters"):
        _to(db, "0001", down=True)
    migrate.require_current(db)
