"""Bar reads: one source per range, one adjustment basis, flagged bars left out by default.

Reads never splice providers bar by bar: each range (a session; a week for
w1) comes from one source and the whole read from one adjustment basis, as
:mod:`barfill.domain.sources` decides. Bars flagged bad (``flag``, see
:mod:`barfill.store.flags`) are left out unless ``include_flagged``.
:mod:`barfill.store.bar_rows` fetches and selects the rows; this module
parses a read's arguments, adjusts prices and shapes the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.adjust import Adjust, parse_adjust, read_basis
from barfill.domain.bars import BarBatch, Basis, Layer
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.intervals import interval
from barfill.domain.sources import Precedence, range_timeframe
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.actions import adjust_read
from barfill.store.bar_rows import Array, Fingerprint, Rows, RowStamps, cached_range_span, fetch_rows
from barfill.store.bars import parse_layers, unix_seconds
from barfill.store.schema import symbols

if TYPE_CHECKING:  # pandas is imported lazily: worker processes never need it.
    import pandas as pd

DEFAULT_LAYERS: tuple[Layer, ...] = (Layer.historical, Layer.intraday)


def _read(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe | str,
    start: object,
    end: object,
    *,
    layers: Sequence[Layer | str],
    provider: str | None,
    precedence: Precedence | Sequence[str] | None,
    basis: Basis | str | None,
    calendar: TradingCalendar | None,
    range_by: Timeframe | None,
    adjust: Adjust | str | None = None,
    include_flagged: bool = False,
    fingerprint: bool = False,
) -> tuple[Timeframe, str, Rows]:
    tf = Timeframe.parse(timeframe)
    span = interval(unix_seconds(start, "start"), unix_seconds(end, "end"))
    wanted = parse_layers(layers)
    prec = Precedence.of(precedence)
    wanted_adjust = parse_adjust(adjust)
    basis = read_basis(wanted_adjust, basis)
    if basis is not None:
        basis = _parse_basis(basis)
    ticker, calendar_name = _symbol(conn, symbol_id)
    cal = calendar if calendar is not None else get_calendar(calendar_name)
    by = range_by if range_by is not None else range_timeframe(tf)
    out = fetch_rows(
        conn,
        symbol_id,
        ticker,
        tf,
        span,
        wanted,
        provider,
        prec,
        basis,
        cal,
        by,
        include_flagged,
        fingerprint,
    )
    # Splits and dividends, as known now: one columnar step (barfill.domain.adjust).
    out.columns, out.adjusted = adjust_read(
        conn, symbol_id, cal, out.columns, out.basis, wanted_adjust, prec.historical
    )
    return tf, ticker, out


def _symbol(conn: Connection, symbol_id: int) -> tuple[str, str]:
    """The symbol's ticker and calendar name (``""`` and XNYS for an unknown id)."""
    row = conn.execute(
        sa.select(symbols.c.ticker, symbols.c.calendar).where(symbols.c.id == symbol_id)
    ).first()
    return ("", "XNYS") if row is None else (str(row.ticker), str(row.calendar))


def _parse_basis(basis: Basis | str) -> Basis:
    try:
        return Basis(basis)
    except ValueError as e:
        raise InvalidInput("basis", "one of " + ", ".join(b.value for b in Basis), basis) from e


def read_bars(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe | str,
    start: object,
    end: object,
    *,
    layers: Sequence[Layer | str] = DEFAULT_LAYERS,
    provider: str | None = None,
    precedence: Precedence | Sequence[str] | None = None,
    basis: Basis | str | None = None,
    calendar: TradingCalendar | None = None,
    range_by: Timeframe | None = None,
    adjust: Adjust | str | None = None,
    include_flagged: bool = False,
) -> BarBatch:
    """Bars with ``start <= ts < end`` (Unix seconds or aware datetimes): one source per range.

    Never a bar-by-bar splice: for each range (the bar's session; its week for
    w1) the best source present, by :mod:`barfill.domain.sources`' precedence,
    supplies every bar of that range, and no other source does. Historical
    before intraday before forecast; native before ``resample:*``; providers in
    ``precedence`` order, then the rest alphabetically. One basis per read.

    Args:
        layers: layers to consider; ``forecast`` bars come back only for ranges
            without a historical or intraday bar.
        provider: consider this provider's bars only.
        precedence: the provider order: a :class:`Precedence` (per layer), or
            one sequence for both layers; an app passes ``app.precedence`` (the
            router's historical and realtime orders). ``None``: alphabetical.
        basis: read only bars of this adjustment basis; ``None``: the basis of
            the best source present in the ranges read. Other bases are left out.
        calendar: the exchange calendar of the ranges (default: the symbol's).
        range_by: the range unit (default d1; w1 for w1 bars). Derivations into
            w1 select d1 bars by week.
        adjust: ``raw``, ``split`` or ``all``: prices (and volume) adjusted for
            the splits and dividends known now (:mod:`barfill.domain.adjust`);
            ``raw`` reads raw rows only. ``None``: as stored.
        include_flagged: also return bars flagged bad (:mod:`barfill.domain.badbars`).

    Returns:
        A batch whose ``provider`` names the chosen provider, or the chosen ones
        joined with ``+`` best first (``""`` when empty), and whose ``basis`` is
        the read's.

    Raises:
        InvalidInput: for an empty or inverted range, a naive datetime, an unknown
            layer, timeframe or basis.
    """
    tf, ticker, rows = _read(
        conn,
        symbol_id,
        timeframe,
        start,
        end,
        layers=layers,
        provider=provider,
        precedence=precedence,
        basis=basis,
        calendar=calendar,
        range_by=range_by,
        adjust=adjust,
        include_flagged=include_flagged,
    )
    return _batch(ticker, tf, rows, provider)


