"""Coverage: the intervals already fetched for each (symbol, timeframe).

Coverage is what was fetched, not which bars exist: a minute without trades
has no bar and is still covered. The table stays normalized per (symbol,
timeframe):

* final rows (``expires_at`` NULL) never overlap or touch each other: adding
  a final span deletes the rows it overlaps or touches and inserts their union;
* provisional rows (``expires_at`` set, e.g. a session still in progress) are
  kept apart, never overlap final coverage (only the part not yet final is
  stored) and are cut away as final coverage arrives. They count as coverage
  until ``expires_at`` on the **database clock**.

Writers of one symbol are serialized by a row lock on the symbol
(``FOR NO KEY UPDATE`` on PostgreSQL, which does not block the foreign-key
checks of concurrent bar writes; SQLite serializes every writer anyway), so
two slices completing side by side cannot both merge the same rows.
All bounds are Unix seconds UTC, ``[start, end)``.
"""

from __future__ import annotations

import bisect
import numbers
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.intervals import Interval, normalize, subtract, total
from barfill.domain.slices import CoverageSpan
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.db import db_now
from barfill.store.schema import coverage, symbols


@dataclass(frozen=True)
class CoverageSummary:
    """Coverage of one (symbol, timeframe), counting unexpired provisional intervals.

    ``first``/``last`` bound the covered set (``last`` exclusive), Unix seconds UTC.
    """

    symbol_id: int
    symbol: str
    timeframe: Timeframe
    intervals: int  # normalized intervals (holes between them are gaps or closed sessions)
    first: int
    last: int
    covered_s: int
    provisional: int  # unexpired provisional rows


def _check_spans(spans: Sequence[CoverageSpan]) -> None:
    for span in spans:
        bounds = (span.start, span.end)
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in bounds):
            raise InvalidInput("coverage", "spans with integer Unix-second bounds", span)
        if span.end <= span.start:
            raise InvalidInput("coverage", "spans with start < end", span)


def _clock(conn: Connection, now: float | None) -> float:
    if now is not None:
        return float(now)
    return float(conn.execute(sa.select(db_now(conn))).scalar_one())


def add_coverage(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe | str,
    spans: Sequence[CoverageSpan],
    *,
    now: float | None = None,
) -> None:
    """Record ``spans`` as fetched, inside the caller's transaction.

    Final spans merge with the final rows they overlap or touch, and replace
    the provisional rows (or the parts of them) they cover. A provisional span
    adds only its part not already final, and supersedes the provisional rows
    it contains that expire no later than it does.

    Args:
        now: ``updated_at`` for the rows written, database-clock seconds; read
            from the database when None.

    Raises:
        InvalidInput: for a span with ``start >= end`` (nothing is written).
    """
    tf = Timeframe.parse(timeframe)
    _check_spans(spans)
    if not spans:
        return
    spans = [
        CoverageSpan(int(s.start), int(s.end), None if s.expires_at is None else float(s.expires_at))
        for s in spans
    ]
    now = _clock(conn, now)
    _lock_symbol(conn, symbol_id)
    final = normalize((s.start, s.end) for s in spans if s.expires_at is None)
    if final:
        _merge_final(conn, symbol_id, tf, final, now)
    for span in spans:
        if span.expires_at is not None:
            _add_provisional(conn, symbol_id, tf, span, now)


def _lock_symbol(conn: Connection, symbol_id: int) -> None:
    # A statement of its own, not folded into the read below: on PostgreSQL a statement
    # that waited for a row lock still reads with the snapshot it took before waiting,
    # so it would miss the rows the previous lock holder just merged.
    conn.execute(sa.select(symbols.c.id).where(symbols.c.id == symbol_id).with_for_update(key_share=True))


def _overlapping_rows(conn: Connection, symbol_id: int, tf: Timeframe, lo: int, hi: int) -> list[Any]:
    """Rows of (symbol, timeframe) that overlap or touch ``[lo, hi)``."""
    return list(
        conn.execute(
            sa.select(coverage.c.id, coverage.c.start, coverage.c.end, coverage.c.expires_at).where(
                coverage.c.symbol_id == symbol_id,
                coverage.c.timeframe == tf.value,
                coverage.c.start <= hi,
                coverage.c.end >= lo,
            )
        )
    )


def _overlaps(start: int, end: int, items: list[Interval]) -> bool:
    return subtract([Interval(start, end)], items) != [Interval(start, end)]


def _touches(items: Sequence[Interval], starts: list[int], start: int, end: int) -> bool:
    # ``items`` is normalized: the last interval starting at or before ``end`` reaches furthest.
    k = bisect.bisect_right(starts, end) - 1
    return k >= 0 and items[k].end >= start


