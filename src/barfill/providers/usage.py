"""What a provider says each answer cost it, reported to whoever made the call.

Polygon's ``queryCount`` says how many base aggregates it read for an answer; its
page limit counts those, not the rows returned. An adapter reports each answer
here; the worker collects the reports of its own fetch (a context variable, so
concurrent fetches in one event loop never see each other's) and learns each
symbol's density from them, or finds a page cut short by the limit.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from barfill.domain.timeframes import Timeframe


@dataclass(frozen=True)
class AnswerCost:
    """One answer for ``symbol`` over ``[start, end)`` (Unix seconds).

    Attributes:
        base_read: base aggregates the provider read (Polygon ``queryCount``).
        truncated_at: when the provider stopped at its limit before ``end``:
            where the bars it returned stop being complete (the adapter has
            dropped every bar from there on); None for a whole answer.
        outside_rows: bars the answer held outside the regular session
            (before the adapter filtered them): 0 says the symbol trades only
            regular hours, so its density holds for whole sessions.
    """

    provider: str
    symbol: str
    timeframe: Timeframe
    start: int
    end: int
    base_read: int
    truncated_at: int | None = None
    outside_rows: int = 0


_costs: contextvars.ContextVar[list[AnswerCost] | None] = contextvars.ContextVar("costs", default=None)


@contextlib.contextmanager
def collect() -> Iterator[list[AnswerCost]]:
    """Collect the costs reported by fetches awaited inside this block (this task only)."""
    found: list[AnswerCost] = []
    token = _costs.set(found)
    try:
        yield found
    finally:
        _costs.reset(token)


def report(cost: AnswerCost) -> None:
    """Tell the collecting caller, if any, what one answer cost."""
    found = _costs.get()
    if found is not None:
        found.append(cost)
