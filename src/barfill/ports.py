"""The ports the engine depends on, as Protocols split by capability.

The service layer (ensure, orchestrator, worker) talks only to these;
``tests/integration/test_port_conformance.py`` checks that every
implementation still fits. Store ports are synchronous (SQLAlchemy Core);
asyncio callers run them with ``asyncio.to_thread``. Provider fetches are
async (httpx).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol, runtime_checkable

from sqlalchemy.engine import Connection

from barfill.domain.actions import CorporateAction
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.capabilities import Capabilities, RateLimit
from barfill.domain.slices import (
    ClaimedSlice,
    CompleteManyResult,
    CompletionItem,
    CoverageSpan,
    EnqueueResult,
    NewSlice,
)
from barfill.domain.timeframes import Timeframe


@runtime_checkable
class Provider(Protocol):
    """A source of bars. Returned bars are normalized: UTC bar-open ``ts``, canonical timeframe."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """Bars with ``start <= ts < end`` for each symbol, following pagination to the end.

        A symbol with no bars in the range maps to an empty batch (the range is
        still covered). Raises :class:`barfill.errors.ProviderError` (or
        :class:`~barfill.errors.NotSupported`) on failure.
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ActionsProvider(Protocol):
    """Optional provider capability: the splits and cash dividends it publishes.

    Bars are stored raw and adjusted on read with these (:mod:`barfill.domain.adjust`).
    """

    async def fetch_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
        """Actions of ``symbol`` with ``start <= ex_date <= end`` (exchange-local dates), every page.

        An unknown symbol or a quiet one gives ``[]``. Raises
        :class:`barfill.errors.ProviderError` on failure, ``bad_payload`` for
        a value that is missing or impossible (a ratio of 0, negative cash).
        """
        ...


@runtime_checkable
class Clock(Protocol):
    """Time for the engine: the real one (:class:`barfill.clock.SystemClock`) or a simulated one.

    A :class:`~barfill.store.db.Database` built with a clock makes the
    database clock (``db_now``, in SQL) follow it, so leases, backoff, rate
    limits and planning all move with it; the worker sleeps through it.
    """

    simulated: bool  # whether time is simulated (then nothing may be measured on real time)

    def now(self) -> float:
        """Unix seconds, UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (a simulated clock advances instead of waiting)."""
        ...


@runtime_checkable
class RateLimiter(Protocol):
    """A request budget shared by every worker process on every machine."""

    def try_acquire(self, provider: str, limit: RateLimit) -> float:
        """Take one request slot: 0.0 if granted now, else seconds to wait before asking again."""
        ...

    def take(self, provider: str, limit: RateLimit) -> tuple[float, float, int]:
        """``try_acquire``, plus a ``time.monotonic()`` no later than the grant, and the grant's number.

        A grant older than the limit's send margin
        (:func:`barfill.domain.sliding_log.send_margin_s`) is not sent as is:
        the caller records it as sent late (:meth:`defer`) or drops it.
        """
        ...

    def defer(self, provider: str, seq: int, seconds: float) -> None:
        """Grant number ``seq`` was sent ``seconds`` late: the grants it limits wait that much more."""
        ...

    def unsent(self, provider: str) -> None:
        """A granted slot was dropped, not used: take it off the requests counter."""
        ...

    def penalize(self, provider: str, seconds: float) -> None:
        """Push the provider's budget ``seconds`` into the future for everyone (429, Retry-After)."""
        ...

    def record_error(self, provider: str) -> None:
        """Count one failed call to ``provider`` in the shared lifetime counters."""
        ...


@runtime_checkable
class JobQueue(Protocol):
    """Slices in the database. Every change after a claim checks status and lease token."""

    def enqueue(self, slices: Sequence[NewSlice], *, revive: bool = False) -> EnqueueResult:
        """Insert slices idempotently; says which were inserted, re-queued, revived, pending or held.

        ``revive`` (an explicit ``ensure``) brings failed and cancelled slices
        back at once; without it (the scheduler) a failed slice comes back
        only after its cool-down and a cancelled one never.
        """
        ...

    def claim(
        self,
        worker_id: str,
        limit: int,
        lease_s: float,
        providers: Collection[str] | None = None,
    ) -> list[ClaimedSlice]:
        """Atomically take up to ``limit`` runnable slices (highest priority first)."""
        ...

    def heartbeat(self, claimed: ClaimedSlice, lease_s: float) -> None:
        """Extend the lease; raises :class:`barfill.errors.LeaseLost` if it is gone."""
        ...

    def complete(
        self,
        claimed: ClaimedSlice,
        batches: Sequence[BarBatch],
        coverage: Sequence[CoverageSpan],
        *,
        layer: Layer = Layer.historical,
        also: Callable[[Connection], object] | None = None,
    ) -> int:
        """In one transaction: upsert bars, add coverage, mark succeeded. Returns rows written.

        ``also(conn)`` runs inside the same transaction (derived bars).

        Raises :class:`barfill.errors.LeaseLost` (and writes nothing) if the
        lease is no longer ours.
        """
        ...

    def complete_many(
        self,
        items: Sequence[CompletionItem],
        *,
        layer: Layer = Layer.historical,
        also: Callable[[Connection, ClaimedSlice], object] | None = None,
    ) -> CompleteManyResult:
        """:meth:`complete` for many slices in one transaction; lost leases are skipped, not raised."""
        ...

    def fail(
        self,
        claimed: ClaimedSlice,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> str:
        """Record a failure: back off and re-queue, or mark failed. Returns the new status."""
        ...

    def release(self, claimed: ClaimedSlice, *, not_before: float | None = None) -> None:
        """Give a slice back untouched (graceful shutdown, or not final yet until ``not_before``).

        The attempt is not counted.
        """
        ...

    def supersede(self, claimed: ClaimedSlice, message: str) -> None:
        """Finish a slice unfetched (succeeded, error ``superseded``): a final slice serves its range."""
        ...

    def reap(self) -> int:
        """Re-queue running slices whose lease expired; returns how many."""
        ...

    def retry(self, ids: Iterable[int] | None = None, *, status: str = "failed") -> int:
        """Queue failed, cancelled or ``all`` such slices again with fresh attempts; returns how many."""
        ...