def _merge_final(conn: Connection, symbol_id: int, tf: Timeframe, final: list[Interval], now: float) -> None:
    rows = _overlapping_rows(conn, symbol_id, tf, final[0].start, final[-1].end)
    starts = [i.start for i in final]
    old_final = [r for r in rows if r.expires_at is None and _touches(final, starts, r.start, r.end)]
    merged = normalize([*final, *((r.start, r.end) for r in old_final)])
    # Provisional rows only ever lie outside older final coverage, so all that overlap
    # the merged result are among ``rows``.
    cut = [r for r in rows if r.expires_at is not None and _overlaps(r.start, r.end, merged)]
    if len(old_final) == 1 and len(merged) == 1 and not cut:
        # The usual completion: the span extends one existing interval.
        conn.execute(
            sa.update(coverage)
            .where(coverage.c.id == old_final[0].id)
            .values(start=merged[0].start, end=merged[0].end, updated_at=now)
        )
        return
    replaced = [r.id for r in (*old_final, *cut)]
    if replaced:
        conn.execute(sa.delete(coverage).where(coverage.c.id.in_(replaced)))
    new_rows = [_row(symbol_id, tf, i, None, now) for i in merged]
    for r in cut:
        new_rows += [
            _row(symbol_id, tf, i, r.expires_at, now) for i in subtract([Interval(r.start, r.end)], merged)
        ]
    conn.execute(sa.insert(coverage), new_rows)


def _add_provisional(conn: Connection, symbol_id: int, tf: Timeframe, span: CoverageSpan, now: float) -> None:
    rows = _overlapping_rows(conn, symbol_id, tf, span.start, span.end)
    final = normalize((r.start, r.end) for r in rows if r.expires_at is None)
    assert span.expires_at is not None
    subsumed = [
        r.id
        for r in rows
        if r.expires_at is not None
        and span.start <= r.start
        and r.end <= span.end
        and r.expires_at <= span.expires_at
    ]
    if subsumed:
        conn.execute(sa.delete(coverage).where(coverage.c.id.in_(subsumed)))
    pieces = subtract([Interval(span.start, span.end)], final)
    if pieces:
        conn.execute(sa.insert(coverage), [_row(symbol_id, tf, i, span.expires_at, now) for i in pieces])


def _row(
    symbol_id: int, tf: Timeframe, span: Interval, expires_at: float | None, now: float
) -> dict[str, Any]:
    return {
        "symbol_id": symbol_id,
        "timeframe": tf.value,
        "start": span.start,
        "end": span.end,
        "provisional": expires_at is not None,
        "expires_at": expires_at,
        "updated_at": now,
    }


def _unexpired(conn: Connection) -> sa.ColumnElement[bool]:
    return sa.or_(coverage.c.expires_at.is_(None), coverage.c.expires_at > db_now(conn))


def read_coverage(conn: Connection, symbol_id: int, timeframe: Timeframe | str) -> list[Interval]:
    """Covered intervals of (symbol, timeframe): final plus unexpired provisional, normalized."""
    tf = Timeframe.parse(timeframe)
    rows = conn.execute(
        sa.select(coverage.c.start, coverage.c.end).where(
            coverage.c.symbol_id == symbol_id, coverage.c.timeframe == tf.value, _unexpired(conn)
        )
    )
    return normalize((int(s), int(e)) for s, e in rows)


def coverage_map(
    conn: Connection, symbol_ids: Iterable[int] | None = None
) -> dict[tuple[int, Timeframe], list[Interval]]:
    """:func:`read_coverage` of every (symbol, timeframe) at once (one query, for the orchestrator's tick)."""
    query = sa.select(coverage.c.symbol_id, coverage.c.timeframe, coverage.c.start, coverage.c.end).where(
        _unexpired(conn)
    )
    if symbol_ids is not None:
        query = query.where(coverage.c.symbol_id.in_(sorted(set(symbol_ids))))
    spans: dict[tuple[int, Timeframe], list[tuple[int, int]]] = defaultdict(list)
    for sid, tf, start, end in conn.execute(query):
        spans[(int(sid), Timeframe(tf))].append((int(start), int(end)))
    return {key: normalize(items) for key, items in spans.items()}


def expire_provisional(conn: Connection) -> int:
    """Delete provisional rows whose ``expires_at`` has passed on the database clock; returns how many."""
    result = conn.execute(
        sa.delete(coverage).where(coverage.c.expires_at.is_not(None), coverage.c.expires_at <= db_now(conn))
    )
    return int(result.rowcount)


def coverage_summary(conn: Connection, symbol_ids: Iterable[int] | None = None) -> list[CoverageSummary]:
    """Per (symbol, timeframe) with any unexpired coverage, ordered by ticker then timeframe."""
    query = (
        sa.select(
            coverage.c.symbol_id,
            symbols.c.ticker,
            coverage.c.timeframe,
            coverage.c.start,
            coverage.c.end,
            coverage.c.expires_at,
        )
        .join(symbols, symbols.c.id == coverage.c.symbol_id)
        .where(_unexpired(conn))
    )
    if symbol_ids is not None:
        query = query.where(coverage.c.symbol_id.in_(sorted(set(symbol_ids))))
    groups: dict[tuple[int, str, str], list[Any]] = defaultdict(list)
    for row in conn.execute(query):
        groups[(int(row.symbol_id), str(row.ticker), str(row.timeframe))].append(row)
    out: list[CoverageSummary] = []
    for (sid, ticker, tf), rows in groups.items():
        covered = normalize((int(r.start), int(r.end)) for r in rows)
        out.append(
            CoverageSummary(
                symbol_id=sid,
                symbol=ticker,
                timeframe=Timeframe(tf),
                intervals=len(covered),
                first=covered[0].start,
                last=covered[-1].end,
                covered_s=total(covered),
                provisional=sum(1 for r in rows if r.expires_at is not None),
            )
        )
    order = {t: i for i, t in enumerate(Timeframe)}
    out.sort(key=lambda s: (s.symbol, order[s.timeframe]))
    return out
