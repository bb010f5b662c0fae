"""A bar read's rows: one packed scan of a range, its row stamps, and one source per range kept.

:func:`fetch_rows` is the database half of :mod:`barfill.store.bar_reads`: it
reads every stored row of whole ranges (sessions; weeks for w1) in one raw-SQL
scan, each row numbered by its (provider, layer, basis) source, then keeps
one source per range (:mod:`barfill.domain.sources`) and clips to the span.
With ``fingerprint`` it also keeps the :class:`RowStamps` a read's ETag
:data:`Fingerprint` summarises. Prices come out as stored: adjustment and the
answer's shape (BarBatch, DataFrame) are :mod:`barfill.store.bar_reads`' part.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from barfill.domain.bars import Basis
from barfill.domain.calendar import TradingCalendar
from barfill.domain.intervals import Interval
from barfill.domain.sources import Precedence, Selection, range_labels, range_span, select_sources
from barfill.domain.timeframes import Timeframe
from barfill.errors import DatabaseError
from barfill.store.bars import driver_errors
from barfill.store.schema import LAYER_CODES, LAYER_NAMES, TIMEFRAME_CODES

# (rows, newest fetch, flagged rows, first ts, last ts) of a range and layers: the input of a
# bar answer's ETag (barfill.store.http_reads.bars_fingerprint); NO_ROWS for none.
Fingerprint = tuple[int, float, int, int, int]
NO_ROWS: Fingerprint = (0, 0.0, 0, 0, 0)
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class RowStamps:
    """Every stored row of a range and layers (each provider and basis, flagged ones too), in ``ts``
    order: its open time, fetch time and whether it is flagged bad. What a :data:`Fingerprint`
    summarises, kept so a patched range's fingerprint can be computed again."""

    ts: Array
    fetched_at: Array
    flagged: Array

    def fingerprint(self) -> Fingerprint:
        """:func:`barfill.store.http_reads.bars_fingerprint` of these rows."""
        n = len(self.ts)
        if n == 0:
            return NO_ROWS
        flagged = int(np.count_nonzero(self.flagged))
        return n, float(self.fetched_at.max()), flagged, int(self.ts[0]), int(self.ts[-1])


class Rows:
    """The selected columns of a read, before they become a BarBatch or a DataFrame."""

    def __init__(
        self,
        columns: dict[str, np.ndarray[Any, Any]],
        providers: np.ndarray[Any, Any],
        layers: np.ndarray[Any, Any],
        selection: Selection,
    ) -> None:
        self.columns = columns
        self.providers = providers
        self.layers = layers
        self.selection = selection
        self.adjusted: Basis | None = None
        self.stamps: RowStamps | None = None  # with ``fingerprint``: every stored row of the span
        self.bases: frozenset[str] = frozenset()  # the bases of the rows sources were chosen from
        self.provider_codes: Array = np.zeros(0, dtype=np.int64)  # each kept row's, into provider_names
        self.provider_names: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> Fingerprint:
        return NO_ROWS if self.stamps is None else self.stamps.fingerprint()

    @property
    def basis(self) -> Basis:
        """The basis of the returned prices: the stored one, or the one they were adjusted to."""
        return self.adjusted or self.selection.basis or Basis.raw


# What a read fetches per row when its integers are too large for the packed form of ``_fetch``:
# fixed-width numbers only, so rows go straight into one numpy record array (no per-row strings).
# ``source`` indexes the (provider, layer, basis) triples of the range, found first by a GROUP BY
# that runs inside the database.
_READ_ROW = np.dtype(
    [
        ("ts", np.int64),
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("volume", np.float64),
        ("vwap", np.float64),
        ("trade_count", np.int64),
        ("source", np.int64),
        ("flagged", np.int64),
    ]
)
_READ_ROW_FINGERPRINT = np.dtype(_READ_ROW.descr + [("fetched_at", np.float64)])
# (database, symbol id, timeframe) -> the (provider, layer, basis) sources a read of it found.
# A read numbers its rows by these in the fetch itself; a row of any other source (numbered -1)
# sends it back to finding the range's sources first (one more scan). Only ever a shortcut.
_SEEN: dict[tuple[str, int, str], tuple[tuple[str, str, str], ...]] = {}
_SEEN_MAX_SERIES = 100_000
_SEEN_MAX_SOURCES = 16
_SOURCE_BITS = 10
_KEY_BITS = _SOURCE_BITS + 1  # then one bit: flagged bad
_UNKNOWN_SOURCE = (1 << _SOURCE_BITS) - 1
_EXACT = 2**53
_READ_FLOATS = ("open", "high", "low", "close", "volume", "vwap")
# Raw reads name providers: bars.provider holds their ids (schema.providers). Uncorrelated, each
# subquery runs once per statement.
_PROVIDER_ID = "(SELECT providers.id FROM providers WHERE providers.name = {mark})"
_PROVIDER_NAME = "(SELECT providers.name FROM providers WHERE providers.id = bars.provider)"
# SQLite turns NaN into NULL, so a NULL vwap is fetched as -inf and made NaN in numpy.
_NO_VWAP = {"sqlite": "-9e999", "postgresql": "'NaN'::float8"}


