"""Bar upserts: the hot path of the store (reads are in :mod:`barfill.store.bar_reads`).

Writes are bulk and idempotent, keyed by (symbol, timeframe, ts, provider,
layer). They run *inside* the caller's transaction (the queue completes a
slice by writing its bars, its coverage and its status together) and never
commit. The two drivers are fed the way each is fastest:

* PostgreSQL: when nothing is stored yet in the batch's range (the usual
  case) the batch is encoded with numpy as binary ``COPY`` straight into
  ``bars`` under a savepoint, NULL vwap/trade_count included, and sent in
  pieces that the server works on while the next is encoded. Otherwise it
  is copied into a temporary table (``ON COMMIT DROP``) and merged with one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``: ON CONFLICT's speculative
  insertion is measured to cost 20-40% of the rate, and ``MERGE`` (hash join
  over the symbol's stored rows) was measured slower still.
* SQLite: ``INSERT ... SELECT ... FROM (VALUES (...), ...) ON CONFLICT DO
  UPDATE``, up to 2,048 rows per statement, their values bound from one flat
  list: the merge into the primary-key B-tree runs inside SQLite (an
  ``executemany`` of the upsert itself was measured 2.5x slower), and no
  row passes through a temporary table first (staging the rows with an
  ``executemany`` and merging them with one statement cost 25% more CPU).

A conflicting row is overwritten only by a fetch at least as recent
(``fetched_at``), so a late, older write can never replace newer data;
rerunning the same write leaves every row as it was.
"""

from __future__ import annotations

import datetime as dt
import functools
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.intervals import interval
from barfill.domain.timeframes import Timeframe
from barfill.errors import DatabaseError, InvalidInput
from barfill.store import stamps
from barfill.store.provider_ids import provider_id
from barfill.store.schema import LAYER_CODES, TIMEFRAME_CODES, bars

_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "trade_count")
# A rewritten bar loses its bad-bar flag: the committing transaction recomputes it (store.flags).
_UPDATE_SET = (
    ", ".join(f"{c} = excluded.{c}" for c in (*_VALUE_COLUMNS, "fetched_at", "basis")) + ", flag = NULL"
)
_ON_CONFLICT = (
    "ON CONFLICT (symbol_id, timeframe, ts, provider, layer) DO UPDATE SET "
    f"{_UPDATE_SET} WHERE excluded.fetched_at >= bars.fetched_at"
)
_INSERT_COLUMNS = (
    "symbol_id, timeframe, ts, provider, layer, open, high, low, close, volume, vwap, trade_count, "
    "fetched_at, basis"
)
# PostgreSQL stages a batch that must be merged in a temporary table, then one statement merges it.
# ``WHERE true`` lets SQLite parse ``INSERT ... SELECT ... ON CONFLICT`` unambiguously.
_STAGE = "_barfill_bars_in"
_STAGE_COLUMNS = "ts, open, high, low, close, volume, vwap, trade_count"
_SELECT_STAGE = (
    "SELECT {p}, {p}, ts, {p}, {p}, open, high, low, close, volume, {vwap}, NULLIF(trade_count, -1), "
    f"{{p}}, {{p}} FROM {_STAGE} WHERE true"
)
_PG_INSERT = f"INSERT INTO bars ({_INSERT_COLUMNS}) " + _SELECT_STAGE.format(
    p="%s", vwap="NULLIF(vwap, 'NaN'::float8)"
)
_PG_MERGE = f"{_PG_INSERT} {_ON_CONFLICT}"
_PG_STAGE_DDL = (
    f"CREATE TEMPORARY TABLE {_STAGE} (ts int8, open float8, high float8, low float8, "
    "close float8, volume float8, vwap float8, trade_count int8) ON COMMIT DROP"
)
_PG_PROBE = (
    "SELECT EXISTS (SELECT 1 FROM bars WHERE symbol_id = %s AND timeframe = %s AND ts >= %s AND ts <= %s "
    "AND provider = %s AND layer = %s)"
)
# Below this size the probe and savepoint of the fast path cost more than ON CONFLICT saves.
_PG_FAST_PATH_MIN_ROWS = 2_000
# SQLite: rows per upsert statement, at most. Statements hold a power of two of rows, so a
# connection compiles (and caches) a dozen of them, whatever the batch sizes.
_SQLITE_ROWS_MAX = 2048

