"""Adjust raw bars for splits and dividends at read time: one pure columnar step.

Bars are stored as traded (``raw``); a read asks for ``adjust``:

* ``raw``: as traded.
* ``split``: every price of a bar is divided by the product of the ratios of
  the splits whose ex date is after the bar, and its volume multiplied by it,
  so a 4:1 split leaves a continuous price line (and share volume).
* ``all``: ``split``, and every price of a bar also multiplied by
  ``1 - cash / close`` for each later dividend, ``close`` being the raw close
  of the session before the ex date (the standard "total return" factor; the
  CRSP / Yahoo convention).

A bar is *before* an action when it opens before 00:00 exchange-local of the
ex date (a w1 bar is before a split during its own week: it is labelled on
Monday). The factors are computed from the actions known when the read runs,
never stored with the bars, so a split announced after the bars were written
changes the answer without refetching anything.

Bars a provider stored already adjusted (Yahoo's chart prices: basis
``split``) are never turned back into raw ones: ``split`` reads them as
stored, and any other ``adjust`` of them is refused (:func:`adjust_columns`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import numpy as np

from barfill.domain.actions import ActionKind, CorporateAction, ex_starts
from barfill.domain.bars import F64, I64, Basis
from barfill.errors import InvalidInput

SCALED_COLUMNS = ("open", "high", "low", "close", "vwap")  # every price column a factor applies to


class Adjust(StrEnum):
    """What a read asks for. Member names differ from values (``split`` would shadow ``str.split``)."""

    raw = "raw"
    split_adjusted = "split"
    all_adjusted = "all"

    @property
    def basis(self) -> Basis:
        """The basis of the bars such a read returns."""
        return {"raw": Basis.raw, "split": Basis.split_adjusted, "all": Basis.all_adjusted}[self.value]


def parse_adjust(value: Adjust | str | None) -> Adjust | None:
    """``None`` (bars as stored), or one of raw, split, all.

    Raises:
        InvalidInput: naming ``adjust``, for anything else.
    """
    if value is None or isinstance(value, Adjust):
        return value
    try:
        return Adjust(str(value).strip().lower())
    except ValueError:
        raise InvalidInput("adjust", "raw, split or all", value) from None


def read_basis(adjust: Adjust | None, basis: Basis | str | None) -> Basis | str | None:
    """The stored basis a read must select for ``adjust`` (the caller's own ``basis`` wins if it fits).

    ``raw`` keeps raw rows only: split-adjusted rows cannot be un-adjusted, so they
    are left out rather than mislabelled. ``split``/``all`` take the usual choice
    (the preferred source's basis) and :func:`adjust_columns` refuses what it cannot convert.
    """
    if adjust == Adjust.raw:
        if basis is not None and str(basis) != Basis.raw.value:
            raise InvalidInput("basis", "raw (or no basis) with adjust=raw", basis)
        return Basis.raw
    return basis


def factors(
    ts: I64,
    actions: Sequence[CorporateAction],
    tz: str,
    adjust: Adjust,
    reference_closes: Mapping[Any, float] | None = None,
) -> tuple[F64, F64]:
    """Per-bar multipliers ``(price, volume)`` turning raw bars into ``adjust``-ed ones.

    Args:
        ts: bar-open times, Unix seconds UTC (any order).
        actions: the symbol's actions (one report per action; see
            :func:`barfill.domain.actions`), any order.
        tz: the exchange's time zone (ex dates are its calendar dates).
        adjust: raw gives ones.
        reference_closes: ``ex_date -> raw close of the session before it``
            for dividends; a dividend without one (or with cash >= close)
            cannot be turned into a factor and is left out.

    Returns:
        Two float64 arrays as long as ``ts``.
    """
    ts = np.asarray(ts, dtype=np.int64)
    price = np.ones(len(ts), dtype=np.float64)
    volume = np.ones(len(ts), dtype=np.float64)
    if adjust == Adjust.raw or len(ts) == 0:
        return price, volume
    splits = [a for a in actions if a.kind == ActionKind.split_]
    ratios = _later_product(ts, splits, [float(a.ratio or 1.0) for a in splits], tz)
    price /= ratios
    volume *= ratios
    if adjust == Adjust.all_adjusted:
        closes = reference_closes or {}
        divs: list[CorporateAction] = []
        multipliers: list[float] = []
        for a in actions:
            if a.kind != ActionKind.dividend:
                continue
            close = closes.get(a.ex_date)
            if close is None or not np.isfinite(close) or close <= float(a.cash or 0.0):
                continue
            divs.append(a)
            multipliers.append(1.0 - float(a.cash or 0.0) / close)
        price *= _later_product(ts, divs, multipliers, tz)
    return price, volume


def _later_product(ts: I64, actions: Sequence[CorporateAction], values: Sequence[float], tz: str) -> F64:
    """For each bar, the product of ``values`` of the actions whose ex date starts after it."""
    if not actions:
        return np.ones(len(ts), dtype=np.float64)
    starts = ex_starts([a.ex_date for a in actions], tz)
    order = np.argsort(starts, kind="stable")
    starts = starts[order]
    vals = np.asarray(values, dtype=np.float64)[order]
    # suffix[k] = product of vals[k:]; suffix[n] = 1.
    suffix = np.ones(len(vals) + 1, dtype=np.float64)
    suffix[:-1] = np.cumprod(vals[::-1])[::-1]
    # Actions with start <= ts have taken effect; the rest lie after the bar.
    taken = np.searchsorted(starts, ts, side="right")
    out: F64 = suffix[taken]
    return out


def adjust_columns(
    columns: Mapping[str, np.ndarray[Any, Any]],
    stored: Basis,
    adjust: Adjust | None,
    actions: Sequence[CorporateAction],
    tz: str,
    reference_closes: Mapping[Any, float] | None = None,
) -> tuple[dict[str, np.ndarray[Any, Any]], Basis]:
    """The read's columns (``ts`` + OHLC, vwap, volume, ...) adjusted as asked, and their new basis.

    Other columns (``trade_count``...) pass through. ``adjust=None`` or equal
    to the stored basis changes nothing.

    Raises:
        InvalidInput: naming ``adjust``, when the stored bars are already
            adjusted in a way that cannot be converted (e.g. Yahoo's
            split-adjusted bars asked as ``raw`` or ``all``).
    """
    out = dict(columns)
    if adjust is None or adjust.basis == stored:
        return out, stored
    if stored != Basis.raw:
        raise InvalidInput(
            "adjust",
            f"{stored.value} (these bars are stored {stored.value}-adjusted by their provider and "
            "cannot be converted; pass basis=raw for raw bars)",
            adjust.value,
        )
    price, volume = factors(out["ts"], actions, tz, adjust, reference_closes)
    for name in SCALED_COLUMNS:
        if name in out:
            out[name] = out[name] * price
    if "volume" in out:
        out["volume"] = out["volume"] * volume
    return out, adjust.basis


def needs_reference(
    adjust: Adjust | None, actions: Sequence[CorporateAction], first_ts: int, tz: str
) -> list[Any]:
    """Ex dates of the dividends whose reference close an ``all`` read starting at ``first_ts`` needs."""
    if adjust != Adjust.all_adjusted:
        return []
    divs = [a for a in actions if a.kind == ActionKind.dividend]
    if not divs:
        return []
    starts = ex_starts([a.ex_date for a in divs], tz)
    return [a.ex_date for a, s in zip(divs, starts.tolist(), strict=True) if s > first_ts]
