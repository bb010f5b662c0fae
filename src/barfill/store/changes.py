"""Wait until the database may have changed, without querying it in a loop.

For a process that waits on other processes' commits (``ensure --wait``
watching a job that ``barfill serve``'s worker is filling): it re-reads only
when something was committed, and learns of it within milliseconds instead
of at its next poll.

* SQLite: ``PRAGMA data_version`` on one dedicated connection changes
  whenever another connection commits. Reading it runs no query and takes no
  lock (with WAL it reads the shared-memory index), so it is checked every
  :data:`SQLITE_CHECK_S`.
* PostgreSQL: ``LISTEN barfill``; every slice completion notifies in its own
  transaction (:meth:`barfill.store.queue.SqlQueue.complete_many`), so the
  wait ends when it commits. Another channel may be listened to instead:
  idle workers listen to :data:`barfill.store.queue.QUEUE_CHANNEL`, which
  every enqueue that queued something notifies.

Either way the wait is bounded by its timeout: a change that sends no signal
(a PostgreSQL slice that failed, a lost connection) is seen at the next
timeout, as by a plain poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from typing import Any

from sqlalchemy.engine import make_url

from barfill.store.db import Database

log = logging.getLogger("barfill.changes")
SQLITE_CHECK_S = 0.02


class Changes:
    """One waiter's view of the database's commits. Create in a coroutine; ``aclose`` when done."""

    def __init__(self, db: Database, *, channel: str = "barfill") -> None:
        self.db = db
        self.channel = channel
        self._probe: sqlite3.Connection | None = None
        self._version: int | None = None
        self._listen: Any = None  # psycopg.AsyncConnection, connected on first use
        self._listen_failed = False
        path = make_url(db.url).database if db.is_sqlite else None
        self._path = path if path and path != ":memory:" and not path.startswith("file:") else None

    async def wait(self, timeout_s: float) -> None:
        """Return soon after another connection commits, or after ``timeout_s`` seconds."""
        if self._path is not None:
            await self._wait_sqlite(timeout_s)
        elif self.db.is_postgres and not self._listen_failed:
            await self._wait_postgres(timeout_s)
        else:
            await asyncio.sleep(timeout_s)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._listen is not None:
            with contextlib.suppress(Exception):
                await self._listen.close()
            self._listen = None

    def _data_version(self) -> int | None:
        try:
            if self._probe is None:
                self._probe = sqlite3.connect(self._path or "", isolation_level=None, check_same_thread=False)
            (version,) = self._probe.execute("PRAGMA data_version").fetchone()
            return int(version)
        except sqlite3.Error:
            return None

    async def _wait_sqlite(self, timeout_s: float) -> None:
        if self._version is None:
            self._version = self._data_version()
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(SQLITE_CHECK_S, left))
            version = self._data_version()
            if version is None or version != self._version:
                self._version = version
                return

    async def _wait_postgres(self, timeout_s: float) -> None:
        import psycopg

        try:
            if self._listen is None:
                dsn = make_url(self.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
                self._listen = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
                await self._listen.execute(f"LISTEN {self.channel}")
            async for _ in self._listen.notifies(timeout=timeout_s, stop_after=1):
                return
        except (psycopg.Error, OSError) as e:
            log.info("LISTEN unavailable (%s); polling", type(e).__name__)
            self._listen_failed = True
            await self.aclose()
