"""A simulated clock for tests and replays: time passes only when told to.

Inject it with ``bootstrap.build(settings, providers=..., clock=SimClock(t0))``:
the database clock (``db_now`` in SQL, on SQLite and PostgreSQL), the worker's
rate-limit waits and idle polls and anything else reading ``app.clock`` then
follow simulated time, so a test can replay days of market time in seconds.
"""

from __future__ import annotations

import asyncio
import threading


class SimClock:
    """Simulated Unix seconds (UTC); implements :class:`barfill.ports.Clock`.

    ``now()`` may be called from any thread (the database's SQL function runs
    in worker threads). ``sleep(s)`` does not wait: it yields to the event loop
    once and then moves time to at least ``start + s``, where ``start`` is the
    time the sleep began. Concurrent sleepers therefore share the same passage
    of time (two 12 s waits begun together end together at +12 s), as they
    would on a real clock.

    Heartbeats still beat in real time, while rate-limit waits may move
    simulated time by minutes: give workers under a SimClock a lease longer
    than any simulated wait (``lease_s``), or leases expire mid-fetch.

    Args:
        start: the initial simulated time, Unix seconds.
    """

    simulated = True

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept = 0.0  # total seconds asked for by sleep(), for tests

    def now(self) -> float:
        """The simulated time, Unix seconds."""
        return self._now

    def set(self, t: float) -> None:
        """Move to ``t`` (backwards too: a test may want to; the engine never does)."""
        with self._lock:
            self._now = float(t)

    def advance(self, seconds: float) -> float:
        """Move forward ``seconds`` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError(f"advance by a non-negative number of seconds, not {seconds}")
        with self._lock:
            self._now += float(seconds)
            return self._now

    def advance_to(self, t: float) -> float:
        """Move forward to ``t`` if it is later than now; returns the new time."""
        with self._lock:
            self._now = max(self._now, float(t))
            return self._now

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass, without waiting in real time."""
        target = self._now + max(0.0, float(seconds))
        self.slept += max(0.0, float(seconds))
        await asyncio.sleep(0)
        self.advance_to(target)
