"""Polygon.io (Massive) aggregates: ``GET /v2/aggs/ticker/{T}/range/{mult}/{span}/{from}/{to}``.

Wire contract, as documented and as this adapter relies on it:

* ``from``/``to`` are Unix **milliseconds**, both inclusive; we send
  ``[start, end - 1 ms]`` (w1: ``from`` two days early, see below). Query:
  ``adjusted`` (we default to raw bars: adjust on read), ``sort=asc``,
  ``limit=50000``.
* ``limit`` caps the *base* aggregates behind the answer (minutes for
  minute/hour bars, days for day/week bars), not the rows returned, which is
  why capabilities declare ``page_unit=base_minutes`` and the planner chunks
  by time so that no request reaches the cap.
* Answer ``{ticker, adjusted, status: OK|DELAYED, resultsCount, results:
  [{t, o, h, l, c, v, vw?, n?}], next_url?}``; ``t`` is the bar **start** in
  Unix ms. An empty range has no ``results`` key at all (a covered, empty
  range). ``status`` ERROR / NOT_AUTHORIZED are errors; any other status is
  ``bad_payload``.
* ``next_url`` is followed when present (staff once said aggregates have
  none; current docs show it). It must point at the configured host: the
  adapter authenticates with ``Authorization: Bearer`` and never sends the
  key elsewhere, nor puts it in any URL.
* Minute and hour aggregates include pre/post-market (04:00-20:00 New York).
  They are filtered to the regular session unless ``extended_hours=True``;
  an h1/h4 bar is kept when its span meets the session, so the 09:00 h1 bar
  is kept (Polygon builds it from 09:00-09:59 minutes, pre-market included).
* Day bars are stamped 00:00 New York of the session date: kept as our d1
  label. Week bars' anchor is unconfirmed (reportedly Sunday 00:00 New
  York): :func:`~barfill.providers.http.weekly_labels` maps a Sunday stamp to
  the next Monday, a weekday stamp to its own Monday, and refuses Saturday.
* Throttling is HTTP 429; ``Retry-After`` is honoured if sent (unconfirmed
  that Polygon sends it). 401 = missing or unknown key.

Corporate actions (:meth:`PolygonProvider.fetch_actions`, two request chains):

* ``GET /v3/reference/splits?ticker=T&execution_date.gte=&execution_date.lte=
  &limit=1000&order=asc&sort=execution_date`` → ``{status: OK, results:
  [{ticker, execution_date: YYYY-MM-DD, split_from, split_to, id?}],
  next_url?}``; a split's ratio is ``split_to / split_from`` (2:1 is from 1
  to 2; a reverse split has ``split_from > split_to``). The execution date is
  the ex date: pre-market of that day already trades split.
* ``GET /v3/reference/dividends?ticker=T&ex_dividend_date.gte=&…lte=
  &limit=1000&order=asc&sort=ex_dividend_date`` → ``{results: [{ticker,
  ex_dividend_date, cash_amount, dividend_type?, ...}], next_url?}``. Staff
  say ``cash_amount`` is as paid, not split-adjusted (a 2022 thread said the
  opposite; unconfirmed): barfill stores it as paid.
* An empty answer has ``results: []`` or no ``results``. ``next_url`` is
  followed (same host only, key in the header), each page one request.

Every page after the first, of bars or of actions, waits for its own
rate-limit grant (:func:`~barfill.providers.http.grant_next_request`): a
chain of pages must not burst past a strict limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from itertools import compress
from operator import attrgetter
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx
import msgspec
import numpy as np
import numpy.typing as npt

from barfill.domain.actions import CorporateAction, dividend, split, split_ratio
from barfill.domain.bars import I64, BarBatch, Basis
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, PageUnit, RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.errors import NotSupported, ProviderError
from barfill.providers import usage
from barfill.providers.actions import iso_date, refused_as_bad_payload, within
from barfill.providers.http import (
    HttpAdapter,
    HttpClient,
    bad_payload,
    fail_payload,
    get_json,
    get_ok,
    grant_next_request,
    integer,
    iso,
    json_of,
    mapping,
    number,
    optional_number,
    redact,
    relabel,
    rows_list,
    session_mask,
)
from barfill.providers.usage import AnswerCost

NAME = "polygon"
PAGE_LIMIT = 50_000
DEFAULT_RATE_LIMIT = RateLimit(requests=5, period_s=60.0)  # free tier
_TIMESPANS: dict[Timeframe, tuple[int, str]] = {
    Timeframe.m1: (1, "minute"),
    Timeframe.m5: (5, "minute"),
    Timeframe.m15: (15, "minute"),
    Timeframe.m30: (30, "minute"),
    Timeframe.h1: (1, "hour"),
    Timeframe.h4: (4, "hour"),
    Timeframe.d1: (1, "day"),
    Timeframe.w1: (1, "week"),
}
_WEEK_LEAD_S = 2 * 86_400  # reach back to a Sunday (or Saturday) anchor before our Monday label
_MAX_PAGES = 1_000  # a next_url chain longer than this is a provider loop, not data
ACTIONS_LIMIT = 1_000

_Row = tuple[int, float, float, float, float, float, float | None, int | None]
_EXACT_INT = 2**53  # the row parser reads integers through float(): exact below this


class _Bar(msgspec.Struct, gc=False):
    """One aggregate as documented: the fast path's strict types (an int is a float, a bool is not)."""

    t: int
    o: float
    h: float
    l: float  # noqa: E741 (Polygon's name)
    c: float
    v: float
    vw: float | None = None
    n: int | None = None


