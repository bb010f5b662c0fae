"""Only one scheduler ticks at a time on PostgreSQL; a standby takes over when the leader dies."""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.orchestrator import Leadership
from barfill.store.db import Database
from tests.e2e.helpers import make_app


def _kill(db: Database, pid: int) -> None:
    url = make_url(db.url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        # Wait (up to a generous 60 s) until the backend has exited and released its locks:
        # on a loaded box the signal alone returns before the lock is gone.
        conn.execute("SELECT pg_terminate_backend(%s, 60000)", (pid,))


def test_one_leader_and_takeover_on_postgresql(postgres_db: Database) -> None:
    providers = {"synthetic": SyntheticProvider(calendar=get_calendar())}
    a, b = make_app(postgres_db, providers), make_app(postgres_db, providers)
    first, second = Leadership(a), Leadership(b)
    try:
        assert first.acquire() is True
        assert second.acquire() is False  # stands by
        assert first.acquire() is True  # still leader, idempotent
        # The leader's session dies (crash, network, restart): its lock goes with it.
        assert first._conn is not None
        pid = first._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        first._conn.commit()
        _kill(postgres_db, int(pid))
        assert second.acquire() is True
        assert first.acquire() is False  # the old leader notices and stands by
        second.release()
        assert first.acquire() is True
    finally:
        first.release()
        second.release()
        a.close()
        b.close()


def test_sqlite_everyone_may_tick(sqlite_db: Database) -> None:
    app = make_app(sqlite_db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    try:
        assert Leadership(app).acquire() and Leadership(app).acquire()
    finally:
        app.close()
