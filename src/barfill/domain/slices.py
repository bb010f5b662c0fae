"""Slices: the unit of work in the queue, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

from barfill.domain.timeframes import Timeframe


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
    """A slice to enqueue. Enqueueing is idempotent on (definition, start, end, provider)."""

    definition_id: int
    symbol_id: int
    timeframe: Timeframe
    start: int
    end: int
    provider: str
    priority: int = 0
    max_attempts: int = 5


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


@dataclass(frozen=True)
class CoverageSpan:
    """An interval to record as fetched; provisional when ``expires_at`` is set (database clock)."""

    start: int
    end: int
    expires_at: float | None = None
