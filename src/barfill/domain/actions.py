"""Corporate actions: splits and cash dividends, as providers publish them.

barfill stores raw bars and these actions side by side, and adjusts on read
(:mod:`barfill.domain.adjust`), so a bar stored years ago is adjusted with
the actions known *now*, never with a factor frozen on the day it was
written.

An action takes effect on its **ex date**, an exchange-local calendar date:
every bar that opens before 00:00 local of that date is "before" it. A split
is ``ratio`` new shares per old share (4:1 → 4.0, 1:10 reverse → 0.1); a
dividend is ``cash`` per share, in the price's currency, as paid then (not
adjusted for later splits).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

import numpy as np

from barfill.domain.bars import I64
from barfill.errors import InvalidInput


class ActionKind(StrEnum):
    """What an action does to prices. (``split_`` : a member ``split`` would shadow ``str.split``.)"""

    split_ = "split"
    dividend = "dividend"


@dataclass(frozen=True)
class CorporateAction:
    """One split or cash dividend of one symbol, as one provider reported it.

    Attributes:
        symbol: the ticker.
        kind: split or dividend.
        ex_date: exchange-local date from which the action applies.
        ratio: split only: new shares per old (> 0, finite).
        cash: dividend only: cash per share at the time (>= 0, finite).
        provider: who published it.

    Raises:
        InvalidInput: naming the field, for a missing or impossible value
            (a ratio of 0, negative cash, NaN, a split with cash...).
    """

    symbol: str
    kind: ActionKind
    ex_date: dt.date
    ratio: float | None = None
    cash: float | None = None
    provider: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ActionKind(self.kind))
        except ValueError:
            raise InvalidInput("kind", "split or dividend", self.kind) from None
        if not isinstance(self.ex_date, dt.date) or isinstance(self.ex_date, dt.datetime):
            raise InvalidInput("ex_date", "a calendar date (exchange-local)", self.ex_date)
        if not self.symbol:
            raise InvalidInput("symbol", "a ticker", self.symbol)
        if self.kind == ActionKind.split_:
            if self.cash is not None:
                raise InvalidInput("cash", "no cash amount on a split", self.cash)
            object.__setattr__(self, "ratio", _positive("ratio", self.ratio, "new shares per old share"))
        else:
            if self.ratio is not None:
                raise InvalidInput("ratio", "no split ratio on a dividend", self.ratio)
            cash = _finite("cash", self.cash, "cash per share >= 0")
            if cash < 0:
                raise InvalidInput("cash", "cash per share >= 0", self.cash)
            object.__setattr__(self, "cash", cash)

    @property
    def key(self) -> tuple[str, ActionKind, dt.date]:
        """What makes two reports the same action (the provider aside)."""
        return (self.symbol, self.kind, self.ex_date)


def split(symbol: str, ex_date: dt.date, ratio: float, provider: str = "") -> CorporateAction:
    """A split of ``ratio`` new shares per old share from ``ex_date``."""
    return CorporateAction(symbol, ActionKind.split_, ex_date, ratio=ratio, provider=provider)


def dividend(symbol: str, ex_date: dt.date, cash: object, provider: str = "") -> CorporateAction:
    """A cash dividend of ``cash`` per share, ex on ``ex_date`` (any number-like value is checked)."""
    amount = _finite("cash", cash, "cash per share >= 0")
    return CorporateAction(symbol, ActionKind.dividend, ex_date, cash=amount, provider=provider)


def split_ratio(
    split_from: object, split_to: object, *, names: tuple[str, str] = ("split_from", "split_to")
) -> float:
    """``split_to / split_from``, both share counts > 0; ``names`` are the wire's fields (for errors)."""
    old = _positive(names[0], split_from, "a share count")
    new = _positive(names[1], split_to, "a share count")
    return new / old


def ex_starts(ex_dates: Sequence[dt.date], tz: str) -> I64:
    """00:00 exchange-local of each ex date, as Unix seconds UTC (where "before" ends)."""
    zone = ZoneInfo(tz)
    starts = [int(dt.datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()) for d in ex_dates]
    return np.asarray(starts, dtype=np.int64)


def _finite(field: str, value: object, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, expected, value)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(field, expected, value)
    return number


def _positive(field: str, value: object, expected: str) -> float:
    number = _finite(field, value, f"{expected} (> 0)")
    if number <= 0:
        raise InvalidInput(field, f"{expected} (> 0)", value)
    return number