@dataclass(frozen=True)
class Scan:
    """A read of ``[start, end)`` with what a kept copy of it needs to be patched later.

    Attributes:
        batch: what :func:`read_bars` answers.
        stamps: every stored row of the range and layers (see :class:`RowStamps`).
        bases: the bases of the rows sources were chosen from (flagged rows left
            out unless asked for): with one, every range's choice is its own.
        provider_codes: each bar's provider, as an index into ``provider_names``.
    """

    batch: BarBatch
    stamps: RowStamps
    bases: frozenset[str]
    provider_codes: Array
    provider_names: tuple[str, ...]

    @property
    def fingerprint(self) -> Fingerprint:
        return self.stamps.fingerprint()


def read_bars_scan(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    start: int,
    end: int,
    *,
    layers: Sequence[Layer | str],
    adjust: Adjust | str | None = None,
    include_flagged: bool = False,
    basis: Basis | str | None = None,
) -> Scan:
    """:func:`read_bars` (default precedence and calendar) of ``[start, end)``, with the rows'
    :class:`RowStamps`, from the same scan: a cold chart read needs both.

    Their fingerprint equals :func:`barfill.store.http_reads.bars_fingerprint`
    of the range (every provider, flagged bars too).
    """
    tf, ticker, rows = _read(
        conn,
        symbol_id,
        timeframe,
        start,
        end,
        layers=layers,
        provider=None,
        precedence=None,
        basis=basis,
        calendar=None,
        range_by=None,
        adjust=adjust,
        include_flagged=include_flagged,
        fingerprint=True,
    )
    stamps = rows.stamps
    if stamps is None:  # no source in the range at all
        none = np.zeros(0, dtype=np.int64)
        stamps = RowStamps(none, none.astype(np.float64), none.astype(np.bool_))
    batch = _batch(ticker, tf, rows, None)
    return Scan(batch, stamps, rows.bases, rows.provider_codes, rows.provider_names)


def session_span(
    conn: Connection, symbol_id: int, timeframe: Timeframe, start: int, end: int
) -> tuple[int, int]:
    """``[start, end)`` widened to the whole ranges (sessions; weeks for w1) reads choose sources by,
    on the symbol's calendar: what a write to ``[start, end)`` may change of a read."""
    _, calendar_name = _symbol(conn, symbol_id)
    return cached_range_span(get_calendar(calendar_name), range_timeframe(timeframe), start, end)


def _batch(ticker: str, tf: Timeframe, rows: Rows, provider: str | None) -> BarBatch:
    present = set(rows.providers.tolist())
    names = [p for p in rows.selection.providers if p in present]
    label = provider if provider is not None else "+".join(names)
    c = rows.columns
    return BarBatch(
        ticker,
        tf,
        label,
        c["ts"],
        c["open"],
        c["high"],
        c["low"],
        c["close"],
        c["volume"],
        c["vwap"],
        c["trade_count"],
        basis=rows.basis,
    )


def read_bars_frame(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe | str,
    start: object,
    end: object,
    *,
    layers: Sequence[Layer | str] = DEFAULT_LAYERS,
    provider: str | None = None,
    precedence: Precedence | Sequence[str] | None = None,
    basis: Basis | str | None = None,
    calendar: TradingCalendar | None = None,
    adjust: Adjust | str | None = None,
    include_flagged: bool = False,
) -> pd.DataFrame:
    """:func:`read_bars` (same selection and arguments) as a DataFrame, with each row's source.

    The index is a UTC ``DatetimeIndex`` named ``ts`` (bar open); columns are
    ``open high low close volume vwap`` (float64, vwap NaN when unknown),
    ``trade_count`` (nullable ``Int64``), and strings ``provider``, ``layer``
    and ``basis`` (one basis for every row: the adjusted one when ``adjust`` is given).
    """
    import pandas as pd

    _, _, rows = _read(
        conn,
        symbol_id,
        timeframe,
        start,
        end,
        layers=layers,
        provider=provider,
        precedence=precedence,
        basis=basis,
        calendar=calendar,
        range_by=None,
        adjust=adjust,
        include_flagged=include_flagged,
    )
    c = rows.columns
    index = pd.DatetimeIndex(pd.to_datetime(c["ts"], unit="s", utc=True), name="ts")
    trade_count = pd.array(c["trade_count"], dtype="Int64")
    trade_count[c["trade_count"] < 0] = pd.NA
    n = len(c["ts"])
    return pd.DataFrame(
        {
            "open": c["open"],
            "high": c["high"],
            "low": c["low"],
            "close": c["close"],
            "volume": c["volume"],
            "vwap": c["vwap"],
            "trade_count": trade_count,
            "provider": pd.array(rows.providers.astype(str), dtype="string"),
            "layer": pd.array(rows.layers.astype(str), dtype="string"),
            "basis": pd.array(np.full(n, rows.basis.value, dtype=object), dtype="string"),
        },
        index=index,
    )
