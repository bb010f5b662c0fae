"""A rate limiter shared by every worker process, held in the database: a sliding log of grants.

The rule is :mod:`barfill.domain.sliding_log`'s: grant ``k`` is due at
``max(not_before, grant[k - N] + period + margin, grant[k - 1] + stagger)``. Per provider, one
``rate_limits`` row holds the grant count ``seq`` and the penalty floor
``not_before``; ``rate_limit_slots`` holds the last N grant instants, a ring
of N rows (slot ``k mod N`` holds grant ``k``). Times are Unix seconds on the
**database clock**, so machines with skewed clocks still agree.

Taking a slot is one short write transaction: lock the provider's row
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
serializes writers), read the two ring slots and the clock, decide with the pure
functions, and on a grant overwrite the slot and count it. The rule lives
in one place (the domain module); SQL only stores its state, and the tests
check the two agree.

The same row keeps lifetime counters for the dashboard: ``requests`` (slots
granted, counted by the granting transaction itself), ``throttled``
(penalties: 429 / Retry-After) and ``errors`` (failed provider calls,
reported by the worker through :meth:`SqlRateLimiter.record_error`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from barfill.domain import sliding_log
from barfill.domain.capabilities import RateLimit
from barfill.errors import BarfillError, ProviderError
from barfill.ports import RateLimiter
from barfill.store.db import Database, db_now
from barfill.store.schema import rate_limit_slots, rate_limits

log = logging.getLogger("barfill.ratelimit")

# A refused request always waits a little, even if the clock moved past the
# slot between the decision and the caller's sleep.
_MIN_WAIT_S = 0.001
# Late grants dropped in a row before one is used anyway (see :func:`acquire`).
_MAX_DROPS = 3

_slots = rate_limit_slots


class SqlRateLimiter:
    """The sliding log in ``rate_limits`` and ``rate_limit_slots``: a :class:`barfill.ports.RateLimiter`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def try_acquire(self, provider: str, limit: RateLimit) -> float:
        """Take one slot: 0.0 if granted now, else the seconds to wait (> 0) before asking again."""
        return self.take(provider, limit)[0]

    def take(self, provider: str, limit: RateLimit) -> tuple[float, float, int]:
        """:meth:`try_acquire`, plus when it was decided and which grant it was.

        Returns ``(wait_s, decided, seq)``: ``decided`` is ``time.monotonic()``
        just before the statement that reads the deciding clock (the grant's
        instant on the database clock is no earlier, so ``time.monotonic() -
        decided`` bounds how long ago the slot was granted, without the wait
        for the provider's lock); ``seq`` is the grant's number (-1 when
        refused), for :meth:`defer`.
        """
        with self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                # A grant must come back fast (it is only good for the send margin), and
                # losing one to a server crash costs nothing: don't wait for the WAL flush.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            seq, not_before = self._lock(conn, provider)
            slot = sliding_log.slot_of(seq, limit)
            decided = time.monotonic()
            # After the lock, in its own statement: the clock read is the decision's instant.
            now, at, before = self._anchors(conn, provider, seq, limit)
            d = sliding_log.decide(at, before, not_before, now, limit)
            if not d.granted:
                return max(d.wait_s, _MIN_WAIT_S), decided, -1
            self._record(conn, provider, slot, seq, now)
            return 0.0, decided, seq

    def defer(self, provider: str, seq: int, seconds: float) -> None:
        """Grant ``seq`` was sent ``seconds`` after it was granted: the grant N after it waits that too.

        For a grant that reached its worker late: sent anyway, it arrives up to
        ``seconds`` later than the log assumed, so its ring slot is moved by
        that much (if the ring has not moved past it).
        """
        with self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            conn.execute(
                sa.update(_slots)
                .where(_slots.c.provider == provider, _slots.c.seq == seq)
                .values(granted_at=_slots.c.granted_at + sa.literal(max(seconds, 0.0), sa.Double))
            )

    def unsent(self, provider: str) -> None:
        """A grant dropped as too late (see :func:`acquire`): the provider never saw it.

        Only the ``requests`` counter changes: the ring keeps the slot used, which
        costs at most one slot for one window and never over-sends.
        """
        with self.db.write() as conn:
            conn.execute(
                sa.update(rate_limits)
                .where(rate_limits.c.provider == provider, rate_limits.c.requests > 0)
                .values(requests=rate_limits.c.requests - 1)
            )

    def penalize(self, provider: str, seconds: float) -> None:
        """Push the provider's budget so nobody is granted a slot within ``seconds`` from now.

        Args:
            provider: the provider's name.
            seconds: the back-off (a 429's ``Retry-After``, or a default).
        """
        with self.db.write() as conn:
            now = db_now(conn)
            target = now + sa.literal(max(seconds, 0.0), sa.Double)
            self._insert(conn, provider)
            floor = rate_limits.c.not_before
            conn.execute(
                sa.update(rate_limits)
                .where(rate_limits.c.provider == provider)
                .values(
                    not_before=sa.case((floor > target, floor), else_=target),
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
            state = self._state(conn, provider, limit)
        if state is None:
            return 0.0
        at, now = state
        return 0.0 if at is None else max(at - now, 0.0)

    # -- statements -------------------------------------------------------------

    @classmethod
    def _state(cls, conn: Connection, provider: str, limit: RateLimit) -> tuple[float | None, float] | None:
        """(when the next grant is due or None, the database clock), or None for an unused provider."""
        r = rate_limits
        head = conn.execute(sa.select(r.c.seq, r.c.not_before).where(r.c.provider == provider)).first()
        if head is None:
            return None
        now, at, before = cls._anchors(conn, provider, int(head[0]), limit)
        due = sliding_log.due(at, before, float(head[1]), limit)
        return due, now

    @staticmethod
    def _anchors(
        conn: Connection, provider: str, seq: int, limit: RateLimit
    ) -> tuple[float, float | None, float | None]:
        """The database clock, :func:`sliding_log.anchor` and :func:`sliding_log.previous` for grant ``seq``.

        One statement reads the clock and the two ring slots; the latest grant of
        all is read only when the ring does not hold the grants asked for (N changed).
        """

        def held(slot: int) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
            mine = sa.and_(_slots.c.provider == provider, _slots.c.slot == slot)
            return (
                sa.select(_slots.c.seq).where(mine).scalar_subquery(),
                sa.select(_slots.c.granted_at).where(mine).scalar_subquery(),
            )

        row = conn.execute(
            sa.select(
                db_now(conn),
                *held(sliding_log.slot_of(seq, limit)),
                *held(sliding_log.slot_of(seq - 1, limit)),
            )
        ).one()
        now = float(row[0])
        slot_seq, slot_at, prev_seq, prev_at = (None if v is None else v for v in row[1:])
        n = limit.requests
        exact = (slot_seq == seq - n or (seq < n and slot_seq is None)) and (seq == 0 or prev_seq == seq - 1)
        latest = None
        if not exact:
            # The ring does not hold the grants asked for (N changed): the latest grant stands in.
            value = conn.execute(
                sa.select(sa.func.max(_slots.c.granted_at)).where(_slots.c.provider == provider)
            ).scalar_one_or_none()
            latest = None if value is None else float(value)

        def num(v: Any) -> float | None:
            return None if v is None else float(v)

        def count(v: Any) -> int | None:
            return None if v is None else int(v)

        return (
            now,
            sliding_log.anchor(seq, limit, count(slot_seq), num(slot_at), latest),
            sliding_log.previous(seq, limit, count(prev_seq), num(prev_at), latest),
        )

    @staticmethod
    def _lock(conn: Connection, provider: str) -> tuple[int, float]:
        """The provider's ``(seq, not_before)``, its row locked until commit (created if missing)."""
        r = rate_limits
        query = sa.select(r.c.seq, r.c.not_before).where(r.c.provider == provider).with_for_update()
        row = conn.execute(query).first()
        if row is None:
            SqlRateLimiter._insert(conn, provider)
            row = conn.execute(query).one()
        return int(row[0]), float(row[1])

    @staticmethod
    def _record(conn: Connection, provider: str, slot: int, seq: int, now: float) -> None:
        """Store grant ``seq`` in its ring slot and count it."""
        values = {"provider": provider, "slot": slot, "seq": seq, "granted_at": now}
        update = {"seq": seq, "granted_at": now}
        if conn.dialect.name == "postgresql":
            pg = postgresql.insert(_slots).values(values)
            conn.execute(pg.on_conflict_do_update(index_elements=["provider", "slot"], set_=update))
        else:
            lite = sqlite.insert(_slots).values(values)
            conn.execute(lite.on_conflict_do_update(index_elements=["provider", "slot"], set_=update))
        conn.execute(
            sa.update(rate_limits)
            .where(rate_limits.c.provider == provider)
            .values(seq=rate_limits.c.seq + 1, requests=rate_limits.c.requests + 1, updated_at=now)
        )

    @staticmethod
    def _insert(conn: Connection, provider: str) -> None:
        # A fresh row has no floor (``not_before`` long past) and an empty ring.
        now = db_now(conn)
        values = {"provider": provider, "not_before": 0.0, "updated_at": now}
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


@dataclass
class _Grant:
    """This context's last grant, until its request is sent (see :func:`record_send`)."""

    limiter: RateLimiter
    provider: str
    seq: int
    decided: float
    recorded_s: float  # lateness already recorded for it (``defer``)
    now: Callable[[], float]
    slack_s: float  # lateness left unrecorded; the rest of the send margin covers the wire


_granted: contextvars.ContextVar[_Grant | None] = contextvars.ContextVar("barfill_grant", default=None)
_records: set[asyncio.Task[None]] = set()


def record_send() -> None:
    """The request of this context's last grant is leaving now: record how late, if it is.

    :func:`acquire` checks a grant's age when it hands it over, but the
    request leaves later: after the caller built it and the connection was
    made, on an event loop that may be busy. A strict provider counts the
    arrival. When more than ``slack_s`` (a third of the send margin) passed
    since the grant, its ring slot is moved by the difference
    (:meth:`SqlRateLimiter.defer`), in the background: the grant N after it
    is due a whole window later, so the record lands long before it is asked
    for. Call it from the coroutine that awaited :func:`acquire` (the
    providers' HTTP edge does, through :data:`barfill.providers.http.on_send`).

    There is no absolute floor below which lateness goes unrecorded: the
    margin scales with the period, not the rate (10 ms unrecorded at any
    ``N/1``, 1000/1 included), and for a period under 0.5 s a 5 ms floor
    would exceed that third and leave unrecorded what the margin cannot absorb.
    """
    grant = _granted.get()
    if grant is None:
        return
    _granted.set(None)
    extra = grant.now() - grant.decided - grant.recorded_s
    if extra <= grant.slack_s:
        return

    async def write() -> None:
        try:
            await asyncio.to_thread(grant.limiter.defer, grant.provider, grant.seq, extra)
        except BarfillError as e:  # the next grants then rely on the margin alone
            log.warning("%s: a late send (%.3f s) not recorded (%s)", grant.provider, extra, e)

    task = asyncio.get_running_loop().create_task(write())
    _records.add(task)
    task.add_done_callback(_records.discard)


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

    A grant is good for :func:`sliding_log.send_margin_s` only (see
    :mod:`barfill.domain.sliding_log`). When more than that passed between
    asking and getting the answer back here (a busy event loop, a slow
    commit), the grant is recorded as sent that much later
    (:meth:`SqlRateLimiter.defer`: the grant N after it waits for it) and it is
    used if that record came back within half a margin more; else it is
    dropped and another slot asked for. A loop's first grant for a provider
    is treated as ``COLD_S`` late (its first connection). After
    ``_MAX_DROPS`` drops in a row (a machine too loaded to answer within the
    margin at all) the next grant is used anyway (recorded late), with a
    warning, rather than never sending. The caller must send at once, and
    call :func:`record_send` as the request leaves: what is late by then is
    recorded too. Lateness is measured on real time from the limiter's own
    stamp; with ``clock`` (a simulated clock that ``sleep`` sleeps on) it is
    measured on that clock from the answer's return, so only simulated time
    makes a grant late, never a slow machine.

    Raises:
        ProviderError: ``rate_limited`` (retryable, with ``retry_after_s``) when
            the total wait would exceed ``max_wait_s``, so a worker can give the
            slice back instead of holding it while it sleeps.
    """
    waited = 0.0
    fresh_s = sliding_log.send_margin_s(limit)
    dropped = 0
    warm = _warm.setdefault(asyncio.get_running_loop(), set())
    now = time.monotonic if clock is None else clock

    def take() -> tuple[float, float, int]:
        wait_s, decided, seq = limiter.take(provider, limit)
        return wait_s, decided if clock is None else clock(), seq

    async with _lock_for(provider):
        while True:
            wait_s, decided, seq = await asyncio.to_thread(take)
            if wait_s <= 0:
                late_s = now() - decided
                cold = provider not in warm
                if late_s <= fresh_s and not cold:
                    _granted.set(_Grant(limiter, provider, seq, decided, 0.0, now, fresh_s / 3))
                    return waited
                if cold:  # this loop's first request: its first connection may leave late
                    warm.add(provider)
                    late_s = max(late_s, COLD_S)
                await asyncio.to_thread(limiter.defer, provider, seq, late_s)
                if dropped >= _MAX_DROPS:
                    log.warning("%s: grant %.3f s late (margin %.3f s); sent", provider, late_s, fresh_s)
                if dropped >= _MAX_DROPS or now() - decided <= late_s + fresh_s / 2:
                    _granted.set(_Grant(limiter, provider, seq, decided, late_s, now, fresh_s / 3))
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
