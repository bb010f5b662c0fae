"""Migration 0002 (job_runs.layer): existing slices survive as historical; the key includes the layer."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from barfill.domain.bars import Layer
from barfill.domain.slices import NewSlice
from barfill.domain.timeframes import Timeframe
from barfill.store import migrate
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.queue import SqlQueue
from barfill.store.schema import job_runs
from barfill.store.symbols import ensure_symbols

T0 = 1_700_000_400


def _to(db: Database, revision: str, *, down: bool) -> None:
    cfg = migrate._config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_existing_slices_survive_the_upgrade_as_historical(db: Database) -> None:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        did, _ = upsert_definition(conn, sid, "h1", window_days=30)
    _to(db, "0001", down=True)
    with db.write() as conn:
        conn.execute(
            sa.text(
                'INSERT INTO job_runs (definition_id, symbol_id, timeframe, start, "end", provider, '
                "status, priority, attempts, max_attempts, not_before, rows_written, created_at, updated_at) "
                "VALUES (:d, :s, 'h1', :a, :b, 'polygon', 'failed', 3, 5, 5, 0, 0, 0, 0)"
            ),
            {"d": did, "s": sid, "a": T0, "b": T0 + 3600},
        )
    migrate.upgrade(db)
    migrate.require_current(db)
    with db.read() as conn:
        (row,) = conn.execute(sa.select(job_runs)).all()
    assert (row.layer, row.status, row.priority, row.attempts) == ("historical", "failed", 3, 5)
    # A provisional twin of the same range is a different slice now.
    queue = SqlQueue(db)
    twin = NewSlice(did, sid, Timeframe.h1, T0, T0 + 3600, "polygon", layer=Layer.intraday)
    assert queue.enqueue([twin]).queued == 1
    assert queue.enqueue([twin]).queued == 0  # idempotent on the key with its layer
    (claimed,) = queue.claim("w", 5, 60.0)
    assert claimed.layer is Layer.intraday and claimed.provider == "polygon"
