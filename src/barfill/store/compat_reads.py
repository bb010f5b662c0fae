"""Reads the original backend's routes need (``barfill.server.compat``), kept out of the hot modules.

The chart routes of the original backend return "the latest N bars", not a
date range; :func:`newest_bars` turns that into one range read through
:func:`barfill.store.bar_reads.read_bars`, so the one-bar-per-``ts`` selection of
reads applies unchanged. The orchestrator's ``status`` and ``retry_failed``
actions list slices in the original's orders. Times are Unix seconds UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.adjust import Adjust
from barfill.domain.bars import Layer
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.bar_reads import DEFAULT_LAYERS, read_bars_frame
from barfill.store.schema import bars, coverage, job_definitions, job_runs, symbols

END_OF_TIME = 2**62


@dataclass(frozen=True)
class ChartBars:
    """Bars of one (symbol, timeframe) as plain lists, ascending by ``ts`` (bar open, Unix s UTC)."""

    ts: list[int]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]
    provider: list[str]

    def __len__(self) -> int:
        return len(self.ts)

    def tail(self, n: int) -> ChartBars:
        """The last ``n`` bars."""
        k = max(len(self.ts) - n, 0)
        return ChartBars(*(getattr(self, f)[k:] for f in _FIELDS))


_FIELDS = ("ts", "open", "high", "low", "close", "volume", "provider")


def _read(
    conn: Connection, symbol_id: int, timeframe: Timeframe, lo: int, hi: int, layers: Sequence[Layer]
) -> ChartBars:
    """Split-adjusted bars, as the original backend served them (Polygon's and Yahoo's defaults).

    Its client draws one continuous line across a split and knows no ``adjust``
    option, so raw bars are split-adjusted here with the actions known now. Bars a
    provider stored adjusted for dividends too (Alpaca ``adjustment=all``) cannot
    be un-adjusted and are served as stored rather than refused.
    """
    try:
        frame = read_bars_frame(
            conn, symbol_id, timeframe, lo, hi, layers=layers, adjust=Adjust.split_adjusted
        )
    except InvalidInput as e:
        if e.field != "adjust":
            raise
        frame = read_bars_frame(conn, symbol_id, timeframe, lo, hi, layers=layers)
    index = pd.DatetimeIndex(frame.index).as_unit("s")
    ts = [int(t) for t in index.asi8.tolist()]
    cols = {c: [float(v) for v in frame[c].tolist()] for c in ("open", "high", "low", "close", "volume")}
    return ChartBars(ts=ts, provider=[str(p) for p in frame["provider"].tolist()], **cols)


def _distinct_ts(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    layers: Sequence[Layer],
    lo: int,
    hi: int,
    n: int,
    *,
    newest: bool,
) -> list[int]:
    """Up to ``n`` distinct stored ``ts`` in ``[lo, hi)``, the newest (or oldest) first.

    An index scan on the primary key; it tells the range to read, and an
    empty answer spares the read altogether.
    """
    order = bars.c.ts.desc() if newest else bars.c.ts
    rows = conn.execute(
        sa.select(bars.c.ts)
        .where(
            bars.c.symbol_id == symbol_id,
            bars.c.timeframe == timeframe.value,
            bars.c.layer.in_([Layer(x).value for x in layers]),
            bars.c.ts >= lo,
            bars.c.ts < hi,
        )
        .distinct()
        .order_by(order)
        .limit(n)
    )
    return [int(t) for (t,) in rows]


_EMPTY = ChartBars([], [], [], [], [], [], [])


def newest_bars(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    n: int,
    *,
    after: int | None = None,
    before: int | None = None,
    layers: Sequence[Layer] = DEFAULT_LAYERS,
) -> ChartBars:
    """The newest ``n`` bars with ``after <= ts < before``, one per ``ts``, ascending."""
    lo = 0 if after is None else after
    hi = END_OF_TIME if before is None else before
    if n <= 0 or hi <= lo:
        return _EMPTY
    found = _distinct_ts(conn, symbol_id, timeframe, layers, lo, hi, n, newest=True)
    return _read(conn, symbol_id, timeframe, found[-1], hi, layers) if found else _EMPTY


def oldest_bars(
    conn: Connection, symbol_id: int, timeframe: Timeframe, n: int, *, after: int, layers: Sequence[Layer]
) -> ChartBars:
    """The first ``n`` bars with ``ts >= after``, ascending (forecast points ahead of now)."""
    if n <= 0:
        return _EMPTY
    found = _distinct_ts(conn, symbol_id, timeframe, layers, after, END_OF_TIME, n, newest=False)
    return _read(conn, symbol_id, timeframe, after, found[-1] + 1, layers) if found else _EMPTY


def final_ts(conn: Connection, symbol_id: int, timeframe: Timeframe, start: int, end: int) -> set[int]:
    """``ts`` of the bars in ``[start, end)`` stored as final (layer ``historical``)."""
    rows = conn.execute(
        sa.select(bars.c.ts)
        .where(
            bars.c.symbol_id == symbol_id,
            bars.c.timeframe == timeframe.value,
            bars.c.layer == Layer.historical.value,
            bars.c.ts >= start,
            bars.c.ts < end,
        )
        .distinct()
    )
    return {int(t) for (t,) in rows}


def symbol_row(conn: Connection, ticker: str) -> tuple[int, str] | None:
    """(id, asset class) of a stored ticker (already canonical), or None."""
    row = conn.execute(
        sa.select(symbols.c.id, symbols.c.asset_class).where(symbols.c.ticker == ticker)
    ).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


def definition_settings(conn: Connection, symbol_id: int, timeframe: Timeframe) -> dict[str, Any] | None:
    """The stored window, priority, provider and enabled flag of (symbol, timeframe)'s definition, or None."""
    d = job_definitions
    row = (
        conn.execute(
            sa.select(d.c.window_days, d.c.start, d.c.end, d.c.priority, d.c.provider, d.c.enabled)
            .where(d.c.symbol_id == symbol_id, d.c.timeframe == timeframe.value)
            .order_by(d.c.id)
            .limit(1)
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else dict(row)


def last_coverage_update(conn: Connection, symbol_id: int, timeframe: Timeframe) -> float | None:
    """When coverage of (symbol, timeframe) last grew (database clock), or None if never.

    Coverage, unlike the queue, keeps this after finished slices are archived.
    """
    value = conn.execute(
        sa.select(sa.func.max(coverage.c.updated_at)).where(
            coverage.c.symbol_id == symbol_id, coverage.c.timeframe == timeframe.value
        )
    ).scalar_one_or_none()
    return None if value is None else float(value)


def _slices() -> sa.Select[Any]:
    return sa.select(job_runs, symbols.c.ticker.label("symbol")).join(
        symbols, symbols.c.id == job_runs.c.symbol_id
    )


def list_runs(
    conn: Connection, statuses: Sequence[str], order: str, limit: int | None
) -> list[dict[str, Any]]:
    """Slices with their ticker, in one of the orchestrator's orders.

    Args:
        order: ``oldest_created`` (queued work, FIFO), ``started`` (running work)
            or ``newest_finished`` (recent history).
    """
    t = job_runs
    by = {
        "oldest_created": (t.c.created_at, t.c.id),
        "started": (t.c.started_at, t.c.id),
        "newest_finished": (t.c.finished_at.desc(), t.c.id.desc()),
    }[order]
    query = _slices().where(t.c.status.in_(list(statuses))).order_by(*by)
    if limit is not None:
        query = query.limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def oldest_failed_ids(conn: Connection, limit: int) -> list[int]:
    """Ids of failed slices, the longest-failed first."""
    query = (
        sa.select(job_runs.c.id)
        .where(job_runs.c.status == "failed")
        .order_by(job_runs.c.finished_at, job_runs.c.id)
        .limit(limit)
    )
    return [int(i) for (i,) in conn.execute(query)]
