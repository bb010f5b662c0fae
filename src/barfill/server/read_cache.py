"""In-process memory of validated bar reads and their ETags, so a revalidation (304) skips the database.

A chart polls the same read again and again; answering ``If-None-Match``
used to cost a symbol lookup, the database clock, the newest-N start and a
fingerprint query every time. :class:`ReadCache` keeps each validated read
(its :class:`~barfill.server.bars_out.BarQuery` and ETag) stamped with the
:class:`DataVersion` it was computed under, and serves it again until that
version moves.

The version moves whenever something a bar answer depends on may have
changed, in this process or another one:

* SQLite: ``PRAGMA data_version`` on one dedicated connection changes on every
  commit by any other connection, in any process, so the check is exact and
  costs a few microseconds (a library call, no I/O);
* PostgreSQL: each ``NOTIFY barfill`` heard by the server's
  :class:`~barfill.server.events.EventHub` (slice completions send one in
  their transaction; :func:`barfill.store.http_reads.notify_changed` is how
  any other writer — forecasts, corporate actions — sends one). While the
  ``LISTEN`` connection is down nothing is cached. A write is seen once its
  notification arrives, typically milliseconds after its commit;
* :meth:`DataVersion.bump` for writes this process makes, and an age limit
  (``MAX_AGE_S``) as a safety net for a writer that forgets to notify;
* :meth:`DataVersion.expire_at`: a time at which answers change with nothing
  written (an announced split's ex date: adjusted reads apply actions in
  effect), reached on the database clock (estimated, as :class:`ClockEstimate`).

Equal versions are only a shortcut: after a move the read is recomputed and
its ETag still comes from the stored data (the fingerprints of
:func:`barfill.store.http_reads.read_fingerprint`), so an unrelated commit
costs one query, never a wrong 200 or 304.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy.engine import make_url

from barfill.domain.timeframes import Timeframe
from barfill.store.db import Database

if TYPE_CHECKING:
    from barfill.server.splice import KeptLayer, KeptRead

MAX_AGE_S = 5.0
# How long a read may be renewed or patched by its symbol's change counter and log alone
# (store.stamps, server.splice) before it is computed again in full: bounds what a writer that
# bypasses the store (hand-written SQL) could leave stale.
RENEW_FOR_S = 60.0
MAX_ENTRIES = 10_000
# Bar columns kept for repeated reads (2 years of m1 for one symbol: about 12 MB).
COLUMN_BYTES = 256 * 1024 * 1024
T = TypeVar("T")


class DataVersion:
    """A number that changes whenever stored data may have changed (see the module docstring)."""

    def __init__(self, db: Database, clock: ClockEstimate | None = None) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._expires: float | None = None  # the version moves at this time (Unix seconds, db clock)
        self._clock = clock or ClockEstimate(db)
        self._listening = False
        self._probe: sqlite3.Connection | None = None
        self._probe_path: str | None = None
        if db.is_sqlite:
            path = make_url(db.url).database
            if path and path != ":memory:" and not path.startswith("file:"):
                self._probe_path = path

    @property
    def exact(self) -> bool:
        """Whether the version can be trusted right now (otherwise every read is recomputed)."""
        return self._probe_path is not None or self._listening

    def bump(self) -> None:
        """Something changed (a notification arrived, or this process wrote)."""
        with self._lock:
            self._generation += 1

    def expire_at(self, t: float) -> None:
        """Move the version at ``t`` (Unix seconds, database clock), if no earlier move is due."""
        with self._lock:
            if self._expires is None or t < self._expires:
                self._expires = t

    def _expire(self) -> None:
        """Move the version if its expiry has come (a clock not known now counts as come: no query)."""
        if self._expires is None:
            return
        now = self._clock.now()
        with self._lock:
            if self._expires is not None and (now is None or now >= self._expires):
                self._expires = None
                self._generation += 1

    def listening(self, on: bool) -> None:
        """PostgreSQL: whether notifications are being heard (a gap in them moves the version)."""
        with self._lock:
            self._listening = on
            self._generation += 1

    def current(self) -> tuple[int, int] | None:
        """The version now, or None when it cannot be known (nothing may be cached)."""
        self._expire()
        if self._probe_path is None:
            return (0, self._generation) if self._listening else None
        with self._lock:
            try:
                if self._probe is None:
                    path = self._probe_path
                    self._probe = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                (changes,) = self._probe.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error:
                self._close_probe()
                return None
            # data_version is per connection: pair it with this process's own bumps.
            return (int(changes), self._generation)

    def _close_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def close(self) -> None:
        with self._lock:
            self._close_probe()


@dataclass(frozen=True)
class _Entry(Generic[T]):
    version: tuple[int, int]
    stamp: float  # when the value was last known current (computed, renewed or patched)
    value: T
    computed: float  # when the value was computed from the data itself


class ReadCache(Generic[T]):
    """Values computed from the database, kept while the :class:`DataVersion` stands still.

    ``max_age_s`` bounds how long a value is trusted when the version could
    miss a write (PostgreSQL: a writer that does not notify); with SQLite's
    exact version there is no age limit. Concurrent misses of one key compute
    it once: the others wait for that result instead of all querying.
    """

    def __init__(
        self,
        version: DataVersion,
        *,
        max_age_s: float | None = MAX_AGE_S,
        weigh: Callable[[T], int] | None = None,
        max_weight: int = MAX_ENTRIES,
    ) -> None:
        self.version = version
        self.max_age_s = max_age_s
        self.weigh = weigh or (lambda _: 1)
        self.max_weight = max_weight
        self._weight = 0
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._computing: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> T | None:
        """The value kept for ``key`` if still current (no database access), else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.max_age_s is not None and time.monotonic() - entry.stamp > self.max_age_s:
            return None
        if entry.version != self.version.current():
            return None
        self.hits += 1
        return entry.value

    def compute(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()`` (which reads the database), kept under the version read *before* it ran.

        Reading the version first means a write that lands while ``make`` runs
        moves the version past the kept one, so the value is not served again.
        Blocking: call it from a worker thread.
        """
        if self.version.current() is None:  # nothing can be kept: no reason to wait for another
            self.misses += 1
            return make()
        with self._lock:
            flight = self._computing.setdefault(key, threading.Lock())
        with flight:
            found = self.get(key)
            if found is not None:
                return found
            self.misses += 1
            version = self.version.current()
            stamp = time.monotonic()
            value = make()
            self.put(key, value, version, stamp)
        with self._lock:
            if len(self._computing) >= MAX_ENTRIES:
                self._computing.clear()
        return value

    def stale(self, key: Hashable) -> tuple[tuple[int, int], T] | None:
        """The value kept for ``key`` and the version it was kept under, current or not, unless it
        was computed more than ``RENEW_FOR_S`` ago (then only a full recompute may serve it)."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry.computed > RENEW_FOR_S:
            return None
        return entry.version, entry.value

    def patched(
        self, key: Hashable, was: tuple[int, int], value: T, version: tuple[int, int], stamp: float
    ) -> bool:
        """Keep ``value`` (the value kept under ``was``, renewed or patched) under ``version``, read
        *before* checking or patching it; False if that value was replaced or dropped meanwhile.

        Its time of computation stays the kept value's: only a full recompute
        restarts the ``RENEW_FOR_S`` bound.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.version != was:
                return False
            self._weight += self.weigh(value) - self.weigh(entry.value)
            self._entries[key] = _Entry(version, stamp, value, entry.computed)
            return True

    def put(self, key: Hashable, value: T, version: tuple[int, int] | None, stamp: float) -> None:
        """Keep ``value``, computed from data read at ``version`` (taken *before* reading) and ``stamp``.

        The oldest entries go first when the total weight would pass ``max_weight``.
        """
        weight = self.weigh(value)
        if version is None or weight > self.max_weight:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._weight -= self.weigh(old.value)
            while self._entries and self._weight + weight > self.max_weight:
                oldest = next(iter(self._entries))
                self._weight -= self.weigh(self._entries.pop(oldest).value)
            self._entries[key] = _Entry(version, stamp, value, stamp)
            self._weight += weight


class ClockEstimate:
    """The database clock without a query: this machine's clock plus the offset last measured.

    Only used to pick the default end of a read (the next bar boundary), so
    an error of milliseconds moves that boundary by as much. A
    :class:`~barfill.store.db.Database` built with a clock (tests) is read directly.
    """

    def __init__(self, db: Database, *, max_age_s: float = 60.0) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self._offset: tuple[float, float] | None = None  # (measured at, db - local)

    def now(self) -> float | None:
        """The database clock, or None when the offset must be measured again (:meth:`measure`)."""
        if self.db.clock is not None:
            return self.db.clock.now()
        known = self._offset
        if known is None or time.monotonic() - known[0] > self.max_age_s:
            return None
        return time.time() + known[1]

    def measure(self) -> float:
        """Read the database clock (one query) and remember its offset from this machine's."""
        local = time.time()
        now = self.db.now()
        self._offset = (time.monotonic(), now - (local + time.time()) / 2)
        return now


class BarReads:
    """One server process's bar-read memory: the data version, validated reads with their ETags,
    recently read bar columns (at most ``COLUMN_BYTES``), and the clock estimate."""

    def __init__(self, db: Database) -> None:
        self.clock = ClockEstimate(db)
        self.version = DataVersion(db, self.clock)
        # SQLite's version sees every commit: no age limit needed there.
        max_age = None if db.is_sqlite else MAX_AGE_S
        # (query, ETag, the symbol's change counter read before its data: store.stamps, ...)
        self.cache: ReadCache[KeptRead] = ReadCache(self.version, max_age_s=max_age)
        self.columns: ReadCache[KeptLayer] = ReadCache(
            self.version, max_age_s=max_age, weigh=_column_bytes, max_weight=COLUMN_BYTES
        )

    def key(
        self,
        symbol: str,
        timeframe: str,
        start: str | None,
        end: str | None,
        layers: str,
        limit: int | None,
        default_end: int,
        adjust: str | None = None,
        include_flagged: bool = False,
    ) -> Hashable:
        """The cache key of a bar read, from its parameters as sent (one key, one answer)."""
        until = end if end is not None else default_end
        return (symbol, timeframe, start, until, layers, limit, adjust, include_flagged)

    def close(self) -> None:
        self.version.close()


def _column_bytes(value: KeptLayer) -> int:
    return value.nbytes


def default_end(now: float, timeframe: Timeframe) -> int:
    """A read's end when none is given: just past the forming bar, on the bar grid.

    The same all bar long, so a chart polling "the newest N" keeps one ETag
    until a bar could have changed.
    """
    return (int(now) // timeframe.seconds + 1) * timeframe.seconds


def format_etag(tag: str, fmt: str) -> str:
    """The ETag of one read in one format (``"<tag>-json"``)."""
    return tag[:-1] + f'-{fmt}"'


def etag_matches(etag: str, if_none_match: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag``."""
    return etag in [t.strip() for t in if_none_match.split(",")]
