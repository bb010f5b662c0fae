"""Bars over HTTP: columnar JSON, CSV, Parquet and Arrow IPC, streamed.

Values always come from :func:`barfill.store.bar_reads.read_bars` (which picks one
source per range); this module only cuts the range into chunks and encodes.
The range is read chunk by chunk (``CHUNK_BARS`` bar lengths each), so the
database driver never materialises two years of m1 as Python objects at
once. CSV, Parquet and Arrow are written and sent chunk by chunk; columnar
JSON needs every value of ``t`` before the first of ``o``, so it keeps the
compact numpy columns and streams their text in pieces.

Times in every format are bar-open Unix seconds, UTC.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from barfill.bootstrap import App
from barfill.domain.adjust import Adjust
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.server.read_cache import BarReads
from barfill.server.splice import KeptLayer, scan_layer
from barfill.store.bar_reads import read_bars

CHUNK_BARS = 100_000
_TEXT_PIECE = 50_000
_SEND_BYTES = 1 << 20


@dataclass(frozen=True)
class BarQuery:
    """A validated bar read: [start, end) in Unix seconds, the layers asked for, the adjustment."""

    symbol: str
    symbol_id: int
    timeframe: Timeframe
    start: int
    end: int
    layers: tuple[Layer, ...]
    adjust: Adjust | None = None  # splits/dividends applied on read (barfill.domain.adjust)
    include_flagged: bool = False  # bad bars (domain.badbars) too


def _chunks(q: BarQuery) -> list[tuple[int, int]]:
    width = CHUNK_BARS * q.timeframe.seconds
    return [(lo, min(lo + width, q.end)) for lo in range(q.start, q.end, width)]


def _read(app: App, q: BarQuery, lo: int, hi: int, layers: Sequence[Layer]) -> BarBatch:
    with app.db.read() as conn:
        return _read_in(conn, q, lo, hi, layers)


def _read_in(conn: Connection, q: BarQuery, lo: int, hi: int, layers: Sequence[Layer]) -> BarBatch:
    return read_bars(
        conn,
        q.symbol_id,
        q.timeframe,
        lo,
        hi,
        layers=list(layers),
        adjust=q.adjust,
        include_flagged=q.include_flagged,
    )


def columns_key(q: BarQuery, layer: Layer) -> Hashable:
    """The key of one layer's columns in :attr:`BarReads.columns <barfill.server.read_cache.BarReads>`."""
    return ("columns", q.symbol_id, q.timeframe, q.start, q.end, layer, q.adjust, q.include_flagged)


def layer_columns(conn: Connection, q: BarQuery, layer: Layer) -> KeptLayer:
    """One layer's bars over the whole range, read chunk by chunk in ``conn``'s transaction, with
    what patching them later needs (:mod:`barfill.server.splice`)."""
    scans = [scan_layer(conn, q, layer, lo, hi) for lo, hi in _chunks(q)]
    return KeptLayer.of(scans)


async def read_layer(app: App, q: BarQuery, layer: Layer, *, reads: BarReads | None = None) -> KeptLayer:
    """One layer's bars over the whole range (read in chunks).

    With ``reads``, a layer read while the data version stood still is
    served again from memory (never modified after this: a patch makes a new one).
    """
    if reads is None:
        return await run_in_threadpool(_read_layer, app, q, layer)
    key = columns_key(q, layer)
    found = reads.columns.get(key)
    if found is None:
        version, stamp = reads.version.current(), time.monotonic()
        found = await run_in_threadpool(_read_layer, app, q, layer)
        reads.columns.put(key, found, version, stamp)
    return found


def _read_layer(app: App, q: BarQuery, layer: Layer) -> KeptLayer:
    with app.db.read() as conn:  # one snapshot for every chunk
        return layer_columns(conn, q, layer)


async def json_stream(app: App, q: BarQuery, *, reads: BarReads | None = None) -> AsyncIterator[bytes]:
    """``{symbol, timeframe, start, end, layers: {<layer>: {provider, count, t, o, h, l, c, v, vw, n}}}``.

    ``vw`` (vwap) is null and ``n`` (trade count) is -1 where unknown. An
    intraday bar at a time that also has a historical bar is left out: the
    final bar wins. The text goes out in pieces of about ``_SEND_BYTES``: each
    piece sent costs a pass through every middleware and the event loop.
    """
    pending: list[bytes] = []
    size = 0
    async for piece in _json_pieces(app, q, reads):
        pending.append(piece)
        size += len(piece)
        if size >= _SEND_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


