"""Yahoo Finance chart API v8 (unofficial, no key): ``GET /v8/finance/chart/{symbol}``.

Wire contract, as observed and as this adapter relies on it:

* Query ``interval`` (``1m`` ``5m`` ``15m`` ``30m`` ``1d`` ``1wk``),
  ``period1``/``period2`` Unix seconds, ``includePrePost=false``.
* Answer ``{chart: {result: [{meta, timestamp: [...], indicators: {quote:
  [{open, high, low, close, volume}]}}], error: null}}``; the arrays are
  parallel. No ``timestamp`` key means no bars (an empty, covered range).
  ``chart.error`` (``{code, description}``) is an error, whatever the HTTP
  status. ``meta.dataGranularity``, ``meta.symbol`` and
  ``meta.exchangeTimezoneName`` are checked against the request when present:
  Yahoo changing granularity or answering for another exchange must fail,
  not be stored.
* A row whose open, high, low and close are all null is a minute without
  trades: dropped. A partly null row is kept with NaN and fails validation.
* The last row can be the live quote stamped at ``meta.regularMarketTime``
  (not on a bar boundary): dropped when it is exactly that. The **forming**
  bar (on a boundary, not yet complete) is *not* dropped here: validation
  rejects it for final writes (rule ``forming``) and realtime callers use
  :func:`barfill.domain.validate.drop_forming`. Yahoo is not declared
  realtime, so the planner should not ask it for the current session.
* Daily bars are stamped at the session's open (09:30 New York), or at the
  last trade for the latest day: read as the session date. Weekly bars go
  through :func:`~barfill.providers.http.weekly_labels`.
* Hourly bars start at :30 (09:30, 10:30 ...), not on our clock: h1 and h4
  are **not** declared (``hour_alignment=session_open``); asking raises
  ``NotSupported`` and the engine resamples from m15/m30.
* Reach: 1m at most 7 days a request and ~30 days back; 5m/15m/30m the last
  60 days; 1d/1wk unlimited. Declared with a day of margin (29 and 59) so a
  request planned at the edge is not refused by Yahoo, or answered in part.
* Throttling is aggressive (HTTP 429, sometimes bans): 30 requests a minute
  by default.

Prices are split-adjusted (basis ``split``). barfill keeps them apart rather
than un-adjusting them on ingest: each bar records its basis, a read never
mixes two bases (:mod:`barfill.domain.sources`), ``adjust=split`` serves these
bars as stored, ``adjust=raw`` leaves them out and ``adjust=all`` refuses them
(:mod:`barfill.domain.adjust`). Un-adjusting would need every split *after*
the fetch too, and a split Yahoo learns of later would silently shift the
stored prices' meaning.

Corporate actions (:meth:`YahooProvider.fetch_actions`): the same chart call
with ``events=div,splits`` (``interval=1mo``: the events do not depend on the
bars) answers ``result[0].events = {splits: {"<ts>": {date, numerator,
denominator, splitRatio}}, dividends: {"<ts>": {amount, date}}}``; ``date``
is Unix seconds on the ex date (read as that exchange-local date), a split's
ratio is ``numerator / denominator``. No ``events`` key: none. Dividend
amounts are split-adjusted like the prices (unconfirmed; a 2022 thread shows
AAPL's $0.82 of 2020-08-07 as 0.205): they are multiplied back by the ratios
of the later splits in the same answer, so barfill stores cash as paid.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import numpy as np

from barfill.domain.actions import ActionKind, CorporateAction, dividend, split, split_ratio
from barfill.domain.bars import BarBatch, Basis
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, HourAlignment, RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.providers.actions import refused_as_bad_payload, within
from barfill.providers.http import (
    HttpAdapter,
    HttpClient,
    check_reach,
    fail_payload,
    get_json,
    mapping,
    redact,
    relabel,
    rows_list,
    session_bars,
)

NAME = "yahoo"
PAGE_LIMIT = 10_000  # no pagination: one answer holds the whole (span-limited) range
DEFAULT_RATE_LIMIT = RateLimit(requests=30, period_s=60.0)
_INTERVALS: dict[Timeframe, str] = {
    Timeframe.m1: "1m",
    Timeframe.m5: "5m",
    Timeframe.m15: "15m",
    Timeframe.m30: "30m",
    Timeframe.d1: "1d",
    Timeframe.w1: "1wk",
}
_HISTORY_DAYS = {Timeframe.m1: 29, Timeframe.m5: 59, Timeframe.m15: 59, Timeframe.m30: 59}
_MAX_SPAN_DAYS = {Timeframe.m1: 7, Timeframe.m5: 59, Timeframe.m15: 59, Timeframe.m30: 59}
_WEEK_LEAD_S = 2 * 86_400
_QUOTE_FIELDS = ("open", "high", "low", "close", "volume")


class YahooProvider(HttpAdapter):
    """Bars from Yahoo's chart API, one symbol per request.

    Args:
        client: an httpx client owned by the caller (it closes it).
        base_url: the API root, configurable for proxies and tests.
        rate_limit: overrides 30 requests per minute.
        calendar: the exchange calendar (default XNYS).
        user_agent: sent as ``User-Agent`` when set (Yahoo throttles some
            library defaults harder).
        clock: Unix seconds now, to refuse requests beyond Yahoo's reach.
    """

    def __init__(
        self,
        client: HttpClient,
        *,
        base_url: str = "https://query2.finance.yahoo.com",
        rate_limit: RateLimit | None = None,
        calendar: TradingCalendar | None = None,
        user_agent: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._calendar = calendar or get_calendar("XNYS")
        self._headers = {"Accept": "application/json"}
        if user_agent:
            self._headers["User-Agent"] = user_agent
        self._clock = clock
        self._capabilities = Capabilities(
            name=NAME,
            timeframes=frozenset(_INTERVALS),
            page_limit=PAGE_LIMIT,
            history_days=dict(_HISTORY_DAYS),
            max_span_days=dict(_MAX_SPAN_DAYS),
            rate_limit=rate_limit or DEFAULT_RATE_LIMIT,
            hour_alignment=HourAlignment.session_open,
            # The chart's ``quote`` prices are split-adjusted (``adjclose`` adds dividends; unused).
            basis=Basis.split_adjusted,
        )

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """Bars with ``start <= ts < end`` for each symbol (h1/h4: ``NotSupported``)."""
        check_reach(self._capabilities, timeframe, start, end, self._clock())
        out: dict[str, BarBatch] = {}
        for symbol in symbols:
            lead = _WEEK_LEAD_S if timeframe == Timeframe.w1 else 0
            payload = await get_json(
                self._client,
                f"{self._base_url}/v8/finance/chart/{quote(symbol, safe='')}",
                provider=NAME,
                params={
                    "interval": _INTERVALS[timeframe],
                    "period1": start - lead,
                    "period2": end,
                    "includePrePost": "false",
                },
                headers=self._headers,
            )
            batch = self._parse(payload, symbol, timeframe)
            batch = relabel(batch, self._calendar)
            batch = session_bars(batch, self._calendar, extended=False)
            out[symbol] = batch.between(start, end)
        return out

    async def fetch_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
        """Splits and cash dividends with ex dates in ``[start, end]``, from the chart's events."""
        tz = self._calendar.tz
        period1 = int(dt.datetime.combine(start, dt.time(), tzinfo=ZoneInfo(tz)).timestamp())
        period2 = int(
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(tz)).timestamp()
        )
        payload = await get_json(
            self._client,
            f"{self._base_url}/v8/finance/chart/{quote(symbol, safe='')}",
            provider=NAME,
            params={"interval": "1mo", "period1": period1, "period2": period2, "events": "div,splits"},
            headers=self._headers,
        )
        result = self._result(payload, symbol)
        answered = mapping(result.get("meta") or {}, provider=NAME, field="meta").get("symbol")
        if answered is not None and str(answered).upper() != symbol.upper():
            fail_payload(NAME, f"asked for {symbol!r}, answer is for {answered!r}")
        events = mapping(result.get("events") or {}, provider=NAME, field="events")
        out: list[CorporateAction] = []
        for key, row in _events(events, "splits"):
            where = f"{symbol} events.splits[{key}]"
            with refused_as_bad_payload(NAME, where):
                ratio = split_ratio(
                    row.get("denominator"), row.get("numerator"), names=("denominator", "numerator")
                )
                out.append(split(symbol, _event_date(row, where, tz), ratio, NAME))
        splits = [a for a in out if a.kind == ActionKind.split_]
        for key, row in _events(events, "dividends"):
            where = f"{symbol} events.dividends[{key}]"
            ex = _event_date(row, where, tz)
            with refused_as_bad_payload(NAME, where):
                adjusted = dividend(symbol, ex, row.get("amount"), NAME)
            later = [float(a.ratio or 1.0) for a in splits if a.ex_date > ex]
            out.append(dividend(symbol, ex, float(adjusted.cash or 0.0) * float(np.prod(later)), NAME))
        return within(out, start, end)

    def _result(self, payload: Any, symbol: str) -> Mapping[str, Any]:
        """``chart.result[0]``, or the error the answer stands for."""
        chart = mapping(
            mapping(payload, provider=NAME, field="answer").get("chart"), provider=NAME, field="chart"
        )
        error = chart.get("error")
        if error is not None:
            detail = (error.get("description") or error.get("code")) if isinstance(error, dict) else error
            raise ProviderError("provider_error", f"{NAME}: {symbol}: {redact(str(detail))}", retryable=False)
        results = rows_list(chart.get("result"), provider=NAME, field="chart.result")
        if len(results) != 1:
            fail_payload(NAME, f"{symbol}: chart.result holds {len(results)} results, expected 1")
        return mapping(results[0], provider=NAME, field="chart.result[0]")

    def _parse(self, payload: Any, symbol: str, timeframe: Timeframe) -> BarBatch:
        result = self._result(payload, symbol)
        meta = mapping(result.get("meta") or {}, provider=NAME, field="meta")
        self._check_meta(meta, symbol, timeframe)
        if result.get("timestamp") is None:
            return BarBatch.empty(symbol, timeframe, NAME)
        stamps = rows_list(result["timestamp"], provider=NAME, field="timestamp")
        quotes = rows_list(
            mapping(result.get("indicators"), provider=NAME, field="indicators").get("quote"),
            provider=NAME,
            field="indicators.quote",
        )
        if len(quotes) != 1:
            fail_payload(NAME, f"{symbol}: indicators.quote holds {len(quotes)} series, expected 1")
        quote_ = mapping(quotes[0], provider=NAME, field="indicators.quote[0]")
        columns = {}
        for name in _QUOTE_FIELDS:
            values = rows_list(quote_.get(name), provider=NAME, field=f"quote.{name}")
            if len(values) != len(stamps):
                fail_payload(
                    NAME, f"{symbol}: quote.{name} has {len(values)} values for {len(stamps)} stamps"
                )
            columns[name] = _float_column(values, name)
        ts = _int_column(stamps)
        keep = ~(
            np.isnan(columns["open"])
            & np.isnan(columns["high"])
            & np.isnan(columns["low"])
            & np.isnan(columns["close"])
        )
        live = meta.get("regularMarketTime")
        if timeframe.intraday and len(ts) and isinstance(live, int) and int(ts[-1]) == live:
            on_boundary = bool(self._calendar.is_aligned(timeframe, ts[-1:])[0])
            keep[-1] = keep[-1] and on_boundary  # the live quote, not a bar
        return BarBatch(
            symbol,
            timeframe,
            NAME,
            ts[keep],
            *(columns[name][keep] for name in _QUOTE_FIELDS),
        )

    def _check_meta(self, meta: Mapping[str, Any], symbol: str, timeframe: Timeframe) -> None:
        granularity = meta.get("dataGranularity")
        if granularity is not None and granularity != _INTERVALS[timeframe]:
            fail_payload(NAME, f"{symbol}: asked for {_INTERVALS[timeframe]}, got {granularity!r} bars")
        answered = meta.get("symbol")
        if answered is not None and str(answered).upper() != symbol.upper():
            fail_payload(NAME, f"asked for {symbol!r}, answer is for {answered!r}")
        zone = meta.get("exchangeTimezoneName")
        if zone is not None and zone != self._calendar.tz:
            fail_payload(NAME, f"{symbol} trades in {zone}, not in the {self._calendar.name} zone")


def _float_column(values: list[Any], name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            fail_payload(NAME, f"quote.{name}: expected numbers or null, got {v!r}")
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _int_column(values: list[Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            fail_payload(NAME, f"timestamp: expected integers, got {v!r}")
    return np.asarray(values, dtype=np.int64)


def _events(events: Mapping[str, Any], kind: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``events[kind]`` rows (an object keyed by Unix-second strings), in key order."""
    table = mapping(events.get(kind) or {}, provider=NAME, field=f"events.{kind}")
    return [(k, mapping(v, provider=NAME, field=f"events.{kind}[{k}]")) for k, v in sorted(table.items())]


def _event_date(row: Mapping[str, Any], where: str, tz: str) -> dt.date:
    """The exchange-local date of an event's ``date`` (Unix seconds)."""
    stamp = row.get("date")
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        fail_payload(NAME, f"{where}: field 'date': expected Unix seconds, got {stamp!r}")
    return dt.datetime.fromtimestamp(stamp, ZoneInfo(tz)).date()
