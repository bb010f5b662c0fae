"""What every benchmark shares: a result row and the PostgreSQL/SQLite scratch databases.

Figures are ratios against a baseline measured in the same run (a raw bulk
insert, the ideal request count ...), so they mean the same on any machine.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from barfill.store import migrate
from barfill.store.db import Database

PG_URL = os.environ.get("BARFILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Result:
    """One figure: ``value`` in ``unit``; ``ratio`` against ``baseline`` when there is one."""

    suite: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


@contextmanager
def scratch_database(kind: str) -> Iterator[Database]:
    """A fresh, migrated database of ``kind`` ('sqlite' or 'postgresql'), dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
            migrate.upgrade(db)
            try:
                yield db
            finally:
                db.dispose()
        return
    name = f"barfill_bench_{os.getpid()}"
    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_URL).set(drivername="postgresql", database=name)
    db = Database(url.render_as_string(hide_password=False))
    migrate.upgrade(db)
    try:
        yield db
    finally:
        db.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
