"""The real clock: :class:`SystemClock` implements :class:`barfill.ports.Clock`.

Every process uses it unless a test injects another (``bootstrap.build(...,
clock=...)``); :class:`barfill.testing.clock.SimClock` is the simulated one.
"""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Wall-clock time (Unix seconds, UTC) and real ``asyncio`` sleeps."""

    simulated = False

    def now(self) -> float:
        """Unix seconds, UTC."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of real time (0 or less: just yield to the loop)."""
        await asyncio.sleep(max(0.0, seconds))
