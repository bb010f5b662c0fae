"""Derived timeframes: rebuild coarser bars from finer ones after a source slice lands.

Configured as ``"SOURCE->TARGET"`` pairs (``m15->h1``). Each bucket a slice
touches is recomputed from **all** of its source bars in the store, never only
from the slice, and only when the bucket's whole trading time is covered by
the source's coverage: a half-fetched hour is not written as an hour. The
source bars are read exactly as a user's read selects them
(:mod:`barfill.domain.sources`): one provider per session (per week for a w1
target) and one adjustment basis, so a derived bar is never a splice of two
providers and keeps its source's basis. Final (``historical``) derived bars
are built from final source bars only. Derived
bars are stored with provider ``resample:SOURCE`` (their lineage) and their
buckets are added to the target's coverage, so a definition for the target
timeframe needs no request where the source already answers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import TradingCalendar
from barfill.domain.resample import complete_buckets, resample, touched_buckets
from barfill.domain.slices import CoverageSpan
from barfill.domain.sources import Precedence, range_span, range_timeframe
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.bar_reads import read_bars
from barfill.store.bars import delete_bars, only_written, upsert_bars
from barfill.store.coverage import add_coverage, drop_provisional, read_coverage
from barfill.store.db import db_now


@dataclass(frozen=True)
class Derivation:
    source: Timeframe
    target: Timeframe

    @property
    def provider(self) -> str:
        return f"resample:{self.source.value}"


def parse_derivations(items: Sequence[str]) -> list[Derivation]:
    out = []
    for item in items:
        source, sep, target = item.partition("->")
        src, dst = Timeframe.parse(source), Timeframe.parse(target)
        if not sep or dst.seconds <= src.seconds:
            raise InvalidInput("derivations", "'SOURCE->TARGET' with a coarser target", item)
        out.append(Derivation(src, dst))
    return out


def derive_after(
    conn: Connection,
    *,
    symbol_id: int,
    source: Timeframe,
    start: int,
    end: int,
    derivations: Sequence[Derivation],
    calendar: TradingCalendar,
    layer: Layer,
    coverage_expires_at: float | None = None,
    precedence: Precedence | Sequence[str] | None = None,
    fresh: BarBatch | None = None,
    fresh_at: float | None = None,
    fresh_alone: bool = False,
) -> int:
    """Recompute every target bucket that [start, end) of ``source`` touches; returns bars written.

    Runs inside the caller's transaction (the slice's completion), so derived
    bars land with their source or not at all.

    Derived bars take ``layer``: from an ``intraday`` (provisional) source
    they are intraday; a ``historical`` (final) derivation reads only final
    coverage and historical source bars, so nothing provisional leaks into a
    final bar.

    Args:
        layer: the layer the derived bars are written to.
        precedence: the provider order reads use (``app.precedence``), so each
            bucket is computed from the source a read of ``source`` would show.
        fresh, fresh_at: the bars of ``[start, end)`` this transaction just
            upserted (to ``layer``) and their ``fetched_at``. When the store
            holds nothing else that a read of a bucket range would consider,
            they are resampled as they are, instead of being read back.
        fresh_alone: the ranges :func:`fresh_spans` names held none of :func:`read_layers`
            before ``fresh`` was upserted (:func:`~barfill.store.bars.nothing_stored`, same
            transaction): then its rows are all there is, and they are not counted again.
    """
    if fresh is not None and fresh.timeframe != source:
        fresh = None
    final = Layer(layer) is Layer.historical
    layers = read_layers(layer)
    written = 0
    fetched_at: float | None = None
    for d in derivations:
        if d.source != source:
            continue
        lo, hi = touched_buckets(d.target, start, end, calendar)
        labels = calendar.bar_opens(d.target, lo, hi)
        labels = labels[(labels >= lo) & (labels < hi)]
        if len(labels) == 0:
            continue
        covered = read_coverage(conn, symbol_id, source, final_only=final)
        complete = labels[complete_buckets(d.target, labels, covered, calendar)]
        if len(complete) == 0:
            continue
        by = range_timeframe(d.target)
        span = range_span(calendar, by, lo, hi)
        src = _fresh_source(conn, symbol_id, lo, hi, span, layers, layer, fresh, fresh_at, fresh_alone)
        if src is None:
            src = read_bars(
                conn,
                symbol_id,
                source,
                lo,
                hi,
                layers=layers,
                precedence=precedence,
                calendar=calendar,
                range_by=by,
            )
        if len(src):
            if fetched_at is None:  # the database clock, as for every stored time
                fetched_at = float(conn.execute(sa.select(db_now(conn))).scalar_one())
            out = resample(src, d.target, calendar, provider=d.provider)
            out = out.take(np.isin(out.ts, complete))
            written += upsert_bars(conn, symbol_id, out, layer=layer, fetched_at=fetched_at)
        spans = merged_spans(complete, calendar.bar_end(d.target, complete))
        add_coverage(
            conn, symbol_id, d.target, [CoverageSpan(lo, hi, coverage_expires_at) for lo, hi in spans]
        )
    return written


def read_layers(layer: Layer) -> tuple[Layer, ...]:
    """The layers a derivation into ``layer`` reads: a final one reads final bars only."""
    return (Layer.historical,) if Layer(layer) is Layer.historical else (Layer.historical, Layer.intraday)


def fresh_spans(
    source: Timeframe, start: int, end: int, derivations: Sequence[Derivation], calendar: TradingCalendar
) -> list[tuple[int, int]]:
    """The whole ranges (sessions, weeks) whose stored ``source`` bars :func:`derive_after`
    would take for a slice ``[start, end)``: where its fresh bars must be alone to be used as
    they are. Pure: a caller probes them before its upsert."""
    spans = []
    for d in derivations:
        if d.source == source:
            lo, hi = touched_buckets(d.target, start, end, calendar)
            spans.append(range_span(calendar, range_timeframe(d.target), lo, hi))
    return spans


def merged_spans(starts: np.ndarray[Any, Any], ends: np.ndarray[Any, Any]) -> list[tuple[int, int]]:
    """``[start, end)`` pairs merged as :func:`barfill.domain.intervals.normalize` merges them.

    Columnar: a slice's buckets are thousands (an m5 bucket each), and
    merging them one Interval at a time cost ~1/8 of a commit (profiled).
    Empty pairs are dropped; overlapping and touching ones merge.
    """
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if len(starts) == 0:
        return []
    order = np.lexsort((ends, starts))
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    first = np.r_[True, starts[1:] > reach[:-1]]  # a run starts past everything before it
    run = np.flatnonzero(first)
    last = np.r_[run[1:] - 1, len(starts) - 1]
    return list(zip(starts[run].tolist(), reach[last].tolist(), strict=True))


def _fresh_source(
    conn: Connection,
    symbol_id: int,
    lo: int,
    hi: int,
    span: tuple[int, int],
    layers: Sequence[Layer],
    layer: Layer,
    fresh: BarBatch | None,
    fresh_at: float | None,
    alone: bool,
) -> BarBatch | None:
    """``fresh``'s bars in ``[lo, hi)`` when they are all a read would find there; else None.

    A read selects one source per whole range (session, or week) around
    ``[lo, hi)``, ``span``: if every row of those ranges is one the fresh
    upsert wrote, the only source is the fresh batch and the read would return
    its bars as they are (values round-trip exactly; NaN vwap and -1 trades
    too). ``alone`` (nothing was there before the upsert) says so without
    counting the rows again; else they are counted.
    """
    if fresh is None or fresh_at is None or len(fresh) == 0:
        return None
    span_lo, span_hi = span
    mine = fresh.between(span_lo, span_hi)
    if alone and bool(np.all(mine.ts[1:] > mine.ts[:-1])):  # each row one upserted row
        return mine.between(lo, hi)
    stored = only_written(
        conn,
        symbol_id,
        fresh.timeframe,
        span_lo,
        span_hi,
        layers=layers,
        provider=fresh.provider,
        layer=layer,
        fetched_at=fresh_at,
    )
    if stored is None or stored != len(mine):
        return None
    return mine.between(lo, hi)


def drop_provisional_after(
    conn: Connection,
    *,
    symbol_id: int,
    source: Timeframe,
    start: int,
    end: int,
    derivations: Sequence[Derivation],
    calendar: TradingCalendar,
) -> int:
    """Remove what is provisional in ``[start, end)`` of ``source`` once its final bars landed.

    Inside the transaction that commits the final slice: the ``intraday`` bars
    of ``source`` in the range (with or without a final twin), and of each
    derived target the intraday bars and provisional coverage of every bucket
    the range touches (their final versions are derived right after, from
    final data only). The source's own provisional coverage is already cut by
    the final coverage. Returns bars deleted.
    """
    deleted = delete_bars(conn, symbol_id, source, start, end, layer=Layer.intraday)
    for d in derivations:
        if d.source != source:
            continue
        lo, hi = touched_buckets(d.target, start, end, calendar)
        deleted += delete_bars(conn, symbol_id, d.target, lo, hi, layer=Layer.intraday)
        drop_provisional(conn, symbol_id, d.target, lo, hi)
    return deleted
