"""Bars in columns: one :class:`BarBatch` holds one symbol's bars of one timeframe.

Columnar numpy arrays keep a two-year m1 history (~200k bars) cheap to
validate, resample and bulk-write; a list of dicts would not be.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from barfill.domain.timeframes import Timeframe

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Layer(StrEnum):
    """Which kind of bar a row is; only ``historical`` bars are final."""

    historical = "historical"
    intraday = "intraday"  # today's provisional bars, replaced once final
    forecast = "forecast"  # model output, never counted as coverage


class Basis(StrEnum):
    """The price adjustment a provider's bars carry, recorded on every stored bar.

    A read never mixes two bases in one series (a split-adjusted 2019 next to
    a raw 2024 would show a false crash at the split). ``raw`` is what was
    traded; ``split`` divides prices (and multiplies volume) by later splits;
    ``dividend`` and ``all`` also adjust for dividends (Alpaca's settings).
    """

    # Member names differ from the values: ``split`` would shadow ``str.split``.
    raw = "raw"
    split_adjusted = "split"
    dividend_adjusted = "dividend"
    all_adjusted = "all"


PRICE_COLUMNS = ("open", "high", "low", "close")


@dataclass(frozen=True)
class BarBatch:
    """Bars of one (symbol, timeframe, provider), sorted by ``ts``.

    ``ts`` is the bar **open** time in Unix seconds, UTC. ``vwap`` is NaN and
    ``trade_count`` is -1 where the provider gives none. ``basis`` is the
    adjustment of every price in the batch (the provider's declared basis;
    stored with each bar).
    """

    symbol: str
    timeframe: Timeframe
    provider: str
    ts: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    vwap: F64 = field(default_factory=lambda: np.empty(0))
    trade_count: I64 = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    basis: Basis = field(default=Basis.raw, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.basis, Basis):
            object.__setattr__(self, "basis", Basis(self.basis))
        n = len(self.ts)
        if len(self.vwap) != n:
            object.__setattr__(self, "vwap", np.full(n, np.nan))
        if len(self.trade_count) != n:
            object.__setattr__(self, "trade_count", np.full(n, -1, dtype=np.int64))
        for name in ("open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"BarBatch.{name}: expected {n} values, got {len(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(
        cls, symbol: str, timeframe: Timeframe, provider: str, basis: Basis | str = Basis.raw
    ) -> BarBatch:
        z = np.empty(0)
        return cls(
            symbol, timeframe, provider, np.empty(0, dtype=np.int64), z, z, z, z, z, basis=Basis(basis)
        )

    @classmethod
    def from_rows(
        cls,
        symbol: str,
        timeframe: Timeframe,
        provider: str,
        rows: list[tuple[int, float, float, float, float, float, float | None, int | None]],
    ) -> BarBatch:
        """Build from ``(ts, o, h, l, c, v, vwap|None, trades|None)`` tuples, sorting by ts."""
        if not rows:
            return cls.empty(symbol, timeframe, provider)
        rows = sorted(rows, key=lambda r: r[0])
        cols = list(zip(*rows, strict=True))
        return cls(
            symbol,
            timeframe,
            provider,
            ts=np.asarray(cols[0], dtype=np.int64),
            open=np.asarray(cols[1], dtype=np.float64),
            high=np.asarray(cols[2], dtype=np.float64),
            low=np.asarray(cols[3], dtype=np.float64),
            close=np.asarray(cols[4], dtype=np.float64),
            volume=np.asarray(cols[5], dtype=np.float64),
            vwap=np.asarray([np.nan if v is None else v for v in cols[6]], dtype=np.float64),
            trade_count=np.asarray([-1 if v is None else v for v in cols[7]], dtype=np.int64),
        )

    def take(self, index: Any) -> BarBatch:
        """A new batch of the rows selected by a boolean mask or index array."""
        return BarBatch(
            self.symbol,
            self.timeframe,
            self.provider,
            self.ts[index],
            self.open[index],
            self.high[index],
            self.low[index],
            self.close[index],
            self.volume[index],
            self.vwap[index],
            self.trade_count[index],
            basis=self.basis,
        )

    def between(self, start: int, end: int) -> BarBatch:
        """Rows with ``start <= ts < end``."""
        return self.take((self.ts >= start) & (self.ts < end))

    def with_provider(self, provider: str) -> BarBatch:
        return replace(self, provider=provider)

    def with_basis(self, basis: Basis | str) -> BarBatch:
        """The same bars declared to carry ``basis`` (the router stamps a provider's basis)."""
        return replace(self, basis=Basis(basis))

    @staticmethod
    def concat(batches: list[BarBatch]) -> BarBatch:
        """Join batches of the same (symbol, timeframe, provider, basis), keeping ts order."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        first = batches[0]
        joined = BarBatch(
            first.symbol,
            first.timeframe,
            first.provider,
            *(np.concatenate([getattr(b, c) for b in batches]) for c in _COLUMNS),
            basis=first.basis,
        )
        order = np.argsort(joined.ts, kind="stable")
        return joined.take(order)


_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count")
