"""Engines, transactions and the database clock, for SQLite and PostgreSQL.

SQLite is the embedded default (WAL, so readers never block the writer);
PostgreSQL carries many workers on many machines. Everything above this
module is one code path; what differs lives here and in the queue's claim.

SQLite write transactions start with ``BEGIN IMMEDIATE``: a deferred
transaction that later upgrades to a write fails with SQLITE_BUSY at once,
ignoring ``busy_timeout``. Use :meth:`Database.write` for anything that writes.

The database clock (:func:`db_now`) is the database server's own time, unless
the :class:`Database` was given a :class:`~barfill.ports.Clock` (a simulated
one, in tests): then ``db_now`` reads that clock *inside SQL*, so statements
built once and cached (the queue's claim) still see the time of each
execution. SQLite calls a registered function ``barfill_now()``; PostgreSQL
reads the setting ``barfill.now``, stamped from the clock at each transaction
begin (``set_config(..., is_local => true)``), so time is constant within a
transaction, as ``now()`` would be.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.sql.elements import ColumnElement

from barfill.errors import DatabaseError, DatabaseUnavailable, InvalidInput
from barfill.store import stamps

if TYPE_CHECKING:
    from barfill.ports import Clock

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Engines whose database clock follows an injected Clock (see the module docstring).
_CLOCKED: weakref.WeakSet[Engine] = weakref.WeakSet()
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_POSTGRES_NOW = "extract(epoch from clock_timestamp())::double precision"
_SQLITE_CLOCK_NOW = "barfill_now()"
_POSTGRES_CLOCK_NOW = "current_setting('barfill.now')::double precision"


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and pick the psycopg 3 driver.

    Raises:
        InvalidInput: for anything that is not a SQLite or PostgreSQL URL; the
            URL is shown with its password hidden (``***``).
    """
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        # Not parseable, so the password cannot be located: show only the scheme.
        scheme = url.split(":", 1)[0] if ":" in url else "?"
        raise InvalidInput(
            "database_url", "a URL like sqlite:///path.db or postgresql://host/db", f"{scheme}:…"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    shown = parsed.render_as_string(hide_password=True)
    raise InvalidInput("database_url", "a sqlite:/// or postgresql:// URL", shown)


class Database:
    """One engine plus the few things that differ between dialects.

    Args:
        url: a ``sqlite:///`` or ``postgresql://`` URL.
        pool_size: PostgreSQL connection pool size.
        clock: when given, the database clock (:func:`db_now`) follows it
            instead of the server's time (a simulated clock in tests). None
            (the default) leaves the SQL exactly as without this argument.
    """

    def __init__(self, url: str, *, pool_size: int = 5, clock: Clock | None = None) -> None:
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
        self.clock = clock
        if clock is not None:
            _follow_clock(self.engine, clock, sqlite=self.is_sqlite)
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
            stamps.begin(conn)
            try:
                with conn.begin():
                    yield conn
                    stamps.flush(conn)  # the touched symbols' counters move with this commit
            finally:
                stamps.end(conn)

    def now(self) -> float:
        """The database clock, in Unix seconds."""
        with self.read() as conn:
            return float(conn.execute(sa.select(db_now(conn))).scalar_one())

    def dispose(self) -> None:
        self.engine.dispose()


def db_now(conn: Connection | Engine | Database | str) -> ColumnElement[float]:
    """The database clock as Unix seconds (float), as a SQL expression.

    Leases, backoff and rate limits are computed with this clock, never a
    worker's, so machines with skewed clocks still agree. Given a
    :class:`Database` (or one of its connections or its engine) built with a
    clock, the expression reads that clock at execution time; given a bare
    dialect name, it is always the server's clock.
    """
    if isinstance(conn, str):
        name, clocked = conn, False
    elif isinstance(conn, Database):
        name, clocked = conn.dialect, conn.clock is not None
    else:
        name, clocked = conn.dialect.name, conn.engine in _CLOCKED
    if name == "sqlite":
        return sa.literal_column(_SQLITE_CLOCK_NOW if clocked else _SQLITE_NOW, sa.Double)
    return sa.literal_column(_POSTGRES_CLOCK_NOW if clocked else _POSTGRES_NOW, sa.Double)


def _follow_clock(engine: Engine, clock: Clock, *, sqlite: bool) -> None:
    """Make ``engine``'s database clock read ``clock`` (see the module docstring)."""
    _CLOCKED.add(engine)
    if sqlite:

        @event.listens_for(engine, "connect")
        def _register(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.create_function("barfill_now", 0, clock.now)

        return

    @event.listens_for(engine, "begin")
    def _stamp(conn: Connection) -> None:
        conn.exec_driver_sql("SELECT set_config('barfill.now', %(t)s, true)", {"t": repr(float(clock.now()))})


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
