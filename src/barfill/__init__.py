"""barfill: keep an OHLCV bar store complete.

The public API is :class:`Barfill`; everything else is reachable through it or
the ``barfill`` command. Names are imported lazily so that importing a pure
module (``barfill.domain...``) does not pull in the database and HTTP stacks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from barfill.api import Barfill
    from barfill.domain.bars import BarBatch, Layer
    from barfill.domain.timeframes import Timeframe
    from barfill.errors import BarfillError, InvalidInput
    from barfill.service.ensure import EnsureReport, EnsureResult
    from barfill.service.progress import JobRef, Progress

_EXPORTS = {
    "Barfill": "barfill.api",
    "BarBatch": "barfill.domain.bars",
    "Layer": "barfill.domain.bars",
    "Timeframe": "barfill.domain.timeframes",
    "BarfillError": "barfill.errors",
    "InvalidInput": "barfill.errors",
    "EnsureReport": "barfill.service.ensure",
    "EnsureResult": "barfill.service.ensure",
    "JobRef": "barfill.service.progress",
    "Progress": "barfill.service.progress",
}
__all__ = [
    "BarBatch",
    "Barfill",
    "BarfillError",
    "EnsureReport",
    "EnsureResult",
    "InvalidInput",
    "JobRef",
    "Layer",
    "Progress",
    "Timeframe",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'barfill' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