def fetch_rows(
    conn: Connection,
    symbol_id: int,
    ticker: str,
    tf: Timeframe,
    span: Interval,
    wanted: list[str],
    provider: str | None,
    prec: Precedence,
    basis: Basis | None,
    cal: TradingCalendar,
    by: Timeframe,
    include_flagged: bool,
    fingerprint: bool = False,
) -> Rows:
    """The stored rows of ``span`` selected one source per range (before any adjustment).

    With ``fingerprint``, flagged rows are fetched too (and left out here unless
    ``include_flagged``) with their fetch times; ``Rows.stamps`` holds the
    span's rows (its :data:`Fingerprint`, from the same rows) and ``Rows.bases``
    the bases sources were chosen from.
    """
    # Whole ranges are read and selected, then clipped: a partial read agrees with a full one.
    lo, hi = cached_range_span(cal, by, span.start, span.end)
    dialect = conn.dialect.name
    mark = "?" if dialect == "sqlite" else "%s"
    where = (
        f"symbol_id = {mark} AND timeframe = {mark} AND ts >= {mark} AND ts < {mark} "
        f"AND layer IN ({', '.join([mark] * len(wanted))})"
    )
    params: list[Any] = [symbol_id, TIMEFRAME_CODES[tf.value], lo, hi, *(LAYER_CODES[x] for x in wanted)]
    if not include_flagged and not fingerprint:  # bad bars (domain.badbars) are shown only if asked for
        where += " AND flag IS NULL"
    if provider is not None:
        where += f" AND provider = {_PROVIDER_ID.format(mark=mark)}"
        params.append(provider)
    memo = (str(conn.engine.url), symbol_id, tf.value)
    guess = _SEEN.get(memo)
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        rows = None
        if guess is not None:
            # The sources this series had last time, numbered in the fetch itself: one scan.
            rows = _fetch(cur, dialect, where, params, guess, fingerprint)
            sources = [(*g, 0.0) for g in guess]
            if len(rows["ts"]) and int(rows["source"].min()) < 0:
                rows = None  # a source not in the guess: find them all, then fetch again
        if rows is None:
            cur.execute(
                f"SELECT {_PROVIDER_NAME}, layer, basis, max(fetched_at) FROM bars WHERE {where} "
                "GROUP BY provider, layer, basis",
                params,
            )
            sources = [(str(p), LAYER_NAMES[int(la)], str(b), float(f)) for p, la, b, f in cur.fetchall()]
            if not sources:
                return _empty_rows(basis)
            _remember(memo, guess, sources)
            rows = _fetch(cur, dialect, where, params, [x[:3] for x in sources], fingerprint)
    except driver_errors() as e:
        raise DatabaseError(f"reading {ticker or symbol_id} {tf.value} bars failed: {e}") from e
    finally:
        cur.close()
    found = _stamps(rows, span) if fingerprint else None
    if found is not None and not include_flagged and found.flagged.any():
        unflagged = rows["flagged"] == 0
        rows = {name: column[unflagged] for name, column in rows.items()}
    if len(rows["ts"]) == 0:
        out = _empty_rows(basis)
        out.stamps = found
        return out
    if dialect == "sqlite":
        vwap = rows["vwap"]
        vwap[np.isneginf(vwap)] = np.nan
    out = _select(rows, sources, cal, by, span.start, span.end, prec, basis)
    out.stamps = found
    if fingerprint:
        code = rows["source"]
        present = np.flatnonzero(np.bincount(code[code >= 0], minlength=len(sources)))
        out.bases = frozenset(str(sources[i][2]) for i in present.tolist())
    return out


