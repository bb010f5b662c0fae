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
two slices completing side by side cannot both merge the same rows. A batch
(:func:`add_coverage_many`) locks all its symbols in ascending id order, so
batches sharing symbols queue up instead of deadlocking.
All bounds are Unix seconds UTC, ``[start, end)``.
"""

from __future__ import annotations

import bisect
import numbers
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.intervals import Interval, normalize, subtract, total
from barfill.domain.slices import CoverageSpan
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.store.db import db_now
from barfill.store.schema import coverage, symbols
from barfill.store.symbols import CHUNK_ROWS


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


CoverageKey = tuple[int, Timeframe | str]
"""(symbol id, timeframe): what coverage is kept normalized per."""


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

    This is the one-key case of :func:`add_coverage_many`.

    Args:
        now: ``updated_at`` for the rows written, database-clock seconds; read
            from the database when None.

    Raises:
        InvalidInput: for a span with ``start >= end`` (nothing is written).
    """
    add_coverage_many(conn, [((symbol_id, timeframe), spans)], now=now)


def add_coverage_many(
    conn: Connection,
    spans_by_key: Mapping[CoverageKey, Sequence[CoverageSpan]]
    | Iterable[tuple[CoverageKey, Sequence[CoverageSpan]]],
    *,
    now: float | None = None,
) -> None:
    """Record the spans of many (symbol, timeframe) keys at once, inside the caller's transaction.

    The rows left are exactly those of one :func:`add_coverage` call per entry,
    in order. Given as ``(key, spans)`` pairs a key may repeat: the queue
    passes one pair per completed slice, so a batch of completions leaves the
    same rows as the same completions made one by one (the order matters only
    for provisional rows, through which one supersedes which).

    Why: one call per completed slice costs three or four statements each
    (lock, read, update or delete, insert). Here the cost is a fixed handful
    whatever the number of keys: one locking the symbols, one reading their
    coverage, one ``DELETE`` of the rows replaced and one ``executemany``
    ``INSERT`` of the rows replacing them; the merging runs in Python on the
    rows read. When the whole call replaces one row by one row of the same
    key (a single completion extending an interval, the usual case) that row
    is updated in place instead: one statement, not two.

    The symbols are locked in ascending id order by a statement of its own,
    before the read (see :func:`_lock_symbols`), so two batches sharing
    symbols wait for each other instead of deadlocking, and the later one
    merges with what the earlier one committed.

    Args:
        now: ``updated_at`` for the rows written, database-clock seconds; read
            from the database when None.

    Raises:
        InvalidInput: for an unknown timeframe or a bad span (nothing is written).
    """
    pairs = spans_by_key.items() if isinstance(spans_by_key, Mapping) else spans_by_key
    calls: list[tuple[tuple[int, Timeframe], list[CoverageSpan]]] = []
    for (symbol_id, timeframe), spans in pairs:
        tf = Timeframe.parse(timeframe)
        _check_spans(spans)
        if spans:
            calls.append(((int(symbol_id), tf), [_exact(s) for s in spans]))
    if not calls:
        return
    now = _clock(conn, now)
    _lock_symbols(conn, sorted({sid for (sid, _), _ in calls}))
    state = _read_rows(conn, calls)
    stored = {r.id: key for key, rows in state.items() for r in rows}
    for key, spans in calls:
        rows = state[key]
        final = normalize((s.start, s.end) for s in spans if s.expires_at is None)
        if final:
            rows = _merge_final(rows, final)
        for span in spans:
            if span.expires_at is not None:
                rows = _add_provisional(rows, span)
        state[key] = rows
    kept = {r.id for rows in state.values() for r in rows}
    replaced = sorted(i for i in stored.keys() - kept if i is not None)
    added = [(key, r) for key, rows in state.items() for r in rows if r.id is None]
    if len(replaced) == 1 and len(added) == 1 and stored[replaced[0]] == added[0][0]:
        # The usual single completion: its span extends one interval. In place, one
        # statement instead of two.
        r = added[0][1]
        values = {"start": r.start, "end": r.end, "expires_at": r.expires_at}
        conn.execute(
            _UPDATE_ROW,
            {"b_id": replaced[0], "provisional": r.expires_at is not None, "updated_at": now} | values,
        )
        return
    if replaced:
        conn.execute(_DELETE_ROWS, {"b_ids": replaced})
    if added:
        new_rows = [_row(sid, tf, Interval(r.start, r.end), r.expires_at, now) for (sid, tf), r in added]
        conn.execute(sa.insert(coverage), new_rows)


@dataclass(eq=False, slots=True)
class _Stored:
    """A coverage row while merging: ``id`` None for a row not yet written. Compared by identity."""

    id: int | None
    start: int
    end: int
    expires_at: float | None


def _exact(span: CoverageSpan) -> CoverageSpan:
    return CoverageSpan(
        int(span.start), int(span.end), None if span.expires_at is None else float(span.expires_at)
    )


