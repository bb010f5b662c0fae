"""Shared fixtures: a migrated database per test, on SQLite and on PostgreSQL.

Database-parametrized tests carry the ids ``sqlite`` and ``postgresql`` so
``pytest -k postgresql`` selects exactly the PostgreSQL runs. PostgreSQL comes
from ``BARFILL_TEST_POSTGRES_URL`` (default: trust auth on 127.0.0.1:5432).
A session-scoped migrated template database is cloned per test
(``CREATE DATABASE ... TEMPLATE``), which is much faster than migrating each.
With ``CI=true`` an unreachable PostgreSQL fails the run; elsewhere the
PostgreSQL runs skip with the reason shown.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from barfill.store import migrate
from barfill.store.db import Database
from barfill.testing.clock import SimClock

PG_URL = os.environ.get("BARFILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_counter = itertools.count()
_PREFIX = f"barfill_t{os.getpid()}"
_HOW_TO_START = (
    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
    "(or point BARFILL_TEST_POSTGRES_URL at a server)"
)


def _admin_dsn() -> str:
    url = make_url(PG_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _pg_url_for(dbname: str) -> str:
    return (
        make_url(PG_URL).set(drivername="postgresql", database=dbname).render_as_string(hide_password=False)
    )


def _admin(sql: str) -> None:
    with psycopg.connect(_admin_dsn(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _drop_leftovers() -> None:
    """Drop databases left by test sessions that died (their pid is gone)."""
    with psycopg.connect(_admin_dsn(), autocommit=True, connect_timeout=5) as conn:
        names = [
            r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'barfill_t%'")
        ]
    for name in names:
        pid = name.removeprefix("barfill_t").split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a migrated template database, created once per test session."""
    try:
        with psycopg.connect(_admin_dsn(), autocommit=True, connect_timeout=5):
            pass
    except psycopg.OperationalError as e:
        message = f"PostgreSQL unreachable at {PG_URL}: {e}; {_HOW_TO_START}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    _drop_leftovers()
    name = f"{_PREFIX}_tpl"
    _admin(f'DROP DATABASE IF EXISTS "{name}"')
    _admin(f'CREATE DATABASE "{name}"')
    db = Database(_pg_url_for(name))
    migrate.upgrade(db)
    db.dispose()
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    db.dispose()
    return path


def _fresh_postgres(template: str) -> Iterator[Database]:
    name = f"{_PREFIX}_{next(_counter)}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    db = Database(_pg_url_for(name))
    try:
        yield db
    finally:
        db.dispose()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_sqlite(template: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "barfill.db"
    path.write_bytes(template.read_bytes())
    db = Database(f"sqlite:///{path}")
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A freshly migrated, empty database of each kind."""
    if request.param == "sqlite":
        yield from _fresh_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        yield from _fresh_postgres(request.getfixturevalue("pg_template"))


@pytest.fixture
def sqlite_db(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    yield from _fresh_sqlite(sqlite_template, tmp_path)


@pytest.fixture
def postgres_db(pg_template: str) -> Iterator[Database]:
    yield from _fresh_postgres(pg_template)


@pytest.fixture
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An un-migrated database (SQLite), for schema-check tests."""
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    yield db
    db.dispose()


SIM_T0 = 1_764_000_000.0  # 2025-11-24 16:00 UTC: where a test's simulated clock starts


@pytest.fixture
def sim() -> SimClock:
    return SimClock(SIM_T0)


@pytest.fixture
def simdb(db: Database, sim: SimClock) -> Iterator[Database]:
    """The test's database, opened again with the simulated clock."""
    clocked = Database(db.url, clock=sim)
    yield clocked
    clocked.dispose()