class _Page(msgspec.Struct, gc=False):
    """One answer; fields other than ``results`` are checked as the row path checks them."""

    status: Any = None
    ticker: Any = None
    adjusted: Any = None
    error: Any = None
    message: Any = None
    next_url: Any = None
    queryCount: Any = None  # noqa: N815 (Polygon's name): base aggregates read, for the planner
    results: list[_Bar] | msgspec.UnsetType = msgspec.UNSET


_PAGE = msgspec.json.Decoder(_Page)
_ROWS = msgspec.json.Decoder(list[_Bar])
_RESULTS = b'"results":['
_PIECE_BYTES = 200_000  # ~2,000 rows: ~2 ms of decoding between two chances for other threads to run


def _decode_in_pieces(content: bytes) -> _Page:
    """The answer decoded as :data:`_PAGE` would, its results a piece of ~2,000 rows at a time.

    One decode of a 50,000-bar page holds the GIL for ~40 ms straight: a
    committing thread of the worker (SQLite's single writer) that wants it
    back, to bind its next rows, waits all that time. Between pieces it can
    run. The rows are found as the one ``"results"`` in the answer (any other
    occurrence, in a key or a string: the whole answer at once); the rest of
    the answer, decoded with ``"results":[]``, must show them empty. Pieces
    are cut after a ``}`` followed by ``,{``: in the documented flat rows
    always a row boundary; anywhere else (inside a nested value or a string)
    the piece is not valid JSON, and the whole answer is decoded at once
    instead, exactly as before.
    """
    opening = content.find(_RESULTS) if content.count(b'"results"') == 1 else -1
    closing = content.find(b"]", opening) if opening >= 0 else -1
    if closing < 0:
        return _PAGE.decode(content)
    lo = opening + len(_RESULTS)
    try:
        page = _PAGE.decode(content[:lo] + content[closing:])  # every field but the rows
        if page.results != []:  # the "results" found was not where the rows are
            return _PAGE.decode(content)
        rows: list[_Bar] = []
        while lo < closing:
            cut = content.find(b"},{", min(lo + _PIECE_BYTES, closing), closing)
            end = closing if cut < 0 else cut + 1
            rows += _ROWS.decode(b"[" + content[lo:end] + b"]")
            lo = end + 1  # past the comma
    except msgspec.MsgspecError:
        return _PAGE.decode(content)
    page.results = rows
    return page


_T, _VW, _N = attrgetter("t"), attrgetter("vw"), attrgetter("n")
_OHLCV = tuple(attrgetter(k) for k in ("o", "h", "l", "c", "v"))


class _Answer(NamedTuple):
    """One parsed page: its bars, ``next_url``, ``queryCount`` (as sent), the
    latest bar start it held before any row was dropped, and how many of its
    rows lie outside the regular session."""

    bars: BarBatch
    next_url: Any
    count: Any
    last: int | None = None
    outside: int = 0