def _stamps(rows: dict[str, np.ndarray[Any, Any]], span: Interval) -> RowStamps:
    """The :class:`RowStamps` of ``span`` from the fetched rows (a superset, in ``ts`` order)."""
    ts = rows["ts"]
    lo, hi = np.searchsorted(ts, [span.start, span.end], side="left").tolist()
    return RowStamps(ts[lo:hi], rows["fetched_at"][lo:hi], rows["flagged"][lo:hi].astype(np.bool_))


def merge_fingerprints(parts: Sequence[Fingerprint]) -> Fingerprint:
    """The :data:`Fingerprint` of adjacent ranges (or of several layers of one range) together."""
    live = [p for p in parts if p[0]]
    if not live:
        return NO_ROWS
    return (
        sum(p[0] for p in live),
        max(p[1] for p in live),
        sum(p[2] for p in live),
        min(p[3] for p in live),
        max(p[4] for p in live),
    )


@functools.lru_cache(maxsize=4096)
def cached_range_span(cal: TradingCalendar, by: Timeframe, start: int, end: int) -> tuple[int, int]:
    """:func:`~barfill.domain.sources.range_span`, remembered: a chart asks for the same range
    again and again, and the calendar lookup costs more than a small read (~1.5 ms)."""
    return range_span(cal, by, start, end)


def _fetch(
    cur: Any,
    dialect: str,
    where: str,
    params: list[Any],
    sources: Sequence[tuple[str, str, str]],
    fingerprint: bool = False,
) -> dict[str, np.ndarray[Any, Any]]:
    """The rows as columns, each row numbered by its source in ``sources`` (``source`` -1: none of them).

    Each row comes as ``ts * 2048 + flagged * 1024 + source`` and its seven
    numbers (and, with ``fingerprint``, its fetch time), read into one flat
    float64 run: one Python object fewer per row and no per-row record
    conversion (1.8 ms of a 17.6 ms read of 13,000 rows). Integers up to
    2**53 are exact in float64; a row past that (a trade count beyond any
    market's) sends the read to :func:`_fetch_exact`.
    """
    if len(sources) >= _UNKNOWN_SOURCE:
        raise DatabaseError(f"{len(sources)} sources in one read: at most {_UNKNOWN_SOURCE - 1} are")
    sql, args = _fetch_sql(dialect, where, params, sources, packed=True, fingerprint=fingerprint)
    cur.execute(sql, args)
    width = 9 if fingerprint else 8
    table = np.fromiter(itertools.chain.from_iterable(cur), dtype=np.float64).reshape(-1, width)
    key, trades = table[:, 0], table[:, 7]
    if len(table) and max(float(np.abs(key).max()), float(np.abs(trades).max())) >= _EXACT:
        return _fetch_exact(cur, dialect, where, params, sources, fingerprint)
    packed = key.astype(np.int64)
    source = packed & _UNKNOWN_SOURCE
    source[source == _UNKNOWN_SOURCE] = -1
    cols: dict[str, np.ndarray[Any, Any]] = {
        name: np.ascontiguousarray(table[:, i]) for i, name in enumerate(_READ_FLOATS, start=1)
    }
    cols |= {"ts": packed >> _KEY_BITS, "trade_count": trades.astype(np.int64), "source": source}
    cols["flagged"] = (packed >> _SOURCE_BITS) & 1
    if fingerprint:
        cols["fetched_at"] = np.ascontiguousarray(table[:, 8])
    return cols


def _fetch_exact(
    cur: Any,
    dialect: str,
    where: str,
    params: list[Any],
    sources: Sequence[tuple[str, str, str]],
    fingerprint: bool,
) -> dict[str, np.ndarray[Any, Any]]:
    """:func:`_fetch` for rows whose integers float64 cannot hold: one record per row."""
    sql, args = _fetch_sql(dialect, where, params, sources, packed=False, fingerprint=fingerprint)
    cur.execute(sql, args)
    dtype = _READ_ROW_FINGERPRINT if fingerprint else _READ_ROW
    rows = np.fromiter(cur, dtype=dtype)
    return {name: np.ascontiguousarray(rows[name]) for name in dtype.names or ()}


