"""Engines, transactions and the database clock, for SQLite and PostgreSQL.

SQLite is the embedded default (WAL, so readers never block the writer);
PostgreSQL carries many workers on many machines. Everything above this
module is one code path; what differs lives here and in the queue's claim.

SQLite write transactions start with ``BEGIN IMMEDIATE``: a deferred
transaction that later upgrades to a write fails with SQLITE_BUSY at once,
ignoring ``busy_timeout``. Use :meth:`Database.write` for anything that writes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.sql.elements import ColumnElement

from barfill.errors import DatabaseError, DatabaseUnavailable, InvalidInput

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and pick the psycopg 3 driver.

    Raises:
        InvalidInput: for anything that is not a SQLite or PostgreSQL URL.
    """
    try:
        parsed = make_url(url)
    except exc.ArgumentError as e:
        raise InvalidInput("database_url", "a URL like sqlite:///path.db or postgresql://host/db", url) from e
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    raise InvalidInput("database_url", "a sqlite:/// or postgresql:// URL", url)


class Database:
    """One engine plus the few things that differ between dialects."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        self.is_postgres = self.dialect == "postgresql"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_size"] = pool_size
            # No pre-ping (a round trip per transaction): a connection found dead
            # raises DatabaseError once, SQLAlchemy drops the pool, and callers
            # (the worker loop) retry.
            kwargs["connect_args"] = {"connect_timeout": 5}
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._pid = os.getpid()

    def _check_fork(self) -> None:
        # A pooled connection must never cross a fork: the child starts a fresh pool.
        if os.getpid() != self._pid:
            self.engine.dispose(close=False)
            self._pid = os.getpid()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a plain (deferred) transaction, for reads."""
        self._check_fork()
        with wrap_exceptions(self.url), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on any error."""
        self._check_fork()
        with wrap_exceptions(self.url), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(barfill_write=True)
            with conn.begin():
                yield conn

    def now(self) -> float:
        """The database clock, in Unix seconds."""
        with self.read() as conn:
            return float(conn.execute(sa.select(db_now(conn))).scalar_one())

    def dispose(self) -> None:
        self.engine.dispose()


def db_now(conn: Connection | Engine | str) -> ColumnElement[float]:
    """The database clock as Unix seconds (float), as a SQL expression.

    Leases, backoff and rate limits are computed with this clock, never a
    worker's, so machines with skewed clocks still agree.
    """
    name = conn if isinstance(conn, str) else conn.dialect.name
    if name == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Double)
    return sa.literal_column("extract(epoch from clock_timestamp())::double precision", sa.Double)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver: we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("barfill_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextlib.contextmanager
def wrap_exceptions(url: str) -> Iterator[None]:
    """Turn driver errors into barfill's own, with the password hidden."""
    try:
        yield
    except exc.OperationalError as e:
        shown = make_url(url).render_as_string(hide_password=True)
        text = str(e.orig) if e.orig is not None else str(e)
        if _is_connect_failure(text):
            raise DatabaseUnavailable(f"cannot reach the database at {shown}: {text.strip()}") from e
        raise DatabaseError(f"database error ({shown}): {text.strip()}") from e
    except exc.InterfaceError as e:
        raise DatabaseUnavailable(f"database connection failed: {e.orig}") from e
    except exc.TimeoutError as e:  # every pooled connection busy for the whole pool timeout
        raise DatabaseError(f"database busy: no free connection ({e})") from e


def _is_connect_failure(text: str) -> bool:
    needles = (
        "connection refused",
        "could not connect",
        "connection failed",
        "unable to open database",
        "could not translate host",
        "does not exist",
        "timeout expired",
        "server closed the connection",
        "terminating connection",
    )
    low = text.lower()
    return any(n in low for n in needles)