class PolygonProvider(HttpAdapter):
    """Bars from Polygon's aggregates endpoint, one symbol per request.

    Args:
        client: an httpx client owned by the caller (it closes it).
        api_key: sent as ``Authorization: Bearer``; never logged nor put in a URL.
        base_url: the API root, configurable for proxies and tests.
        adjusted: ask for split-adjusted bars (default raw: adjust on read).
        rate_limit: overrides the free tier's 5 requests per minute.
        extended_hours: keep pre/post-market minutes instead of filtering
            intraday bars to the regular session.
        calendar: the exchange calendar (default XNYS).
    """

    def __init__(
        self,
        client: HttpClient,
        *,
        api_key: str,
        base_url: str = "https://api.polygon.io",
        adjusted: bool = False,
        rate_limit: RateLimit | None = None,
        extended_hours: bool = False,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self._client = client
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._base = httpx.URL(self._base_url)
        self._adjusted = adjusted
        self._extended = extended_hours
        self._calendar = calendar or get_calendar("XNYS")
        self._capabilities = Capabilities(
            name=NAME,
            timeframes=frozenset(_TIMESPANS),
            page_limit=PAGE_LIMIT,
            page_unit=PageUnit.base_minutes,
            # The answer counts extended-hours minutes against `limit` even
            # when we filter them out afterwards.
            extended_hours=True,
            rate_limit=rate_limit or DEFAULT_RATE_LIMIT,
            # Polygon's ``adjusted=true`` adjusts for splits only.
            basis=Basis.split_adjusted if adjusted else Basis.raw,
        )

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """Bars with ``start <= ts < end`` for each symbol (one request chain per symbol)."""
        if timeframe not in _TIMESPANS:
            raise NotSupported(f"{NAME}: timeframe {timeframe.value}")
        return {symbol: await self._fetch_one(symbol, timeframe, start, end) for symbol in symbols}

    async def _fetch_one(self, symbol: str, timeframe: Timeframe, start: int, end: int) -> BarBatch:
        multiplier, timespan = _TIMESPANS[timeframe]
        from_ms = (start - (_WEEK_LEAD_S if timeframe == Timeframe.w1 else 0)) * 1000
        to_ms = end * 1000 - 1
        url = (
            f"{self._base_url}/v2/aggs/ticker/{quote(symbol, safe='')}"
            f"/range/{multiplier}/{timespan}/{from_ms}/{to_ms}"
        )
        params: dict[str, str | int] | None = {
            "adjusted": "true" if self._adjusted else "false",
            "sort": "asc",
            "limit": PAGE_LIMIT,
        }
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        pieces: list[BarBatch] = []
        read: int | None = None
        cut: int | None = None
        outside = 0
        for _ in range(_MAX_PAGES):
            response = await get_ok(
                self._client, url, provider=NAME, params=params, headers=headers, secrets=(self._api_key,)
            )
            page = self._parse_answer(response, symbol, timeframe, kept_only=True)
            del response  # the page's bytes go now, not when the next page arrives
            piece, next_url, count = page.bars, page.next_url, page.count
            outside += page.outside
            if len(piece):
                pieces.append(piece)
            if count is not None:
                n = integer(count, provider=NAME, field="queryCount", bar=symbol)
                read = (read or 0) + n
                if n >= PAGE_LIMIT:
                    cut = self._cut(symbol, page.last, start)
                    break
            if not next_url:
                break
            url, params = self._checked_next(next_url), None  # next_url carries its own query
            await grant_next_request()  # each page is a request the provider counts
        else:
            fail_payload(NAME, f"{symbol}: more than {_MAX_PAGES} pages of next_url; refusing to loop")
        # concat sorts by ts, stably: as the rows of every page sorted together. The
        # pages hold only the session's rows already (intraday; d1/w1 are relabelled).
        joined = BarBatch.concat(pieces) if pieces else BarBatch.empty(symbol, timeframe, NAME)
        batch = relabel(joined, self._calendar)
        if read is not None:
            usage.report(AnswerCost(NAME, symbol, timeframe, start, end, read, cut, outside))
        return batch.between(start, end if cut is None else min(cut, end))

    @staticmethod
    def _cut(symbol: str, last: int | None, start: int) -> int:
        """Where a page that read ``limit`` base aggregates stops being complete.

        Polygon stops reading at the limit: the last bar returned (``last``,
        extended hours included) may be built from part of its minutes, and
        nothing after it is there. Bars from the last one on are dropped; the
        caller re-plans the rest.
        """
        if last is None or last <= start:
            fail_payload(NAME, f"{symbol}: answer read the whole limit but holds no complete bar")
        return last

    async def fetch_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
        """Splits and cash dividends of ``symbol`` with ex dates in ``[start, end]`` (see the module doc)."""
        splits = await self._reference(symbol, "splits", "execution_date", start, end)
        await grant_next_request()  # the dividends chain is a further request of this refresh
        dividends = await self._reference(symbol, "dividends", "ex_dividend_date", start, end)
        out: list[CorporateAction] = []
        for i, row in enumerate(splits):
            where = f"{symbol} splits[{i}]"
            ex = iso_date(row.get("execution_date"), provider=NAME, where=where, field="execution_date")
            with refused_as_bad_payload(NAME, where):
                out.append(split(symbol, ex, split_ratio(row.get("split_from"), row.get("split_to")), NAME))
        for i, row in enumerate(dividends):
            where = f"{symbol} dividends[{i}]"
            ex = iso_date(row.get("ex_dividend_date"), provider=NAME, where=where, field="ex_dividend_date")
            with refused_as_bad_payload(NAME, where):
                out.append(dividend(symbol, ex, row.get("cash_amount"), NAME))
        return within(out, start, end)

    async def _reference(
        self, symbol: str, kind: str, date_field: str, start: dt.date, end: dt.date
    ) -> list[Mapping[str, Any]]:
        """Every row of ``/v3/reference/{kind}`` for ``symbol`` in the date range, following next_url."""
        url = f"{self._base_url}/v3/reference/{kind}"
        params: dict[str, str | int] | None = {
            "ticker": symbol,
            f"{date_field}.gte": start.isoformat(),
            f"{date_field}.lte": end.isoformat(),
            "limit": ACTIONS_LIMIT,
            "order": "asc",
            "sort": date_field,
        }
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        rows: list[Mapping[str, Any]] = []
        for _ in range(_MAX_PAGES):
            payload = await get_json(
                self._client, url, provider=NAME, params=params, headers=headers, secrets=(self._api_key,)
            )
            page = mapping(payload, provider=NAME, field=f"{kind} answer")
            status = page.get("status")
            if status not in (None, "OK", "DELAYED"):
                detail = redact(str(page.get("error") or page.get("message") or ""), (self._api_key,))
                fail_payload(NAME, f"{symbol} {kind}: status {status!r}: {detail}")
            for i, raw in enumerate(
                rows_list(page.get("results") or [], provider=NAME, field=f"{kind} results")
            ):
                row = mapping(raw, provider=NAME, field=f"{symbol} {kind}[{len(rows) + i}]")
                ticker = row.get("ticker")
                if ticker is not None and str(ticker).upper() != symbol.upper():
                    fail_payload(NAME, f"{kind}: asked for {symbol!r}, a row is for {ticker!r}")
                rows.append(row)
            next_url = page.get("next_url")
            if not next_url:
                return rows
            url, params = self._checked_next(next_url), None
            await grant_next_request()
        raise bad_payload(
            NAME, f"{symbol} {kind}: more than {_MAX_PAGES} pages of next_url; refusing to loop"
        )

    def _parse_answer(
        self, response: httpx.Response, symbol: str, timeframe: Timeframe, *, kept_only: bool = False
    ) -> _Answer:
        """One answer's bars (in the page's order), its ``next_url`` and ``queryCount``.

        The documented shape is decoded straight into typed structs and then
        columns (no dict per bar); anything else is decoded as generic JSON
        and parsed row by row, which names the bar and field at fault.

        With ``kept_only`` an intraday page keeps only the rows this adapter
        stores (the regular session, or the extended one if configured): they
        are dropped before their other columns are built, since Polygon sends
        pre/post-market minutes that outnumber the regular ones.
        """
        try:
            page = _decode_in_pieces(response.content)
        except msgspec.MsgspecError:
            return self._parse_page(
                mapping(json_of(response, provider=NAME), provider=NAME, field="answer"),
                symbol,
                timeframe,
                kept_only=kept_only,
            )
        self._check_page(page.status, page.ticker, page.adjusted, page.error or page.message, symbol)
        if page.results is msgspec.UNSET:  # resultsCount 0: an empty, covered range
            return _Answer(BarBatch.empty(symbol, timeframe, NAME), page.next_url, page.queryCount)
        bars = page.results
        t_ms = np.fromiter(map(_T, bars), dtype=np.int64, count=len(bars))
        if len(bars) and int(np.abs(t_ms).max()) >= _EXACT_INT:  # the row parser reads t through float()
            return self._parse_page(
                mapping(json_of(response, provider=NAME), provider=NAME, field="answer"),
                symbol,
                timeframe,
                kept_only=kept_only,
            )
        ts = t_ms // 1000
        last = int(ts.max()) if len(ts) else None
        outside = 0
        if kept_only:
            keep, outside = self._kept(ts, timeframe)
            if not keep.all():
                bars = list(compress(bars, keep))
                ts = ts[keep]
        o, h, lo, c, v = (np.fromiter(map(get, bars), dtype=np.float64, count=len(bars)) for get in _OHLCV)
        vwap = np.array(list(map(_VW, bars)), dtype=np.float64)  # null -> NaN
        trades = np.array([-1 if n is None else n for n in map(_N, bars)], dtype=np.int64)
        batch = BarBatch(symbol, timeframe, NAME, ts, o, h, lo, c, v, vwap, trades)
        return _Answer(batch, page.next_url, page.queryCount, last, outside)

    def _kept(self, ts: I64, timeframe: Timeframe) -> tuple[npt.NDArray[np.bool_], int]:
        """The rows of ``ts`` this adapter stores, and how many lie outside the regular session."""
        regular = session_mask(ts, timeframe, self._calendar, extended=False)
        outside = len(ts) - int(np.count_nonzero(regular))
        if self._extended:
            return session_mask(ts, timeframe, self._calendar, extended=True), outside
        return regular, outside

    def _parse_page(
        self, page: Mapping[str, Any], symbol: str, timeframe: Timeframe, *, kept_only: bool
    ) -> _Answer:
        """:meth:`_parse_answer` for a generically decoded answer, row by row."""
        self._check_page(
            page.get("status"),
            page.get("ticker"),
            page.get("adjusted"),
            page.get("error") or page.get("message"),
            symbol,
        )
        next_url, count = page.get("next_url"), page.get("queryCount")
        if "results" not in page:  # resultsCount 0: an empty, covered range
            return _Answer(BarBatch.empty(symbol, timeframe, NAME), next_url, count)
        results = rows_list(page["results"], provider=NAME, field="results")
        batch = BarBatch.from_rows(symbol, timeframe, NAME, self._parse_rows(results, symbol))
        last = int(batch.ts.max()) if len(batch) else None
        if not kept_only:
            return _Answer(batch, next_url, count, last)
        keep, outside = self._kept(batch.ts, timeframe)
        return _Answer(batch.take(keep), next_url, count, last, outside)

    def _check_page(self, status: Any, ticker: Any, adjusted: Any, error: Any, symbol: str) -> None:
        """An error status, another ticker or another basis than asked fails the answer."""
        if status in ("ERROR", "NOT_AUTHORIZED"):
            detail = redact(str(error or ""), (self._api_key,))
            code = "not_authorized" if status == "NOT_AUTHORIZED" else "provider_error"
            raise ProviderError(code, f"{NAME}: {symbol}: status {status}: {detail}", retryable=False)
        if status not in ("OK", "DELAYED"):
            fail_payload(NAME, f"{symbol}: unexpected status {status!r}")
        if ticker is not None and str(ticker).upper() != symbol.upper():
            fail_payload(NAME, f"asked for {symbol!r}, answer is for {ticker!r}")
        if adjusted is not None and adjusted is not self._adjusted:
            fail_payload(NAME, f"{symbol}: asked adjusted={self._adjusted}, answer says {adjusted!r}")

    def _parse_rows(self, results: list[Any], symbol: str) -> list[_Row]:
        """The bars of ``results`` row by row; ``bad_payload`` names the first bad bar and field."""
        out: list[_Row] = []
        for i, raw in enumerate(results):
            row = mapping(raw, provider=NAME, field=f"{symbol} results[{i}]")
            t_ms = integer(row.get("t"), provider=NAME, field="t", bar=f"{symbol} results[{i}]")
            bar = f"{symbol} bar {iso(t_ms // 1000)}"
            trades = row.get("n")
            out.append(
                (
                    t_ms // 1000,
                    number(row.get("o"), provider=NAME, field="o", bar=bar),
                    number(row.get("h"), provider=NAME, field="h", bar=bar),
                    number(row.get("l"), provider=NAME, field="l", bar=bar),
                    number(row.get("c"), provider=NAME, field="c", bar=bar),
                    number(row.get("v"), provider=NAME, field="v", bar=bar),
                    optional_number(row.get("vw"), provider=NAME, field="vw", bar=bar),
                    None if trades is None else integer(trades, provider=NAME, field="n", bar=bar),
                )
            )
        return out

    def _checked_next(self, next_url: Any) -> str:
        """``next_url`` if it points at the configured API; else ``bad_payload``."""
        if not isinstance(next_url, str):
            fail_payload(NAME, f"next_url: expected a string, got {type(next_url).__name__}")
        try:
            target = httpx.URL(next_url)
        except httpx.InvalidURL:
            fail_payload(NAME, "next_url is not a URL")
        if (target.scheme, target.host, target.port) != (self._base.scheme, self._base.host, self._base.port):
            fail_payload(NAME, f"next_url points at {target.scheme}://{target.host}, not the configured API")
        return str(target)