# One binary COPY tuple: field count, then (length, value) for each of the 8 fixed-width columns.
_COPY_FIELDS = ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count")
_COPY_TUPLE = np.dtype(
    [("n", ">i2")]
    + [
        item
        for name in _COPY_FIELDS
        for item in ((f"len_{name}", ">i4"), (name, ">i8" if name in ("ts", "trade_count") else ">f8"))
    ]
)
_ROW_FIELDS = tuple(c.strip() for c in _INSERT_COLUMNS.split(","))
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_COPY_PIECE_ROWS = 16_384  # ~1.8 MB of bars rows (see encode_copy_rows)


def unix_seconds(value: object, field: str) -> int:
    """Unix seconds (UTC) from an int or a timezone-aware datetime.

    Raises:
        InvalidInput: for a naive datetime (its zone would be a guess), a bool, or any other type.
    """
    if isinstance(value, bool):
        raise InvalidInput(field, "Unix seconds (int) or a timezone-aware datetime", value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInput(field, "a timezone-aware datetime (naive times are ambiguous)", value)
        return int(value.timestamp())
    raise InvalidInput(field, "Unix seconds (int) or a timezone-aware datetime", value)


def upsert_bars(
    conn: Connection,
    symbol_id: int,
    batch: BarBatch,
    *,
    layer: Layer,
    fetched_at: float,
) -> int:
    """Insert or update ``batch``'s bars inside the caller's transaction (no commit).

    Every bar is stored with ``batch.basis`` (its provider's adjustment);
    an update of a stored bar replaces its basis too.

    Args:
        symbol_id: the symbol the bars belong to (``batch.symbol`` is not looked up).
        layer: the layer every bar of the batch is written to.
        fetched_at: when the bars were fetched, Unix seconds on the database clock.
            A stored bar is replaced only by one with ``fetched_at`` >= its own.

    Returns:
        Rows inserted or updated. A batch with repeated ``ts`` keeps the last one.

    Raises:
        DatabaseError: the database refused the rows (e.g. an unknown ``symbol_id``);
            the caller's transaction must be rolled back.
    """
    layer = Layer(layer)
    batch = _unique_ts(batch)
    if len(batch) == 0:
        return 0
    # _unique_ts leaves ts ascending: readers re-read just these sessions (store.stamps).
    change = stamps.upserted(batch.timeframe.value, layer.value, int(batch.ts[0]), int(batch.ts[-1]))
    stamps.touch(conn, symbol_id, change)
    dbapi = conn.connection.driver_connection
    sqlite = conn.dialect.name == "sqlite"
    try:
        key = _Key(symbol_id, provider_id(dbapi, batch.provider, sqlite=sqlite), layer)
        if not sqlite:
            return _upsert_postgres(dbapi, key, batch, fetched_at)
        return _upsert_sqlite(dbapi, key, batch, fetched_at)
    except driver_errors() as e:
        # Raw driver calls bypass SQLAlchemy's wrapping; speak barfill's language here.
        raise DatabaseError(f"writing {len(batch)} {batch.symbol} bars failed: {e}") from e


class _Key(NamedTuple):
    """The key columns a batch's rows share, as stored: ``provider`` is its ``providers.id``."""

    symbol_id: int
    provider: int
    layer: Layer


def driver_errors() -> tuple[type[Exception], ...]:
    """The DBAPI errors raw driver calls can raise: psycopg's only once it is loaded.

    Not imported here: a SQLite process (a worker) never needs psycopg (~9 MB resident).
    """
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def _unique_ts(batch: BarBatch) -> BarBatch:
    if len(batch) < 2 or bool(np.all(batch.ts[1:] > batch.ts[:-1])):
        return batch
    order = np.argsort(batch.ts, kind="stable")
    ts = batch.ts[order]
    last_of_run = np.r_[ts[1:] != ts[:-1], True]
    return batch.take(order[last_of_run])


def encode_copy_binary(batch: BarBatch) -> bytes:
    """The batch's 8 value columns as a PostgreSQL binary ``COPY`` stream.

    Every column is fixed-width and non-NULL here (vwap NaN and trade_count -1
    stand for "none"), so the whole stream is one numpy structured array.
    """
    rows = np.empty(len(batch), dtype=_COPY_TUPLE)
    rows["n"] = len(_COPY_FIELDS)
    for name in _COPY_FIELDS:
        rows[f"len_{name}"] = 8
        rows[name] = getattr(batch, name)
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def encode_copy_rows(key: _Key, batch: BarBatch, fetched_at: float) -> Iterator[bytes]:
    """Whole ``bars`` rows as a binary ``COPY`` stream, in pieces of at most ``_COPY_PIECE_ROWS`` rows.

    The header comes first and the trailer last, each a piece of its own.
    Written piece by piece, the server parses and indexes one piece while the
    next is encoded, and each piece's buffers stay small: one write of a
    50,000-row batch (~5.5 MB) was measured 1.1-1.25x slower (same-run pairs).
    """
    yield _COPY_HEADER
    for start in range(0, len(batch), _COPY_PIECE_ROWS):
        yield _encode_rows(key, batch.take(slice(start, start + _COPY_PIECE_ROWS)), fetched_at)
    yield _COPY_TRAILER


def _encode_rows(key: _Key, batch: BarBatch, fetched_at: float) -> bytes:
    """The rows of a binary ``COPY`` stream (no header, no trailer); a NaN vwap or a -1 trade_count is NULL.

    The key codes (timeframe, provider, layer: ``schema.TIMEFRAME_CODES``, the
    provider's id, ``LAYER_CODES``) and the basis text are constant within a
    batch, so each row is fixed-width and the stream is one numpy structured
    array. A NULL field is length -1 with no value bytes: those 8 bytes are
    cut out of the rows with one byte mask (only when there is a NULL).
    """
    texts = {"basis": batch.basis.value.encode()}
    codes = {
        "timeframe": TIMEFRAME_CODES[batch.timeframe.value],
        "provider": key.provider,
        "layer": LAYER_CODES[key.layer.value],
    }
    kinds = {"symbol_id": ">i4", "ts": ">i8", "trade_count": ">i8"}
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for name in _ROW_FIELDS:
        kind = f"S{len(texts[name])}" if name in texts else ">i2" if name in codes else kinds.get(name, ">f8")
        fields += [(f"len_{name}", ">i4"), (name, kind)]
    # Every constant goes into one row, repeated: cheaper than filling 20 strided fields.
    template = np.zeros(1, dtype=np.dtype(fields))
    template["n"] = len(_ROW_FIELDS)
    layout = template.dtype.fields
    assert layout is not None  # a structured dtype always has fields
    for name in _ROW_FIELDS:
        template[f"len_{name}"] = layout[name][0].itemsize
    template["symbol_id"] = key.symbol_id
    for name, value in {**texts, **codes}.items():
        template[name] = value
    template["fetched_at"] = fetched_at
    rows = np.repeat(template, len(batch))
    for name in _COPY_FIELDS:
        rows[name] = getattr(batch, name)
    nulls = {"vwap": np.isnan(batch.vwap), "trade_count": batch.trade_count == -1}
    if not any(mask.any() for mask in nulls.values()):
        return rows.tobytes()
    keep = np.ones((len(rows), rows.dtype.itemsize), dtype=bool)
    for name, mask in nulls.items():
        rows[f"len_{name}"][mask] = -1
        offset = layout[name][1]
        keep[mask, offset : offset + 8] = False
    return rows.view(np.uint8).reshape(keep.shape)[keep].tobytes()


def _pg_copy_direct(cur: Any, key: _Key, batch: BarBatch, fetched_at: float) -> bool:
    """COPY straight into ``bars`` when the range is fresh; False if it must be merged instead.

    A concurrent writer of the same rows makes the COPY fail on the primary key;
    it is then undone to the savepoint and the caller merges the careful way.
    """
    if len(batch) < _PG_FAST_PATH_MIN_ROWS or _pg_any_stored(cur, key, batch):
        return False
    cur.execute("SAVEPOINT barfill_bars")
    try:
        with cur.copy(f"COPY bars ({_INSERT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            for piece in encode_copy_rows(key, batch, fetched_at):
                copy.write(piece)
    except sys.modules["psycopg"].errors.UniqueViolation:  # a psycopg cursor: the driver is loaded
        cur.execute("ROLLBACK TO SAVEPOINT barfill_bars")
        return False
    cur.execute("RELEASE SAVEPOINT barfill_bars")
    return True


def _constants(key: _Key, batch: BarBatch, fetched_at: float) -> tuple[Any, ...]:
    """The parameters of :data:`_SELECT_STAGE`: the columns every row of the batch shares."""
    tf, code = TIMEFRAME_CODES[batch.timeframe.value], LAYER_CODES[key.layer.value]
    return (key.symbol_id, tf, key.provider, code, fetched_at, batch.basis.value)


def _upsert_postgres(dbapi: Any, key: _Key, batch: BarBatch, fetched_at: float) -> int:
    params = _constants(key, batch, fetched_at)
    with dbapi.cursor() as cur:
        if _pg_copy_direct(cur, key, batch, fetched_at):
            return len(batch)
        cur.execute(_PG_STAGE_DDL)
        with cur.copy(f"COPY {_STAGE} ({_STAGE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(encode_copy_binary(batch))
        cur.execute(_PG_MERGE, params)
        written = int(cur.rowcount)
        # Dropped now rather than at commit: a transaction may upsert several batches.
        cur.execute(f"DROP TABLE {_STAGE}")
    return written


def _pg_any_stored(cur: Any, key: _Key, batch: BarBatch) -> bool:
    tf, code = TIMEFRAME_CODES[batch.timeframe.value], LAYER_CODES[key.layer.value]
    cur.execute(_PG_PROBE, (key.symbol_id, tf, int(batch.ts[0]), int(batch.ts[-1]), key.provider, code))
    return bool(cur.fetchone()[0])


def _upsert_sqlite(dbapi: Any, key: _Key, batch: BarBatch, fetched_at: float) -> int:
    constants = list(_constants(key, batch, fetched_at))
    # The driver's limit on bound values (999 before SQLite 3.32, 32,766 since).
    room = (dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - len(constants)) // len(_COPY_FIELDS)
    most = min(_SQLITE_ROWS_MAX, 1 << (room.bit_length() - 1))
    columns = [getattr(batch, name) for name in _COPY_FIELDS]
    cur = dbapi.cursor()
    try:
        written, done = 0, 0
        while done < len(batch):
            n = min(most, 1 << ((len(batch) - done).bit_length() - 1))
            values: list[Any] = [None] * (n * len(columns))
            for i, column in enumerate(columns):  # row-major: ts, open, ..., trade_count of each row
                values[i :: len(columns)] = column[done : done + n].tolist()
            cur.execute(_sqlite_upsert(n), constants + values)
            written += int(cur.rowcount)
            done += n
        return written
    finally:
        cur.close()


@functools.lru_cache(maxsize=32)
def _sqlite_upsert(rows: int) -> str:
    """The upsert of ``rows`` rows: the batch's constants, then each row's 8 values.

    SQLite stores a NaN vwap as NULL by itself; a trade count of -1 becomes NULL here.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO bars ({_INSERT_COLUMNS}) SELECT ?, ?, column1, ?, ?, column2, column3, column4, "
        "column5, column6, column7, NULLIF(column8, -1), ?, ? "
        f"FROM (VALUES {values}) WHERE true {_ON_CONFLICT}"
    )


def nothing_stored(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    spans: Sequence[tuple[int, int]],
    *,
    layers: Sequence[Layer],
) -> bool:
    """Whether no bar of ``layers`` lies in ``spans`` (one probe of the key over what covers them all).

    Asked before an upsert into an empty range, it spares :func:`only_written`'s
    count of every row afterwards: what the upsert then writes is all there is.
    The probe looks from the first span's start to the last one's end, gaps
    between spans included: a bar there answers False, which is only cautious.
    """
    if not spans:
        return True
    probe = sa.select(sa.literal(1)).where(
        bars.c.symbol_id == symbol_id,
        bars.c.timeframe == timeframe.value,
        bars.c.ts >= min(lo for lo, _ in spans),
        bars.c.ts < max(hi for _, hi in spans),
        bars.c.layer.in_([Layer(x).value for x in layers]),
    )
    return not conn.execute(sa.select(sa.exists(probe))).scalar_one()


def only_written(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    start: int,
    end: int,
    *,
    layers: Sequence[Layer],
    provider: str,
    layer: Layer,
    fetched_at: float,
) -> int | None:
    """How many rows of ``layers`` lie in ``[start, end)``, if every one was written by one upsert.

    That upsert is recognised by its ``provider``, ``layer`` and ``fetched_at``
    (each row it wrote carries them; a row it did not replace, being newer,
    does not). None if any row in the range came from elsewhere. With the
    count equal to the rows that upsert sent for the range, a read of the
    range returns exactly those rows: derivations use them without reading
    them back.
    """
    mine = sa.and_(
        bars.c.provider == provider, bars.c.layer == Layer(layer).value, bars.c.fetched_at == fetched_at
    )
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((mine, 1), else_=0)), 0)).where(
            bars.c.symbol_id == symbol_id,
            bars.c.timeframe == timeframe.value,
            bars.c.ts >= start,
            bars.c.ts < end,
            bars.c.layer.in_([Layer(x).value for x in layers]),
        )
    ).one()
    total, written = int(row[0]), int(row[1])
    return total if total == written else None


def parse_layers(layers: Sequence[Layer | str]) -> list[str]:
    """The layers' names, each checked: a clear error names the field for a wrong one."""
    try:
        wanted = [Layer(layer).value for layer in layers]
    except ValueError as e:
        raise InvalidInput("layers", "some of historical, intraday, forecast", list(layers)) from e
    if not wanted:
        raise InvalidInput("layers", "at least one of historical, intraday, forecast", list(layers))
    return wanted


def count_bars(
    conn: Connection, symbol_id: int | None = None, timeframe: Timeframe | str | None = None
) -> int:
    """Stored rows (every layer and provider), optionally for one symbol and/or timeframe."""
    query = sa.select(sa.func.count()).select_from(bars)
    if symbol_id is not None:
        query = query.where(bars.c.symbol_id == symbol_id)
    if timeframe is not None:
        query = query.where(bars.c.timeframe == Timeframe.parse(timeframe).value)
    return int(conn.execute(query).scalar_one())


def delete_bars(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe | str,
    start: object,
    end: object,
    *,
    layer: Layer | str,
) -> int:
    """Delete one layer's bars with ``start <= ts < end``, every provider. Returns rows deleted.

    Used to drop ``intraday`` bars once the day's ``historical`` ones are stored.
    """
    tf = Timeframe.parse(timeframe)
    span = interval(unix_seconds(start, "start"), unix_seconds(end, "end"))
    (layer_value,) = parse_layers([layer])
    stamps.touch(conn, symbol_id)
    result = conn.execute(
        sa.delete(bars).where(
            bars.c.symbol_id == symbol_id,
            bars.c.timeframe == tf.value,
            bars.c.layer == layer_value,
            bars.c.ts >= span.start,
            bars.c.ts < span.end,
        )
    )
    return int(result.rowcount)
