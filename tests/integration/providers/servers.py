"""Local stand-ins for the providers: one threaded HTTP server on 127.0.0.1 per test.

:class:`Truth` makes deterministic bars for any (symbol, timeframe, window) from
the trading calendar, so a test can ask for any day (DST, half days) and compare
what an adapter returns with what it should. Each ``*Wire`` class speaks one
provider's documented format from that truth — its stamps, its pagination,
its empty answers — and :class:`FakeServer` serves it over a real socket with
injectable faults (status codes, Retry-After, delays, truncated JSON, edited
answers such as a ``"NaN"`` field or a bar with high below low).
"""

from __future__ import annotations

import abc
import base64
import gc
import json
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import numpy as np

from barfill.domain.bars import I64, BarBatch
from barfill.domain.calendar import TradingCalendar
from barfill.domain.timeframes import Timeframe

NY = ZoneInfo("America/New_York")
DAY = 86_400


def ny(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> int:
    """Unix seconds of a New York wall-clock time."""
    return int(datetime(y, m, d, hh, mm, tzinfo=NY).timestamp())


def iso_z(ts: int) -> str:
    return str(np.datetime64(int(ts), "s")) + "Z"


# -- ground truth -------------------------------------------------------------


class Truth:
    """Deterministic bars: values are a pure function of (symbol, timeframe, ts).

    About one intraday bar in 23 has no trades (no bar). Symbols in ``empty`` have no
    bars at all. ``corrupt`` holds (symbol, timeframe, ts) whose bar is made
    invalid (high below low) to check adapters pass bad data on to validation.
    """

    def __init__(self, calendar: TradingCalendar, *, empty: frozenset[str] = frozenset({"EMPTY"})) -> None:
        self.calendar = calendar
        self.empty = empty
        self.corrupt: set[tuple[str, Timeframe, int]] = set()
        # Corporate actions, as paid: (ex date, shares before, shares after) and (ex date, cash).
        self.splits: dict[str, list[tuple[date, float, float]]] = {
            "SPLT": [(date(2024, 6, 10), 1, 4)],
            "RVRS": [(date(2023, 3, 1), 10, 1)],
        }
        self.dividends: dict[str, list[tuple[date, float]]] = {
            "SPLT": [
                (date(2024, 2, 15), 0.88),
                (date(2024, 5, 15), 0.88),
                (date(2024, 8, 15), 0.22),
                (date(2024, 11, 15), 0.22),
            ],
        }

    def actions_in(
        self, symbol: str, lo: date, hi: date
    ) -> tuple[list[tuple[date, float, float]], list[tuple[date, float]]]:
        """The symbol's splits and dividends with ``lo <= ex date <= hi``."""
        splits = [x for x in self.splits.get(symbol, []) if lo <= x[0] <= hi]
        return splits, [x for x in self.dividends.get(symbol, []) if lo <= x[0] <= hi]

    def labels(self, symbol: str, tf: Timeframe, start: int, end: int, *, extended: bool) -> I64:
        if symbol in self.empty:
            return np.empty(0, dtype=np.int64)
        ts: I64 = self.calendar.bar_opens(tf, start, end, extended=extended)
        ts = ts[(ts >= start) & (ts < end)]
        if not tf.intraday:
            return ts
        seed = zlib.crc32(f"{symbol}:{tf.value}".encode())
        traded = ((ts // 60) * 7 + seed) % 23 != 0
        return np.asarray(ts[traded], dtype=np.int64)

    def bars(self, symbol: str, tf: Timeframe, start: int, end: int, *, extended: bool = False) -> BarBatch:
        ts = self.labels(symbol, tf, start, end, extended=extended)
        seed = zlib.crc32(f"{symbol}:{tf.value}".encode())
        base = 20.0 + seed % 200
        x = ts / 900.0 + seed % 1000
        o = np.round(base + 5 * np.sin(x), 2)
        c = np.round(base + 5 * np.sin(x + 0.7), 2)
        h = np.round(np.maximum(o, c) + 0.05 + (ts % 7) * 0.01, 2).astype(np.float64)
        lo = np.round(np.minimum(o, c) - 0.05 - (ts % 5) * 0.01, 2).astype(np.float64)
        v = (100 + ((ts // 60 + seed) % 997) * 10).astype(np.float64)
        vw = np.round((h + lo + c) / 3, 4)
        n = (1 + (ts // 60 + seed) % 50).astype(np.int64)
        for s, t, bad_ts in self.corrupt:
            if s == symbol and t == tf:
                h[ts == bad_ts] = lo[ts == bad_ts] - 1
        return BarBatch(symbol, tf, "truth", ts, o, h, lo, c, v, vw, n)


def rows(batch: BarBatch) -> Iterator[tuple[int, float, float, float, float, float, float, int]]:
    for i in range(len(batch)):
        yield (
            int(batch.ts[i]),
            float(batch.open[i]),
            float(batch.high[i]),
            float(batch.low[i]),
            float(batch.close[i]),
            float(batch.volume[i]),
            float(batch.vwap[i]),
            int(batch.trade_count[i]),
        )


# -- faults and the server ----------------------------------------------------


@dataclass
class Fault:
    """What to do instead of (or to) the next matching answer."""

    kind: str  # "status" | "delay" | "truncate" | "raw" | "mangle"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    after: int = 0  # let this many requests through first
    # kind "mangle": edits the true answer's JSON body in place (a NaN field, a bad bar...)
    edit: Callable[[Any], None] | None = None


@dataclass
class Answer:
    status: int
    body: Any  # JSON-able, or bytes for raw
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    url: str


class Wire(abc.ABC):
    """One provider's wire format. ``answer`` maps a request to a response."""

    def __init__(self, truth: Truth) -> None:
        self.truth = truth
        self.page_size = 2_000
        self.actions_page_size = 2  # small: pagination of corporate actions is exercised
        self.origin = ""  # set by the server once it has a port

    @abc.abstractmethod
    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        """The response the provider would give to this request."""


def most_in_any_window(times: Iterable[float], period_s: float) -> int:
    """Most of ``times`` inside any window ``(t - period_s, t]``: what a strict limit judges."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(ordered):
        while ordered[j] <= t - period_s:
            j += 1
        best = max(best, i - j + 1)
    return best


@contextmanager
def steady_gc() -> Iterator[None]:
    """No long garbage collection in this process while a server that judges arrivals serves.

    A server stamps each request's arrival when its handler runs, in the test's
    (or bench's) own process; a full collection there (59 ms measured, with what
    earlier tests left alive) holds every handler thread, so requests that
    arrived during it are stamped together afterwards, and a strict window
    judges a burst the client never sent. On entry everything alive is
    collected once and frozen (``gc.freeze``): later collections scan only
    what is allocated while the server runs.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class StrictWindow:
    """A provider's limit as a strict one enforces it: 429 to an arrival that makes more than
    ``requests`` in the half-open window ``(t - period_s, t]``, every arrival counted.

    ``clock`` stamps arrivals: a test's :class:`~barfill.testing.clock.SimClock` makes the
    verdict depend on simulated time only, never on how fast the machine is.
    """

    def __init__(self, requests: int, period_s: float, clock: Callable[[], float]) -> None:
        self.requests = requests
        self.period_s = period_s
        self.clock = clock
        self.arrivals: list[tuple[float, int]] = []  # (clock time, status answered)

    def arrive(self) -> int:
        """Stamp one arrival; its status (200 or 429). The caller holds the server's lock."""
        now = self.clock()
        inside = sum(1 for t, _ in self.arrivals if now - self.period_s < t <= now)
        status = 429 if inside + 1 > self.requests else 200
        self.arrivals.append((now, status))
        return status

    def most_in_any_window(self) -> int:
        """Most arrivals inside any window ``(t - period_s, t]``."""
        return most_in_any_window((t for t, _ in self.arrivals), self.period_s)


class FakeServer:
    """A threaded HTTP server on an ephemeral 127.0.0.1 port; a context manager.

    HTTP/1.0 (a connection per request) unless ``keep_alive``: then HTTP/1.1
    with persistent connections, as real providers serve, so that a client's
    pooled connections outlive a request (what the event-loop tests need).
    With ``window`` every request first passes a :class:`StrictWindow` (a 429 if not).
    ``steady`` (by default: with a window) holds the process's garbage collector
    steady while it serves (:func:`steady_gc`), for a server that judges or times arrivals.
    """

    def __init__(
        self,
        wire: Wire,
        *,
        keep_alive: bool = False,
        window: StrictWindow | None = None,
        steady: bool | None = None,
    ) -> None:
        self.wire = wire
        self.steady = window is not None if steady is None else steady
        self.keep_alive = keep_alive
        self.window = window
        self.seen: list[Seen] = []
        self.errors: list[BaseException] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        self._httpd.handle_error = self._handle_error  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        wire.origin = self.url
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.005})
        self._steady = ExitStack()

    def __enter__(self) -> FakeServer:
        if self.steady:
            self._steady.enter_context(steady_gc())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins handler threads
        self._thread.join()
        self._steady.close()

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def pending_faults(self) -> int:
        """Injected faults not served yet."""
        with self._lock:
            return len(self._faults)

    def _handle_error(self, request: Any, client_address: Any) -> None:  # pragma: no cover
        import sys

        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.errors.append(exc)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.after > 0:
                    f.after -= 1
                    return None
                self._faults.remove(f)
                return f
            return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            if server.keep_alive:
                protocol_version = "HTTP/1.1"
                timeout = 10  # an idle kept-alive connection is closed after this (seconds)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                try:
                    server._serve(self)
                except OSError:
                    pass  # the client went away (timeouts)
                except Exception as e:  # recorded, and the test fails at teardown
                    server.errors.append(e)
                    self._send(500, b'{"error": "fake server bug"}', {})

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def _serve(self, handler: Any) -> None:
        split = urlsplit(handler.path)
        query = {k: v for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.seen.append(Seen(unquote(split.path), query, headers, handler.path))
            throttled = self.window is not None and self.window.arrive() == 429
        if throttled:
            handler._send(429, b'{"status":"ERROR","error":"too many requests"}', {"Retry-After": "1"})
            return
        fault = self._next_fault()
        if fault is not None and fault.kind == "delay":
            self._stopping.wait(fault.delay_s)
            fault = None
        if fault is not None and fault.kind in ("status", "raw"):
            body = fault.body if isinstance(fault.body, bytes) else json.dumps(fault.body).encode()
            handler._send(fault.status, body, fault.headers)
            return
        flat = {k: v[-1] for k, v in query.items()}
        answer = self.wire.answer(unquote(split.path), flat, headers)
        body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        if fault is not None and fault.kind == "mangle" and fault.edit is not None:
            edited = json.loads(body)
            fault.edit(edited)
            body = json.dumps(edited).encode()
        if fault is not None and fault.kind == "truncate":
            body = body[: max(1, len(body) // 2)]
        handler._send(answer.status, body, answer.headers)


# -- provider wires -----------------------------------------------------------


def _local_day(ts: int) -> date:
    return datetime.fromtimestamp(ts, NY).date()


def _midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=NY).timestamp())


def _paginate(items: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    page = items[offset : offset + size]
    more = offset + size < len(items)
    return page, base64.urlsafe_b64encode(str(offset + size).encode()).decode() if more else None


class PolygonWire(Wire):
    """``/v2/aggs/ticker/...``: ms stamps, day bars at 00:00 NY, week bars on Sunday, next_url pages."""

    SPANS = {
        ("1", "minute"): Timeframe.m1,
        ("5", "minute"): Timeframe.m5,
        ("15", "minute"): Timeframe.m15,
        ("30", "minute"): Timeframe.m30,
        ("1", "hour"): Timeframe.h1,
        ("4", "hour"): Timeframe.h4,
        ("1", "day"): Timeframe.d1,
        ("1", "week"): Timeframe.w1,
    }

    def __init__(self, truth: Truth, api_key: str) -> None:
        super().__init__(truth)
        self.api_key = api_key
        self.week_anchor: Callable[[int], int] = self.sunday

    def sunday(self, monday: int) -> int:
        return int(self.truth.calendar.bucket(Timeframe.d1, np.asarray([monday - 12 * 3600]))[0])

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            got = headers.get("authorization", "").removeprefix("Bearer ")
            return Answer(401, {"status": "ERROR", "request_id": "r1", "error": f"Unknown API Key {got}"})
        if path.startswith("/v3/reference/"):
            return self.reference(path, query)
        parts = path.strip("/").split("/")
        if len(parts) != 9 or parts[:3] != ["v2", "aggs", "ticker"] or parts[4] != "range":
            return Answer(404, {"status": "NOT_FOUND"})
        ticker, mult, span, from_ms, to_ms = parts[3], parts[5], parts[6], int(parts[7]), int(parts[8])
        tf = self.SPANS[(mult, span)]
        lo, hi = from_ms // 1000, to_ms // 1000 + 1
        if tf == Timeframe.w1:
            batch = self.truth.bars(ticker, tf, lo - 7 * DAY, hi + 7 * DAY, extended=True)
            stamps = [self.week_anchor(t) for t in batch.ts.tolist()]
        else:
            batch = self.truth.bars(ticker, tf, lo, hi, extended=True)
            stamps = batch.ts.tolist()
        results = [
            {"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": low, "t": stamp * 1000, "n": n}
            for stamp, (_, o, h, low, c, v, vw, n) in zip(stamps, rows(batch), strict=True)
            if lo <= stamp < hi
        ]
        page, token = _paginate(results, query.get("cursor"), self.page_size)
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": len(page),
            "resultsCount": len(page),
            "adjusted": query.get("adjusted", "true") == "true",
            "status": "OK",
            "request_id": "r1",
            "count": len(page),
        }
        if page:
            body["results"] = page
        if token:
            # The real cursor encodes the first request's query; ours carries `adjusted` alongside.
            body["next_url"] = f"{self.origin}{path}?cursor={token}&adjusted={query.get('adjusted', 'true')}"
        return Answer(200, body)

    def reference(self, path: str, query: dict[str, str]) -> Answer:
        """``/v3/reference/{splits,dividends}``: filtered by ticker and date, next_url pages."""
        kind = path.rsplit("/", 1)[-1]
        field = {"splits": "execution_date", "dividends": "ex_dividend_date"}[kind]
        ticker = query.get("ticker", "")
        lo = date.fromisoformat(query.get(f"{field}.gte", "1900-01-01"))
        hi = date.fromisoformat(query.get(f"{field}.lte", "2999-12-31"))
        splits, dividends = self.truth.actions_in(ticker, lo, hi)
        if kind == "splits":
            items: list[Any] = [
                {
                    "execution_date": d.isoformat(),
                    "id": f"E{i}",
                    "split_from": a,
                    "split_to": b,
                    "ticker": ticker,
                }
                for i, (d, a, b) in enumerate(splits)
            ]
        else:
            items = [
                {
                    "cash_amount": cash,
                    "currency": "USD",
                    "dividend_type": "CD",
                    "ex_dividend_date": d.isoformat(),
                    "frequency": 4,
                    "pay_date": (d + timedelta(days=14)).isoformat(),
                    "ticker": ticker,
                }
                for d, cash in dividends
            ]
        size = min(int(query.get("limit", 10)), self.actions_page_size)
        page, token = _paginate(items, query.get("cursor"), size)
        body: dict[str, Any] = {"status": "OK", "request_id": "r2", "results": page}
        if token:
            keep = "&".join(f"{k}={v}" for k, v in query.items() if k != "cursor")
            body["next_url"] = f"{self.origin}{path}?cursor={token}&{keep}"
        return Answer(200, body)


class AlpacaWire(Wire):
    """``/v2/stocks/bars``: RFC 3339 stamps, symbol-first pages with next_page_token."""

    FRAMES = {
        "1Min": Timeframe.m1,
        "5Min": Timeframe.m5,
        "15Min": Timeframe.m15,
        "30Min": Timeframe.m30,
        "1Hour": Timeframe.h1,
        "1Day": Timeframe.d1,
        "1Week": Timeframe.w1,
    }

    def __init__(self, truth: Truth, key_id: str, secret: str) -> None:
        super().__init__(truth)
        self.key_id, self.secret = key_id, secret
        self.daily_stamp: Callable[[int], int] = lambda label: label  # 00:00 NY = 04:00Z/05:00Z
        self.pages: list[list[str]] = []  # symbols on each page served

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        if headers.get("apca-api-key-id") != self.key_id or headers.get("apca-api-secret-key") != self.secret:
            return Answer(401, {"message": "forbidden."})
        if path == "/v1/corporate-actions":
            return self.corporate_actions(query)
        if path != "/v2/stocks/bars":
            return Answer(404, {"message": "Not Found"})
        tf = self.FRAMES[query["timeframe"]]
        start = int(datetime.fromisoformat(query["start"]).timestamp())
        end = int(datetime.fromisoformat(query["end"]).timestamp()) + 1  # inclusive
        size = min(int(query.get("limit", 1000)), self.page_size)
        items = []
        for symbol in sorted(query["symbols"].split(",")):  # symbol first, then time
            batch = self.truth.bars(symbol, tf, start, end, extended=True)
            for t, o, h, low, c, v, vw, n in rows(batch):
                stamp = self.daily_stamp(t) if tf == Timeframe.d1 else t
                bar = {"t": iso_z(stamp), "o": o, "h": h, "l": low, "c": c, "v": int(v), "n": n, "vw": vw}
                items.append((symbol, bar))
        page, token = _paginate(items, query.get("page_token"), size)
        bars: dict[str, list[Any]] = {}
        for symbol, bar in page:
            bars.setdefault(symbol, []).append(bar)
        self.pages.append(list(bars))
        return Answer(200, {"bars": bars, "next_page_token": token})

    def corporate_actions(self, query: dict[str, str]) -> Answer:
        """``/v1/corporate-actions``: actions grouped by type, pages with next_page_token."""
        lo, hi = date.fromisoformat(query["start"]), date.fromisoformat(query["end"])
        types = set(query["types"].split(","))
        items: list[tuple[str, Any]] = []
        for symbol in query["symbols"].split(","):
            splits, dividends = self.truth.actions_in(symbol, lo, hi)
            for d, old, new in splits:
                key = "forward_splits" if new > old else "reverse_splits"
                if key[:-1] in types:
                    row = {"symbol": symbol, "new_rate": new, "old_rate": old, "ex_date": d.isoformat()}
                    row.update(process_date=d.isoformat(), payable_date=(d - timedelta(days=1)).isoformat())
                    items.append((key, row))
            if "cash_dividend" in types:
                for d, cash in dividends:
                    row = {"symbol": symbol, "rate": cash, "special": False, "foreign": False}
                    row.update(ex_date=d.isoformat(), process_date=d.isoformat())
                    items.append(("cash_dividends", row))
        items.sort(key=lambda kv: kv[1]["ex_date"])
        page, token = _paginate(
            items, query.get("page_token"), min(int(query["limit"]), self.actions_page_size)
        )
        grouped: dict[str, list[Any]] = {}
        for key, row in page:
            grouped.setdefault(key, []).append(row)
        return Answer(200, {"corporate_actions": grouped, "next_page_token": token})


class TradierWire(Wire):
    """``/v1/markets/timesales`` and ``/v1/markets/history``: NY local times, object-or-list rows."""

    INTERVALS = {"1min": Timeframe.m1, "5min": Timeframe.m5, "15min": Timeframe.m15}

    def __init__(self, truth: Truth, token: str) -> None:
        super().__init__(truth)
        self.token = token
        self.time_shift_s = 0  # make `time` disagree with `timestamp`

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        if headers.get("authorization") != f"Bearer {self.token}":
            return Answer(401, b"Invalid Access Token")
        symbol = query["symbol"]
        if path == "/v1/markets/timesales":
            tf = self.INTERVALS[query["interval"]]
            start = int(datetime.strptime(query["start"], "%Y-%m-%d %H:%M").replace(tzinfo=NY).timestamp())
            end = int(datetime.strptime(query["end"], "%Y-%m-%d %H:%M").replace(tzinfo=NY).timestamp())
            assert query["session_filter"] == "open"
            batch = self.truth.bars(symbol, tf, start, end + 1, extended=False)
            data = [
                {
                    "time": datetime.fromtimestamp(t + self.time_shift_s, NY)
                    .replace(tzinfo=None)
                    .isoformat(),
                    "timestamp": t,
                    "price": c,
                    "open": o,
                    "high": h,
                    "low": low,
                    "close": c,
                    "volume": int(v),
                    "vwap": vw,
                }
                for t, o, h, low, c, v, vw, _ in rows(batch)
            ]
            return Answer(200, {"series": self._shape(data, "data")})
        if path == "/v1/markets/history":
            tf = {"daily": Timeframe.d1, "weekly": Timeframe.w1}[query["interval"]]
            first, last = date.fromisoformat(query["start"]), date.fromisoformat(query["end"])
            lo, hi = _midnight(first), _midnight(last + timedelta(days=1))
            if tf == Timeframe.w1:
                batch = self.truth.bars(symbol, tf, lo - 7 * DAY, hi, extended=False)
            else:
                batch = self.truth.bars(symbol, tf, lo, hi, extended=False)
            days = [
                {
                    "date": _local_day(t).isoformat(),
                    "open": o,
                    "high": h,
                    "low": low,
                    "close": c,
                    "volume": int(v),
                }
                for t, o, h, low, c, v, _, _ in rows(batch)
                if lo <= t < hi
            ]
            return Answer(200, {"history": self._shape(days, "day")})
        return Answer(404, b"Not Found")

    @staticmethod
    def _shape(items: list[Any], key: str) -> Any:
        if not items:
            return None
        return {key: items[0] if len(items) == 1 else items}


class YahooWire(Wire):
    """``/v8/finance/chart/{symbol}``: parallel arrays, null rows, day bars stamped at the open."""

    INTERVALS = {
        "1m": Timeframe.m1,
        "5m": Timeframe.m5,
        "15m": Timeframe.m15,
        "30m": Timeframe.m30,
        "1d": Timeframe.d1,
        "1wk": Timeframe.w1,
    }

    def __init__(self, truth: Truth) -> None:
        super().__init__(truth)
        self.live_row = False  # append the live quote, stamped off the bar grid
        self.granularity: str | None = None  # override meta.dataGranularity

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        symbol = path.rsplit("/", 1)[-1]
        if not path.startswith("/v8/finance/chart/"):
            return Answer(404, {"finance": {"result": None, "error": {"code": "Not Found"}}})
        if "events" in query:
            return self.events(symbol, query)
        interval = query["interval"]
        tf = self.INTERVALS[interval]
        p1, p2 = int(query["period1"]), int(query["period2"])
        cal = self.truth.calendar
        stamps: list[int] = []
        cols: dict[str, list[Any]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
        if tf.intraday:
            batch = self.truth.bars(symbol, tf, p1, p2)
            have = set(batch.ts.tolist())
            all_labels = cal.bar_opens(tf, p1, p2)
            by_ts = {r[0]: r for r in rows(batch)}
            for t in all_labels.tolist():
                if not p1 <= t < p2:
                    continue
                stamps.append(t)
                r = by_ts.get(t) if t in have else None  # no trades: a null row
                for k, j in (("open", 1), ("high", 2), ("low", 3), ("close", 4), ("volume", 5)):
                    cols[k].append(None if r is None else (int(r[j]) if k == "volume" else r[j]))
        else:
            batch = self.truth.bars(symbol, tf, p1 - 7 * DAY, p2)
            for t, o, h, low, c, v, _, _ in rows(batch):
                i = np.searchsorted(cal.midnights, t)
                stamp = int(cal.opens[i])  # the (first) session's open, 09:30 New York
                if p1 <= stamp < p2:
                    stamps.append(stamp)
                    for k, x in (("open", o), ("high", h), ("low", low), ("close", c), ("volume", int(v))):
                        cols[k].append(x)
        meta: dict[str, Any] = {
            "currency": "USD",
            "symbol": symbol,
            "exchangeTimezoneName": "America/New_York",
            "dataGranularity": self.granularity or interval,
            "regularMarketTime": (stamps[-1] + 17) if stamps else p2,
        }
        if self.live_row and stamps:
            stamps.append(stamps[-1] + 17)
            for k in cols:
                cols[k].append(cols[k][-1] if cols[k][-1] is not None else 1.0)
        result: dict[str, Any] = {"meta": meta, "indicators": {"quote": [cols if stamps else {}]}}
        if stamps:
            result["timestamp"] = stamps
        return Answer(200, {"chart": {"result": [result], "error": None}})

    def events(self, symbol: str, query: dict[str, str]) -> Answer:
        """The chart with ``events=div,splits``: events keyed by their stamp (09:30 NY of the ex date).

        Dividend amounts are split-adjusted, as Yahoo shows them: divided by the later splits.
        """
        p1, p2 = int(query["period1"]), int(query["period2"])
        splits, dividends = self.truth.actions_in(symbol, _local_day(p1), _local_day(p2 - 1))
        events: dict[str, Any] = {}
        for d, old, new in splits:
            t = _midnight(d) + 9 * 3600 + 1800
            row = {"date": t, "numerator": new, "denominator": old, "splitRatio": f"{new:g}:{old:g}"}
            events.setdefault("splits", {})[str(t)] = row
        for d, cash in dividends:
            t = _midnight(d) + 9 * 3600 + 1800
            later = float(np.prod([new / old for sd, old, new in splits if sd > d]))
            events.setdefault("dividends", {})[str(t)] = {"amount": cash / later, "date": t}
        meta = {
            "symbol": symbol,
            "exchangeTimezoneName": "America/New_York",
            "dataGranularity": query["interval"],
        }
        result: dict[str, Any] = {"meta": meta, "indicators": {"quote": [{}]}}
        if events:
            result["events"] = events
        return Answer(200, {"chart": {"result": [result], "error": None}})


class BaseLimitPolygonWire(PolygonWire):
    """Polygon as its ``limit`` really works: it caps the *minutes read*, and says how many.

    Intraday answers read the symbol's minute aggregates in ``[from, to]`` in
    time order and stop after ``limit`` of them (``queryCount`` = minutes read):
    a range with more minutes comes back cut short, its last bar built from
    part of its minutes. Symbols in ``regular_only`` trade only regular hours
    (no pre/post-market minutes, no pre/post-market bars). ``truncated`` counts
    the answers cut short. Day and week answers are :class:`PolygonWire`'s.
    """

    def __init__(self, truth: Truth, api_key: str, *, regular_only: frozenset[str] = frozenset()) -> None:
        super().__init__(truth, api_key)
        self.regular_only = regular_only
        self.page_size = 1_000_000  # one page: the minute limit is what cuts
        self.truncated = 0
        self.minutes_read = 0

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        parts = path.strip("/").split("/")
        if len(parts) != 9 or headers.get("authorization") != f"Bearer {self.api_key}":
            return super().answer(path, query, headers)
        ticker, tf = parts[3], self.SPANS[(parts[5], parts[6])]
        if not tf.intraday:
            return super().answer(path, query, headers)
        lo, hi = int(parts[7]) // 1000, int(parts[8]) // 1000 + 1
        extended = ticker not in self.regular_only
        minutes = self.truth.labels(ticker, Timeframe.m1, lo, hi, extended=extended)
        limit = int(query.get("limit", 5000))
        if len(minutes) > limit:
            self.truncated += 1
            hi = int(minutes[limit - 1]) + 60  # the last bar holds only the minutes read
            minutes = minutes[:limit]
        self.minutes_read += len(minutes)
        batch = self.truth.bars(ticker, tf, lo, hi, extended=extended)
        results = [
            {"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": low, "t": t * 1000, "n": n}
            for (t, o, h, low, c, v, vw, n) in rows(batch)
        ]
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": len(minutes),
            "resultsCount": len(results),
            "adjusted": query.get("adjusted", "true") == "true",
            "status": "OK",
            "request_id": "r1",
            "count": len(results),
        }
        if results:
            body["results"] = results
        return Answer(200, body)
