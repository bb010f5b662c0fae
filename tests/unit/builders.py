"""Plain values for pure tests: one place that knows how to make a :class:`Definition`."""

from __future__ import annotations

from barfill.domain.timeframes import Timeframe
from barfill.store.definitions import Definition


def definition(
    tf: Timeframe, *, days: int | None = 10, start: int | None = None, end: int | None = None
) -> Definition:
    """AAPL's definition (id 1) of ``tf``: a rolling ``days`` window, or fixed [start, end)."""
    return Definition(
        id=1,
        symbol_id=1,
        symbol="AAPL",
        timeframe=tf,
        window_days=days,
        start=start,
        end=end,
        priority=0,
        enabled=True,
        provider=None,
        created_at=0.0,
        updated_at=0.0,
    )