# Ascending ids: every writer takes the row locks in the same order (PostgreSQL locks
# the rows of a FOR ... ORDER BY query in the order it returns them).
_LOCK_SYMBOLS = (
    sa.select(symbols.c.id)
    .where(symbols.c.id.in_(sa.bindparam("b_ids", expanding=True)))
    .order_by(symbols.c.id)
    .with_for_update(key_share=True)
)
_READ_ROWS = sa.select(
    coverage.c.id,
    coverage.c.symbol_id,
    coverage.c.timeframe,
    coverage.c.start,
    coverage.c.end,
    coverage.c.expires_at,
).where(
    coverage.c.symbol_id.in_(sa.bindparam("b_symbols", expanding=True)),
    coverage.c.timeframe.in_(sa.bindparam("b_timeframes", expanding=True)),
    coverage.c.start <= sa.bindparam("b_hi", type_=sa.BigInteger),
    coverage.c.end >= sa.bindparam("b_lo", type_=sa.BigInteger),
)
_UPDATE_ROW = (
    sa.update(coverage)
    .where(coverage.c.id == sa.bindparam("b_id", type_=sa.Integer))
    .values(
        {
            c: sa.bindparam(c, type_=coverage.c[c].type)
            for c in ("start", "end", "provisional", "expires_at", "updated_at")
        }
    )
)
_DELETE_ROWS = sa.delete(coverage).where(coverage.c.id.in_(sa.bindparam("b_ids", expanding=True)))


def _lock_symbols(conn: Connection, symbol_ids: list[int]) -> None:
    # A statement of its own, not folded into the read below: on PostgreSQL a statement
    # that waited for a row lock still reads with the snapshot it took before waiting,
    # so it would miss the rows the previous lock holder just merged.
    conn.execute(_LOCK_SYMBOLS, {"b_ids": symbol_ids}).all()


def _read_rows(
    conn: Connection, calls: list[tuple[tuple[int, Timeframe], list[CoverageSpan]]]
) -> dict[tuple[int, Timeframe], list[_Stored]]:
    """The stored rows of every key in ``calls`` that could take part in a merge, in one query.

    One bounding range for all keys: a superset of the rows each key's spans
    overlap or touch (the merge looks at the rows it needs and keeps the rest).
    """
    state: dict[tuple[int, Timeframe], list[_Stored]] = {key: [] for key, _ in calls}
    params = {
        "b_symbols": sorted({sid for sid, _ in state}),
        "b_timeframes": sorted({tf.value for _, tf in state}),
        "b_lo": min(s.start for _, spans in calls for s in spans),
        "b_hi": max(s.end for _, spans in calls for s in spans),
    }
    for r in conn.execute(_READ_ROWS, params):
        rows = state.get((int(r.symbol_id), Timeframe(r.timeframe)))
        if rows is not None:
            rows.append(_Stored(int(r.id), int(r.start), int(r.end), r.expires_at))
    return state


def _overlaps(start: int, end: int, items: list[Interval]) -> bool:
    return subtract([Interval(start, end)], items) != [Interval(start, end)]


def _touches(items: Sequence[Interval], starts: list[int], start: int, end: int) -> bool:
    # ``items`` is normalized: the last interval starting at or before ``end`` reaches furthest.
    k = bisect.bisect_right(starts, end) - 1
    return k >= 0 and items[k].end >= start


def _merge_final(rows: list[_Stored], final: list[Interval]) -> list[_Stored]:
    """``rows`` of one key after adding the normalized final intervals ``final``."""
    starts = [i.start for i in final]
    old_final = [r for r in rows if r.expires_at is None and _touches(final, starts, r.start, r.end)]
    merged = normalize([*final, *((r.start, r.end) for r in old_final)])
    # Provisional rows only ever lie outside older final coverage: those overlapping
    # ``merged`` overlap the new spans, and lose that part.
    cut = [r for r in rows if r.expires_at is not None and _overlaps(r.start, r.end, merged)]
    gone = {*old_final, *cut}
    out = [r for r in rows if r not in gone]
    out += [_Stored(None, i.start, i.end, None) for i in merged]
    for r in cut:
        out += [
            _Stored(None, i.start, i.end, r.expires_at) for i in subtract([Interval(r.start, r.end)], merged)
        ]
    return out


def _add_provisional(rows: list[_Stored], span: CoverageSpan) -> list[_Stored]:
    """``rows`` of one key after adding the provisional ``span``."""
    assert span.expires_at is not None
    final = normalize((r.start, r.end) for r in rows if r.expires_at is None)
    subsumed = {
        r
        for r in rows
        if r.expires_at is not None
        and span.start <= r.start
        and r.end <= span.end
        and r.expires_at <= span.expires_at
    }
    out = [r for r in rows if r not in subsumed]
    out += [
        _Stored(None, i.start, i.end, span.expires_at)
        for i in subtract([Interval(span.start, span.end)], final)
    ]
    return out


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