def _fetch_sql(
    dialect: str,
    where: str,
    params: list[Any],
    sources: Sequence[tuple[str, str, str]],
    *,
    packed: bool,
    fingerprint: bool,
) -> tuple[str, list[Any]]:
    mark = "?" if dialect == "sqlite" else "%s"
    provider = _PROVIDER_ID.format(mark=mark)
    whens = " ".join(
        f"WHEN provider = {provider} AND layer = {mark} AND basis = {mark} THEN {i}"
        for i in range(len(sources))
    )
    vwap = f"coalesce(vwap, {_NO_VWAP[dialect]})"
    numbers = f"open, high, low, close, volume, {vwap}, coalesce(trade_count, -1)"
    if packed:
        flagged = f"CASE WHEN flag IS NULL THEN 0 ELSE {1 << _SOURCE_BITS} END"
        head = f"ts * {1 << _KEY_BITS} + {flagged} + CASE {whens} ELSE {_UNKNOWN_SOURCE} END, {numbers}"
    else:
        head = f"ts, {numbers}, CASE {whens} ELSE -1 END, CASE WHEN flag IS NULL THEN 0 ELSE 1 END"
    if fingerprint:
        head += ", fetched_at"
    sql = f"SELECT {head} FROM bars WHERE {where} ORDER BY ts"
    return sql, [x for p, la, b in sources for x in (p, LAYER_CODES[la], b)] + params


def _remember(
    memo: tuple[str, int, str],
    guess: Sequence[tuple[str, str, str]] | None,
    found: Sequence[tuple[str, str, str, float]],
) -> None:
    """Keep the sources a series has, as the next read's guess (see :data:`_SEEN`).

    Only while each (provider, layer) has one basis there, so the guess's
    rows never need their fetch times to pick the read's basis.
    """
    known = dict.fromkeys([*(guess or ()), *(x[:3] for x in found)])
    if len(known) > _SEEN_MAX_SOURCES or len({(p, la) for p, la, _ in known}) != len(known):
        _SEEN.pop(memo, None)
        return
    if len(_SEEN) >= _SEEN_MAX_SERIES:
        _SEEN.clear()
    _SEEN[memo] = tuple(known)


def _empty_rows(basis: Basis | None) -> Rows:
    empty_f = np.empty(0, dtype=np.float64)
    empty: dict[str, np.ndarray[Any, Any]] = {
        c: empty_f for c in ("open", "high", "low", "close", "volume", "vwap")
    }
    empty["ts"] = np.empty(0, dtype=np.int64)
    empty["trade_count"] = np.empty(0, dtype=np.int64)
    none = np.empty(0, dtype=object)
    return Rows(empty, none, none, Selection(np.zeros(0, dtype=np.bool_), basis, ()))


def _select(
    rows: dict[str, np.ndarray[Any, Any]],
    sources: Sequence[tuple[str, str, str, float]],
    calendar: TradingCalendar,
    by: Timeframe,
    start: int,
    end: int,
    precedence: Precedence,
    basis: Basis | None,
) -> Rows:
    """Keep one source per range (see :mod:`barfill.domain.sources`), then clip to [start, end)."""
    ts = rows["ts"]
    code = rows["source"]
    names = np.array([(p, la, b) for p, la, b, _ in sources], dtype=object).reshape(len(sources), 3)
    single = len(code) > 0 and int(code.min()) == int(code.max())
    if single and (basis is None or basis.value == sources[int(code[0])][2]):
        # One source, in the read's basis: every row is kept (no range labels needed).
        provider, layer, only = sources[int(code[0])][:3]
        selection = Selection(np.ones(len(ts), dtype=np.bool_), Basis(only), ((provider, layer),))
    else:
        fetched = np.array([f for *_, f in sources], dtype=np.float64)
        selection = select_sources(
            range_labels(calendar, by, ts),
            names[code, 0],
            names[code, 1],
            names[code, 2],
            precedence=precedence,
            basis=basis,
            # Each row stands for its source's newest fetch: the basis rule looks at no more.
            fetched_at=fetched[code],
        )
    keep = selection.keep & (ts >= start) & (ts < end)
    names_kept = ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count")
    if bool(keep.all()):
        cols = {name: rows[name] for name in names_kept}
    else:
        cols = {name: rows[name][keep] for name in names_kept}
        code = code[keep]
    out = Rows(cols, names[code, 0], names[code, 1], selection)
    providers = tuple(dict.fromkeys(p for p, _, _, _ in sources))
    out.provider_names = providers
    out.provider_codes = np.array([providers.index(p) for p, _, _, _ in sources], dtype=np.int64)[code]
    return out
