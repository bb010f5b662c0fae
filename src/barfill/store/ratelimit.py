"""A rate limiter shared by every worker process, held in the database.

One row per provider in ``rate_limits`` holds the GCRA theoretical arrival
time ``tat`` (Unix seconds on the **database clock**, so machines with skewed
clocks still agree). Taking a slot is one conditional statement::

    UPDATE rate_limits SET tat = max(tat, now) + spacing, updated_at = now,
                           requests = requests + 1
    WHERE provider = :p AND tat - :tolerance <= now RETURNING tat

The same row keeps lifetime counters for the dashboard: ``requests`` (slots
granted, counted by the granting statement itself, so no extra round trip),
``throttled`` (penalties: 429 / Retry-After) and ``errors`` (failed provider
calls, reported by the worker through :meth:`SqlRateLimiter.record_error`).

On PostgreSQL the row lock serializes concurrent updaters (a waiter re-checks
the condition on the new row version); on SQLite :meth:`Database.write`
starts with ``BEGIN IMMEDIATE``, which serializes writers. The arithmetic is
:mod:`barfill.domain.gcra`'s, and the tests check both agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from barfill.domain import gcra
from barfill.domain.capabilities import RateLimit
from barfill.errors import ProviderError
from barfill.ports import RateLimiter
from barfill.store.db import Database, db_now
from barfill.store.schema import rate_limits

log = logging.getLogger("barfill.ratelimit")

# A refused request always waits a little, even if the clock moved past the
# slot between the UPDATE and the read that computes the wait.
_MIN_WAIT_S = 0.001
# Late grants dropped in a row before one is used anyway (see :func:`acquire`).
_MAX_DROPS = 3


def _greatest(a: ColumnElement[float], b: ColumnElement[float]) -> ColumnElement[float]:
    # SQLite's scalar max() and PostgreSQL's greatest() differ; CASE is portable.
    return sa.case((a > b, a), else_=b)


class SqlRateLimiter:
    """GCRA over the ``rate_limits`` table; implements :class:`barfill.ports.RateLimiter`.

    Each instance remembers the last :class:`RateLimit` it was asked about per
    provider, so :meth:`penalize` can add that limit's burst tolerance and keep
    ``Retry-After`` exact (the row stores only ``tat``).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._limits: dict[str, RateLimit] = {}

    def try_acquire(self, provider: str, limit: RateLimit) -> float:
        """Take one slot: 0.0 if granted now, else the seconds to wait (> 0) before asking again."""
        return self.take(provider, limit)[0]

    def take(self, provider: str, limit: RateLimit) -> tuple[float, float, float]:
        """:meth:`try_acquire`, plus when it was decided and the budget it left.

        Returns ``(wait_s, decided, tat)``: ``decided`` is ``time.monotonic()``
        just before the deciding statement (the grant's instant on the database
        clock is no earlier, so ``time.monotonic() - decided`` bounds how long
        ago the slot was granted, without the wait for SQLite's write lock);
        ``tat`` is the arrival time stored by a grant (0.0 when refused), for
        :meth:`defer`.
        """
        self._limits[provider] = limit
        interval = gcra.spacing_s(limit)
        tolerance = gcra.burst_tolerance_s(limit)
        with self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                # A grant must come back fast (it is only good for the send margin), and
                # losing one to a server crash costs nothing: don't wait for the WAL flush.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            decided = time.monotonic()
            tat_after = self._update(conn, provider, interval, tolerance)
            if tat_after is not None:
                return 0.0, decided, tat_after
            row = self._read(conn, provider)
            if row is None:
                self._insert(conn, provider)
                decided = time.monotonic()
                tat_after = self._update(conn, provider, interval, tolerance)
                if tat_after is not None:
                    return 0.0, decided, tat_after
                row = self._read(conn, provider)
                if row is None:  # pragma: no cover - the row was just inserted
                    raise RuntimeError(f"rate_limits row for {provider!r} vanished")
        tat, now = row
        return max(tat - tolerance - now, _MIN_WAIT_S), decided, 0.0

    def defer(self, provider: str, granted_tat: float, seconds: float) -> None:
        """Shift every grant after the one that stored ``granted_tat`` by ``seconds``.

        For a grant that reached its worker late: sent anyway, it arrives up to
        ``seconds`` later than the spacing allows for, so the requests after it
        wait that much longer (``tat = max(tat, granted_tat) + seconds``). The
        grant right after it then comes no earlier than ``seconds`` after its
        due time, and so every later one.
        """
        with self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            tat = rate_limits.c.tat
            conn.execute(
                sa.update(rate_limits)
                .where(rate_limits.c.provider == provider)
                .values(
                    tat=_greatest(tat, sa.literal(granted_tat, sa.Double)) + sa.literal(seconds, sa.Double)
                )
            )

    def unsent(self, provider: str) -> None:
        """A grant dropped as too late (see :func:`acquire`): the provider never saw it."""
        with self.db.write() as conn:
            conn.execute(
                sa.update(rate_limits)
                .where(rate_limits.c.provider == provider, rate_limits.c.requests > 0)
                .values(requests=rate_limits.c.requests - 1)
            )

    def penalize(self, provider: str, seconds: float, *, limit: RateLimit | None = None) -> None:
        """Push the provider's budget so nobody is granted a slot within ``seconds`` from now.

        Args:
            provider: the provider's name.
            seconds: the back-off (a 429's ``Retry-After``, or a default).
            limit: the provider's limit, to add its burst tolerance; defaults
                to the last limit this instance used for ``provider``.
        """
        limit = limit or self._limits.get(provider)
        tolerance = 0.0 if limit is None else gcra.burst_tolerance_s(limit)
        with self.db.write() as conn:
            now = db_now(conn)
            target = now + sa.literal(max(seconds, 0.0) + tolerance, sa.Double)
            self._insert(conn, provider)
            conn.execute(
                sa.update(rate_limits)
                .where(rate_limits.c.provider == provider)
                .values(
                    tat=_greatest(rate_limits.c.tat, target),
                    updated_at=now,
                    throttled=rate_limits.c.throttled + 1,
                )
            )

    def record_error(self, provider: str) -> None:
        """Count one failed call to ``provider`` (lifetime ``errors``); the budget is untouched.

        The worker calls this once per provider call that failed, whatever the
        error (a 429 is counted here and, through :meth:`penalize`, as throttled).
        """
        with self.db.write() as conn:
            self._insert(conn, provider)
            conn.execute(
                sa.update(rate_limits)
                .where(rate_limits.c.provider == provider)
                .values(errors=rate_limits.c.errors + 1)
            )

    def peek(self, provider: str, limit: RateLimit) -> float:
        """Seconds until a slot is free, without taking it (0.0: one is free now).

        A worker asks this before claiming, so it does not hold slices it
        cannot start; the slot itself is taken later with :meth:`try_acquire`.
        """
        with self.db.read() as conn:
            row = self._read(conn, provider)
        if row is None:
            return 0.0
        tat, now = row
        return max(tat - gcra.burst_tolerance_s(limit) - now, 0.0)

    def tat(self, provider: str) -> float | None:
        """The stored theoretical arrival time (database clock), or None if never used."""
        with self.db.read() as conn:
            row = self._read(conn, provider)
        return None if row is None else row[0]

    # -- statements -------------------------------------------------------------

    @staticmethod
    def _update(conn: Connection, provider: str, interval: float, tolerance: float) -> float | None:
        now = db_now(conn)
        tat = rate_limits.c.tat
        stmt = (
            sa.update(rate_limits)
            .where(rate_limits.c.provider == provider, tat - sa.literal(tolerance, sa.Double) <= now)
            .values(
                tat=_greatest(tat, now) + sa.literal(interval, sa.Double),
                updated_at=now,
                requests=rate_limits.c.requests + 1,
            )
            .returning(tat)
        )
        value = conn.execute(stmt).scalar_one_or_none()
        return None if value is None else float(value)

    @staticmethod
    def _read(conn: Connection, provider: str) -> tuple[float, float] | None:
        stmt = sa.select(rate_limits.c.tat, db_now(conn)).where(rate_limits.c.provider == provider)
        row = conn.execute(stmt).first()
        return None if row is None else (float(row[0]), float(row[1]))

    @staticmethod
    def _insert(conn: Connection, provider: str) -> None:
        # A fresh row starts at ``now``: the full burst is available at once.
        now = db_now(conn)
        values = {"provider": provider, "tat": now, "updated_at": now}
        if conn.dialect.name == "postgresql":
            conn.execute(postgresql.insert(rate_limits).values(values).on_conflict_do_nothing())
        else:
            conn.execute(sqlite.insert(rate_limits).values(values).on_conflict_do_nothing())