@dataclass(frozen=True)
class CoverageView:
    """Coverage of one (symbol, timeframe), final and provisional apart (each normalized).

    The planner needs them apart: a final gap ignores provisional coverage (a
    session covered provisionally is still to be fetched once final), while
    provisional planning counts unexpired provisional coverage as covered.
    """

    final: list[Interval] = field(default_factory=list)
    provisional: list[Interval] = field(default_factory=list)

    @property
    def all(self) -> list[Interval]:
        """Final plus unexpired provisional coverage, normalized."""
        return normalize([*self.final, *self.provisional])


def read_coverage(
    conn: Connection, symbol_id: int, timeframe: Timeframe | str, *, final_only: bool = False
) -> list[Interval]:
    """Covered intervals of (symbol, timeframe), normalized: final plus unexpired provisional.

    With ``final_only``, final coverage alone (what a final slice or a final
    derivation may rely on).
    """
    tf = Timeframe.parse(timeframe)
    alive = coverage.c.expires_at.is_(None) if final_only else _unexpired(conn)
    rows = conn.execute(
        sa.select(coverage.c.start, coverage.c.end).where(
            coverage.c.symbol_id == symbol_id, coverage.c.timeframe == tf.value, alive
        )
    )
    return normalize((int(s), int(e)) for s, e in rows)


def read_coverage_view(conn: Connection, symbol_id: int, timeframe: Timeframe | str) -> CoverageView:
    """Final and unexpired provisional coverage of (symbol, timeframe), apart."""
    return coverage_views(conn, [symbol_id]).get((symbol_id, Timeframe.parse(timeframe)), CoverageView())


def coverage_views(
    conn: Connection, symbol_ids: Iterable[int] | None = None
) -> dict[tuple[int, Timeframe], CoverageView]:
    """:func:`read_coverage_view` of every (symbol, timeframe) at once, or of ``symbol_ids``' (for the tick).

    One query for all, one per :data:`CHUNK_ROWS` symbols otherwise (bound-parameter limits).
    """
    query = sa.select(
        coverage.c.symbol_id, coverage.c.timeframe, coverage.c.start, coverage.c.end, coverage.c.expires_at
    ).where(_unexpired(conn))
    if symbol_ids is None:
        queries = [query]
    else:
        wanted = sorted(set(symbol_ids))
        queries = [
            query.where(coverage.c.symbol_id.in_(wanted[i : i + CHUNK_ROWS]))
            for i in range(0, len(wanted), CHUNK_ROWS)
        ]
    final: dict[tuple[int, Timeframe], list[tuple[int, int]]] = defaultdict(list)
    provisional: dict[tuple[int, Timeframe], list[tuple[int, int]]] = defaultdict(list)
    for chunk in queries:
        for sid, tf, start, end, expires_at in conn.execute(chunk):
            key = (int(sid), Timeframe(tf))
            (final if expires_at is None else provisional)[key].append((int(start), int(end)))
    return {
        key: CoverageView(normalize(final.get(key, [])), normalize(provisional.get(key, [])))
        for key in {*final, *provisional}
    }


def coverage_map(
    conn: Connection, symbol_ids: Iterable[int] | None = None
) -> dict[tuple[int, Timeframe], list[Interval]]:
    """:func:`read_coverage` of every (symbol, timeframe) at once (final plus unexpired provisional)."""
    return {key: view.all for key, view in coverage_views(conn, symbol_ids).items()}


def drop_provisional(
    conn: Connection, symbol_id: int, timeframe: Timeframe | str, start: int, end: int
) -> int:
    """Remove provisional coverage of (symbol, timeframe) inside ``[start, end)``; returns rows touched.

    Rows reaching outside keep their outside parts (same ``expires_at``).
    Inside the caller's transaction: final bars replacing provisional ones
    drop the provisional coverage that vouched for what was removed.
    """
    tf = Timeframe.parse(timeframe)
    rows = conn.execute(
        sa.select(coverage.c.id, coverage.c.start, coverage.c.end, coverage.c.expires_at).where(
            coverage.c.symbol_id == symbol_id,
            coverage.c.timeframe == tf.value,
            coverage.c.expires_at.is_not(None),
            coverage.c.start < end,
            coverage.c.end > start,
        )
    ).all()
    if not rows:
        return 0
    conn.execute(_DELETE_ROWS, {"b_ids": [int(r.id) for r in rows]})
    now = _clock(conn, None)
    keep = [
        _row(symbol_id, tf, part, float(r.expires_at), now)
        for r in rows
        for part in subtract([Interval(int(r.start), int(r.end))], [Interval(start, end)])
    ]
    if keep:
        conn.execute(sa.insert(coverage), keep)
    return len(rows)


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
