"""Slices: the unit of work in the queue, as plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe


class Purpose(StrEnum):
    """Why a slice exists: ``fill`` a gap, or ``verify`` final sessions once (vendor corrections)."""

    fill = "fill"
    verify = "verify"


@dataclass(frozen=True)
class PlannedSlice:
    """A request the planner wants made: [start, end) in Unix seconds UTC.

    ``est_units`` is the planner's estimate in the provider's page unit, always
    <= the provider's page limit.
    """

    start: int
    end: int
    est_units: int


@dataclass(frozen=True)
class NewSlice:
    """A slice to enqueue. Enqueueing is idempotent on (definition, start, end, provider, layer, purpose).

    ``layer``: ``historical`` for a final range (stored once), ``intraday``
    for a provisional one served by a realtime provider (see
    :mod:`barfill.domain.finality`). ``purpose``: see :class:`Purpose`
    (:mod:`barfill.domain.verify`).
    """

    definition_id: int
    symbol_id: int
    timeframe: Timeframe
    start: int
    end: int
    provider: str
    priority: int = 0
    max_attempts: int = 5
    layer: Layer = Layer.historical
    purpose: Purpose = Purpose.fill


@dataclass(frozen=True)
class ClaimedSlice:
    """A slice a worker holds under a lease. Every state change presents ``lease_token``."""

    id: int
    definition_id: int
    symbol_id: int
    symbol: str
    timeframe: Timeframe
    start: int
    end: int
    provider: str
    attempts: int  # including this one
    max_attempts: int
    lease_token: str
    layer: Layer = Layer.historical
    purpose: Purpose = Purpose.fill


@dataclass(frozen=True)
class CoverageSpan:
    """An interval to record as fetched; provisional when ``expires_at`` is set (database clock)."""

    start: int
    end: int
    expires_at: float | None = None


@dataclass(frozen=True)
class CompleteManyResult:
    """What :meth:`barfill.ports.JobQueue.complete_many` committed.

    ``done``: ids of the slices marked succeeded, with their bars and coverage
    written; ``lost``: ids of those whose lease was gone, for which nothing was
    written. Both keep the order of the items given. ``rows``: bars of the
    ``done`` slices (the sum of their batch lengths, as :meth:`~barfill.ports.JobQueue.complete` counts).
    """

    rows: int
    done: list[int]
    lost: list[int]


@dataclass(frozen=True)
class EnqueueResult:
    """What :meth:`barfill.ports.JobQueue.enqueue` did with the slices it was given (counts).

    * ``inserted``: new slices;
    * ``requeued``: slices that had succeeded and were queued again (their
      range is a gap again, e.g. provisional coverage that expired);
    * ``revived``: failed or cancelled slices queued again with fresh attempts;
    * ``already_pending``: slices already queued or running, left alone;
    * ``held``: failed slices still cooling down, and cancelled slices, left
      alone because the caller did not ask to revive them (the scheduler).

    ``queued_by_definition`` and ``pending_by_definition`` split ``queued``
    and ``already_pending`` per definition id (ids without slices are absent).
    """

    inserted: int = 0
    requeued: int = 0
    revived: int = 0
    already_pending: int = 0
    held: int = 0
    queued_by_definition: Mapping[int, int] = field(default_factory=dict)
    pending_by_definition: Mapping[int, int] = field(default_factory=dict)

    @property
    def queued(self) -> int:
        """Slices this call put in the queue: inserted + requeued + revived."""
        return self.inserted + self.requeued + self.revived


CompletionItem = tuple[ClaimedSlice, Sequence[BarBatch], Sequence[CoverageSpan]]
"""One slice to complete: the claimed slice, its bars and its coverage spans."""
