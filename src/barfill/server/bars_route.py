"""``GET /v1/bars/{symbol}``: the bar read, its ETag, and kept reads answered again or patched.

A read is validated and narrowed (:func:`_bar_query`), then kept in this
process's :class:`~barfill.server.read_cache.ReadCache`; after a commit it is
served as it stands or patched (:func:`_reuse`, :mod:`barfill.server.splice`)
rather than read again in full. :mod:`barfill.server.bars_out` encodes the
answer; :mod:`barfill.server.revalidate` answers a known 304 before FastAPI.
Its router carries the ``/v1`` prefix itself and is included in the app beside
:data:`barfill.server.v1.router`, not inside it: a route of a router nested in
another is matched with its own path only (``/bars/{symbol}``, FastAPI 0.165),
which is what the request metrics and logs would then label it.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from barfill.bootstrap import App
from barfill.domain.adjust import Adjust, parse_adjust
from barfill.domain.bars import Layer
from barfill.domain.symbols import validate_ticker
from barfill.errors import InvalidInput
from barfill.server import bars_out, splice
from barfill.server.deps import ERROR_RESPONSES
from barfill.server.params import MIN_TIME, AppDep, Read, Symbol, parse_query_time, parse_timeframe
from barfill.server.read_cache import BarReads, default_end, etag_matches, format_etag
from barfill.server.splice import KeptLayer, KeptRead
from barfill.store import http_reads, stamps
from barfill.store.actions import next_effective
from barfill.store.bar_reads import session_span
from barfill.store.symbols import symbol_id

router = APIRouter(prefix="/v1", tags=["v1"], responses=ERROR_RESPONSES)
_ARROW = "application/vnd.apache.arrow.stream"
_BARS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Columnar bars (JSON), or CSV / Parquet / Arrow IPC stream",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            _ARROW: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
}


def bars_format(accept: str) -> str:
    """The format of a bar read without ``format=``: Arrow when the client accepts it, else JSON."""
    return "arrow" if _ARROW in accept else "json"


def _bar_query(
    app: App,
    symbol: str,
    timeframe: str,
    start: str | None,
    end: str | None,
    layers: str,
    limit: int | None,
    default_end: int,
    adjust: str | None = None,
    include_flagged: bool = False,
    keep_columns: BarReads | None = None,
) -> KeptRead:
    """Validate a bar read, narrow it to the newest ``limit`` bars, and compute its ETag.

    Also returns the symbol's change counter (:mod:`barfill.store.stamps`), read
    before any of its data, so :func:`_reuse` can later tell the answer stands.

    ``default_end`` is the end when ``end`` is not given: just past the forming
    bar, on the bar grid (the same range, and ETag, all bar long). An adjusted
    read's ETag also covers the symbol's corporate actions: a new split or
    dividend changes the answer (and the tag) without any bar changing.

    With ``keep_columns`` (a read that will be answered with a body), every
    layer's columns are read too, in the same transaction, and kept there for
    :func:`~barfill.server.bars_out.json_stream`: one snapshot for the ETag and
    the values, one connection and one thread hop for a cold read.
    """
    # Read before any data, so a write landing meanwhile moves the version past the kept columns.
    version = None if keep_columns is None else keep_columns.version.current()
    stamp = time.monotonic()
    tf = parse_timeframe(timeframe)
    wanted_adjust = parse_adjust(adjust)
    try:
        wanted = tuple(dict.fromkeys(Layer(x.strip()) for x in layers.split(",") if x.strip()))
    except ValueError:
        raise InvalidInput("layers", "some of historical, intraday, forecast", layers) from None
    if not wanted:
        raise InvalidInput("layers", "at least one of historical, intraday, forecast", layers)
    lo, hi = parse_query_time(start, "start", app.calendar.tz), parse_query_time(end, "end", app.calendar.tz)
    ticker = validate_ticker(symbol)
    span = app.settings.api_max_range_bars * tf.seconds
    if hi is None:
        hi = default_end
    if lo is None:
        lo = max(MIN_TIME, hi - span) if limit is not None else max(MIN_TIME, hi - 365 * 86_400)
    if hi <= lo:
        raise InvalidInput("end", "a time after start", end)
    if hi - lo > span:
        raise InvalidInput(
            "start", f"a range of at most {app.settings.api_max_range_bars} {tf.value} bar lengths", start
        )
    names = [x.value for x in wanted]
    with app.db.read() as conn:  # one connection for the whole check
        found = symbol_id(conn, ticker)
        if found is None:
            raise HTTPException(404, f"Symbol {ticker} not found")
        sid = found
        seq = stamps.read(conn, sid)
        if limit is not None:
            lo = max(lo, http_reads.newest_start(conn, sid, tf, lo, hi, names, limit))
        q = bars_out.BarQuery(ticker, sid, tf, lo, hi, wanted, wanted_adjust, include_flagged)
        bars_fp = None
        if keep_columns is not None and version is not None:
            # The fingerprint from the rows read, not from a scan of its own.
            kept = [replace(bars_out.layer_columns(conn, q, layer), seq=seq) for layer in wanted]
            for layer, layer_kept in zip(wanted, kept, strict=True):
                keep_columns.columns.put(bars_out.columns_key(q, layer), layer_kept, version, stamp)
            bars_fp = splice.layers_fingerprint(kept)
        fp = http_reads.read_fingerprint(conn, sid, tf, lo, hi, names, adjust=wanted_adjust, bars=bars_fp)
        adjusted = wanted_adjust not in (None, Adjust.raw)
        pending = next_effective(conn, sid) if adjusted else None
        first = int(fp[0][3]) if fp[0][0] else None
        notes = http_reads.adjust_notes(conn, sid, wanted_adjust, first, app.precedence.historical)
        fp += tuple(notes)  # a dividend's close landing changes the answer and the tag
    return KeptRead(q, _etag(q, fp, seq), seq, fp, limit is not None, pending, tuple(notes))


def _etag(q: bars_out.BarQuery, fingerprint: tuple[Any, ...], seq: int) -> str:
    """A read's ETag: its query, what its data depends on, and its symbol's change counter (a flag
    moved from one bar to another leaves every count of the fingerprint as it was)."""
    names = [x.value for x in q.layers]
    shape = (
        q.symbol,
        q.timeframe.value,
        q.start,
        q.end,
        names,
        fingerprint,
        seq,
        q.adjust,
        q.include_flagged,
    )
    return '"' + hashlib.sha256(repr(shape).encode()).hexdigest()[:32] + '"'


def _reuse(app: App, reads: BarReads, key: Hashable) -> KeptRead | None:
    """A read kept under an older data version, brought up to date without reading it all again:
    served as it is if its symbol's change counter has not moved since (one point query instead
    of reading the bars again after every commit of another symbol: a busy store commits all the
    time), or if every change since touched what it does not show; else patched with just the
    sessions written (:mod:`barfill.server.splice`). None: read it in full. Blocking: call it
    from a worker thread.

    Its columns are renewed or patched with it when they were kept under the same version (same data).
    """
    kept = reads.cache.stale(key)
    if kept is None:
        return None
    was, value = kept
    version, stamp = reads.version.current(), time.monotonic()  # before the check, as compute does
    if version is None or _came(reads, value.pending):
        return None
    q, was_seq = value.query, value.seq
    patched: dict[Layer, KeptLayer] = {}  # the layers read again
    with app.db.read() as conn:
        seq = stamps.read(conn, q.symbol_id)
        if seq != value.seq and (q.adjust == Adjust.all_adjusted or _notes_moved(conn, q, value.notes)):
            return None  # it depends on bars outside its range (dividends' closes), or on a refresh
        if seq != value.seq:
            changes = stamps.changes(conn, q.symbol_id, value.seq, seq)
            widen = functools.partial(session_span, conn, q.symbol_id, q.timeframe)
            todo = None if changes is None else splice.plan(changes, value, widen)
            if todo is None:
                return None
            fp = value.fingerprint
            if todo.spans:
                held = _kept_layers(reads, q, was, value.seq)
                found = None if held is None else splice.respliced(conn, q, held, todo)
                if found is None:
                    return None
                patched = {layer: found[layer] for layer in todo.spans}
                fp = (splice.layers_fingerprint([found[layer] for layer in q.layers]), *fp[1:])
            value = value._replace(tag=_etag(q, fp, seq), seq=seq, fingerprint=fp)
    if not reads.cache.patched(key, was, value, version, stamp):
        return None
    for layer in q.layers:
        ckey = bars_out.columns_key(q, layer)
        entry = reads.columns.stale(ckey)
        if entry is not None and entry[0] == was:
            layer_kept = patched.get(layer, entry[1])
            # Read with the kept read, it now stands for the data at the new counter too.
            layer_kept = replace(layer_kept, seq=value.seq if layer_kept.seq == was_seq else None)
            reads.columns.patched(ckey, was, layer_kept, version, stamp)
    return value


def _notes_moved(conn: sa.Connection, q: bars_out.BarQuery, notes: tuple[tuple[str, str], ...]) -> bool:
    """Whether a kept (``split``) read's notes no longer hold: its symbol's actions were refreshed."""
    return bool(notes) and tuple(http_reads.adjust_notes(conn, q.symbol_id, q.adjust, None)) != notes


def _kept_layers(
    reads: BarReads, q: bars_out.BarQuery, was: tuple[int, int], seq: int
) -> dict[Layer, KeptLayer] | None:
    """Every layer of ``q`` kept under ``was`` from data read at counter ``seq`` (the kept read's
    version and counter: the same data), or None."""
    out = {}
    for layer in q.layers:
        held = reads.columns.stale(bars_out.columns_key(q, layer))
        if held is None or held[0] != was or held[1].seq != seq:
            return None
        out[layer] = held[1]
    return out


def _came(reads: BarReads, t: float | None) -> bool:
    """Whether time ``t`` (an announced action's start) has come on the database clock."""
    if t is None:
        return False
    now = reads.clock.now()
    return now is None or now >= t


def _reuse_or_compute(app: App, reads: BarReads, key: Hashable, make: Callable[[], KeptRead]) -> KeptRead:
    found = _reuse(app, reads, key) or reads.cache.compute(key, make)
    if found.pending is not None:  # kept until its next action takes effect, not longer
        reads.version.expire_at(found.pending)
    return found


@router.get("/bars/{symbol}", responses=_BARS_RESPONSES, dependencies=[Read])
async def get_bars(
    request: Request,
    symbol: Symbol,
    app: AppDep,
    timeframe: Annotated[str, Query(max_length=8, description="m1 m5 m15 m30 h1 h4 d1 w1")],
    start: Annotated[str | None, Query(max_length=40, description="Inclusive; ISO 8601 or Unix s")] = None,
    end: Annotated[str | None, Query(max_length=40, description="Exclusive; default: now")] = None,
    layers: Annotated[str, Query(max_length=60)] = "historical,intraday",
    limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="Only the newest N bars")] = None,
    format: Annotated[Literal["json", "csv", "parquet", "arrow"] | None, Query()] = None,
    adjust: Annotated[
        str | None,
        Query(
            max_length=8, description="raw, split or all: adjusted on read for the splits/dividends known now"
        ),
    ] = None,
    include_flagged: Annotated[
        bool, Query(description="Also bars flagged bad (a reverting spike, an empty bar in a busy session)")
    ] = False,
) -> Response:
    """Stored bars, never waiting for a provider. ``ETag`` + ``If-None-Match`` → 304 when unchanged.

    A read asked again while nothing was stored is answered from this
    process's :class:`~barfill.server.read_cache.ReadCache` (no database
    access before the 304).
    """
    reads: BarReads = request.app.state.barfill_reads
    tf = parse_timeframe(timeframe)
    now = reads.clock.now()
    if now is None:
        now = await run_in_threadpool(reads.clock.measure)
    until = default_end(now, tf)
    key = reads.key(symbol, timeframe, start, end, layers, limit, until, adjust, include_flagged)
    fmt = format or bars_format(request.headers.get("accept", ""))
    if_none_match = request.headers.get("if-none-match", "")
    found = reads.cache.get(key)
    if found is None:
        # A read without If-None-Match is answered with a body: read its JSON columns along.
        keep = reads if fmt == "json" and not if_none_match else None
        args = (symbol, timeframe, start, end, layers, limit, until, adjust, include_flagged, keep)
        make = functools.partial(_bar_query, app, *args)
        found = await run_in_threadpool(_reuse_or_compute, app, reads, key, make)
    q, etag = found.query, format_etag(found.tag, fmt)
    headers = {"ETag": etag, "Cache-Control": "no-cache", **dict(found.notes)}
    if etag_matches(etag, if_none_match):
        return Response(status_code=304, headers=headers)
    if fmt == "csv":
        return StreamingResponse(bars_out.csv_stream(app, q), media_type="text/csv", headers=headers)
    if fmt in ("parquet", "arrow"):
        media = "application/vnd.apache.parquet" if fmt == "parquet" else _ARROW
        stream = bars_out.arrow_stream(app, q, parquet=fmt == "parquet")
        return StreamingResponse(stream, media_type=media, headers=headers)
    stream = bars_out.json_stream(app, q, reads=reads)
    return StreamingResponse(stream, media_type="application/json", headers=headers)