async def _json_pieces(app: App, q: BarQuery, reads: BarReads | None) -> AsyncIterator[bytes]:
    head = {"symbol": q.symbol, "timeframe": q.timeframe.value, "start": q.start, "end": q.end}
    yield orjson.dumps(head)[:-1] + b',"layers":{'
    seen_final: np.ndarray[Any, Any] | None = None
    for i, layer in enumerate(q.layers):
        kept = await read_layer(app, q, layer, reads=reads)
        cols, provider = kept.cols, kept.provider
        if layer == Layer.historical:
            seen_final = cols["t"]
        elif layer == Layer.intraday and seen_final is not None and len(seen_final):
            keep = ~np.isin(cols["t"], seen_final)
            cols = {k: v[keep] for k, v in cols.items()}
        n = len(cols["t"])
        prefix = b"," if i else b""
        yield (
            prefix + orjson.dumps(layer.value) + b":" + orjson.dumps({"provider": provider, "count": n})[:-1]
        )
        for key, values in cols.items():
            yield b"," + orjson.dumps(key) + b":["
            for j in range(0, n, _TEXT_PIECE):
                text = orjson.dumps(values[j : j + _TEXT_PIECE], option=orjson.OPT_SERIALIZE_NUMPY)
                yield (b"," if j else b"") + text[1:-1]
            yield b"]"
        yield b"}"
    yield b"}}"


def _table(batch: BarBatch) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "ts": pa.array(batch.ts, pa.int64()),
            "open": batch.open,
            "high": batch.high,
            "low": batch.low,
            "close": batch.close,
            "volume": batch.volume,
            "vwap": pa.array(batch.vwap, pa.float64(), from_pandas=True),
            "trade_count": pa.array(batch.trade_count, pa.int64(), mask=batch.trade_count < 0),
        }
    )


async def csv_stream(app: App, q: BarQuery) -> AsyncIterator[bytes]:
    """``ts,open,high,low,close,volume,vwap,trade_count`` rows, one per bar time (layers merged)."""
    yield b"ts,open,high,low,close,volume,vwap,trade_count\n"
    for lo, hi in _chunks(q):
        b = await run_in_threadpool(_read, app, q, lo, hi, q.layers)
        if len(b) == 0:
            continue
        out = io.StringIO()
        vwap = ["" if np.isnan(x) else repr(x) for x in b.vwap.tolist()]
        trades = ["" if x < 0 else str(x) for x in b.trade_count.tolist()]
        for row in zip(
            b.ts.tolist(),
            b.open.tolist(),
            b.high.tolist(),
            b.low.tolist(),
            b.close.tolist(),
            b.volume.tolist(),
            vwap,
            trades,
            strict=True,
        ):
            out.write(",".join(map(str, row)))
            out.write("\n")
        yield out.getvalue().encode()


class _Spout(io.RawIOBase):
    """A write-only file that hands its bytes out as they come (position kept for Parquet's footer)."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.pending.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        out, self.pending = b"".join(self.pending), []
        return out


async def arrow_stream(app: App, q: BarQuery, *, parquet: bool) -> AsyncIterator[bytes]:
    """Arrow IPC stream or Parquet, one record batch / row group per chunk (layers merged)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spout = _Spout()
    sink = pa.PythonFile(spout, mode="w")
    f64 = np.empty(0, dtype=np.float64)
    empty = _table(BarBatch(q.symbol, q.timeframe, "", np.empty(0, dtype=np.int64), f64, f64, f64, f64, f64))
    writer: Any = pq.ParquetWriter(sink, empty.schema) if parquet else pa.ipc.new_stream(sink, empty.schema)
    wrote = False
    for lo, hi in _chunks(q):
        b = await run_in_threadpool(_read, app, q, lo, hi, q.layers)
        if len(b) == 0:
            continue
        writer.write_table(_table(b))
        wrote = True
        yield spout.take()
    if not wrote and parquet:
        writer.write_table(empty)
    writer.close()
    yield spout.take()