# One waiter per (event loop, provider) polls the database; the others queue
# here, so a slot is raced for by one coroutine per process, not by all of them.
_waiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


# Providers each event loop has sent a request to: the first one (a new connection,
# first-time code paths) may leave up to COLD_S late, so the grants after it wait that.
_warm: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[str]] = weakref.WeakKeyDictionary()
COLD_S = 0.05


def _lock_for(provider: str) -> asyncio.Lock:
    locks = _waiters.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(provider, asyncio.Lock())


async def acquire(
    limiter: RateLimiter,
    provider: str,
    limit: RateLimit,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] | None = None,
    max_wait_s: float | None = None,
) -> float:
    """Wait until ``limiter`` grants one slot for ``provider``; returns the seconds waited.

    ``take`` runs in a thread (it is a blocking database call). Between
    attempts this sleeps exactly the wait the limiter returned: the limiter,
    not this loop, decides the spacing. Within one process only one coroutine
    per provider polls the limiter at a time.

    A grant is good for :func:`gcra.send_margin_s` only (see
    :mod:`barfill.domain.gcra`). When more than that passed between asking and
    getting the answer back here (a busy event loop, a slow commit), the
    grants after it are pushed back by its lateness (:meth:`SqlRateLimiter.defer`)
    and it is used if that push came back within half a margin more; else it
    is dropped and another slot asked for. Either way a request never reaches
    the provider later than the spacing allows for. The caller must send at
    once. A loop's first grant for a provider is treated as ``COLD_S`` late
    (its first connection). After ``_MAX_DROPS`` drops in a row (a machine too loaded to answer
    within the margin at all) the next grant is used anyway, with a warning,
    rather than never sending. Lateness is measured on real time from the
    limiter's own stamp; with ``clock`` (a simulated clock that ``sleep``
    sleeps on) it is measured on that clock from the answer's return, so
    only simulated time makes a grant late, never a slow machine.

    Raises:
        ProviderError: ``rate_limited`` (retryable, with ``retry_after_s``) when
            the total wait would exceed ``max_wait_s``, so a worker can give the
            slice back instead of holding it while it sleeps.
    """
    waited = 0.0
    fresh_s = gcra.send_margin_s(limit)
    dropped = 0
    warm = _warm.setdefault(asyncio.get_running_loop(), set())
    now = time.monotonic if clock is None else clock

    def take() -> tuple[float, float, float]:
        wait_s, decided, tat = limiter.take(provider, limit)
        return wait_s, decided if clock is None else clock(), tat

    async with _lock_for(provider):
        while True:
            wait_s, decided, tat = await asyncio.to_thread(take)
            if wait_s <= 0:
                late_s = now() - decided
                cold = provider not in warm
                if late_s <= fresh_s and not cold:
                    return waited
                if cold:  # this loop's first request: its first connection may leave late
                    warm.add(provider)
                    late_s = max(late_s, COLD_S)
                if dropped >= _MAX_DROPS:
                    log.warning("%s: grant %.3f s late (margin %.3f s); sent", provider, late_s, fresh_s)
                    return waited
                await asyncio.to_thread(limiter.defer, provider, tat, late_s)
                if now() - decided <= late_s + fresh_s / 2:
                    return waited
                dropped += 1
                await asyncio.to_thread(limiter.unsent, provider)
                log.info("%s: grant %.3f s late (margin %.3f s); dropped", provider, late_s, fresh_s)
                continue
            if max_wait_s is not None and waited + wait_s > max_wait_s:
                raise ProviderError(
                    "rate_limited",
                    f"{provider}: no request slot within {max_wait_s:g} s (next in {wait_s:.2f} s)",
                    retryable=True,
                    retry_after_s=wait_s,
                )
            await sleep(wait_s)
            waited += wait_s
