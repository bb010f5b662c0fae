"""Alpaca market data v2: ``GET /v2/stocks/bars`` (many symbols per request).

Wire contract, as documented and as this adapter relies on it:

* Query: ``symbols`` (comma-separated), ``timeframe`` (``1Min`` ``5Min``
  ``15Min`` ``30Min`` ``1Hour`` ``1Day`` ``1Week``), ``start``/``end`` RFC
  3339 (``end`` is "equal to or before": we send ``end - 1 s``),
  ``limit=10000`` (counted across all symbols of the request),
  ``page_token``, ``adjustment`` (raw by default: adjust on read), ``feed``,
  ``sort=asc``. Auth headers ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``.
* Answer ``{bars: {SYMBOL: [{t, o, h, l, c, v, n, vw}]}, next_page_token}``;
  ``t`` is the bar start, RFC 3339 UTC. Results are ordered **symbol first,
  then time**: the first pages may hold only the first symbol. The adapter
  follows ``next_page_token`` until it is null, every time; concluding from
  one page that "the batch returns only the first symbol" silently drops
  history (a known bug elsewhere). A symbol absent from every page has no
  bars in the range: it maps to an empty batch. Every page after the first
  waits for its own rate-limit grant
  (:func:`~barfill.providers.http.grant_next_request`), actions pages too.
* Bars include pre/post-market (04:00-20:00 New York); intraday bars are
  filtered to the regular session unless ``extended_hours=True``.
* Day bars are stamped 00:00 New York (04:00Z/05:00Z): read as the session
  date; week bars go through :func:`~barfill.providers.http.weekly_labels`.
* ``4Hour`` bars are **not** declared: Alpaca's staff describe them as
  starting at "4 * n hour" with times in UTC, which in winter would put them
  at 03:00/07:00/11:00 New York, not on our local 4-hour clock. The engine
  derives h4 from m15 instead; asking for h4 raises ``NotSupported``.
* 200 requests a minute on the free plan (from Alpaca's plan pages as
  summarised by third parties: unconfirmed at the primary source); 429 when
  exceeded, ``Retry-After`` honoured if sent.

Corporate actions (:meth:`AlpacaProvider.fetch_actions`): ``GET
/v1/corporate-actions?symbols=T&types=forward_split,reverse_split,cash_dividend
&start=YYYY-MM-DD&end=YYYY-MM-DD&limit=1000&sort=asc`` (dates are ex dates, both
inclusive) → ``{corporate_actions: {forward_splits: [{symbol, new_rate,
old_rate, ex_date, process_date, record_date?, payable_date?}], reverse_splits:
[...same...], cash_dividends: [{symbol, rate, ex_date, special, foreign, ...}]},
next_page_token}``. A split's ratio is ``new_rate / old_rate``; the ex date
(not ``payable_date``, which can be a day earlier) is when prices change.
Missing lists are empty; ``next_page_token`` is followed to the end. Alpaca's
corporate-actions history starts in 2020 (unconfirmed: from its announcement).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from barfill.domain.actions import CorporateAction, dividend, split, split_ratio
from barfill.domain.bars import BarBatch, Basis
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, PageUnit, RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.errors import NotSupported
from barfill.providers.actions import iso_date, refused_as_bad_payload, within
from barfill.providers.http import (
    HttpAdapter,
    HttpClient,
    bad_payload,
    fail_payload,
    get_json,
    grant_next_request,
    integer,
    iso,
    mapping,
    number,
    optional_number,
    relabel,
    rows_list,
    session_bars,
)

NAME = "alpaca"
HISTORY_START = 1_451_606_400  # 2016-01-01T00:00:00Z: the first bars Alpaca's data API holds
PAGE_LIMIT = 10_000
MAX_SYMBOLS = 100
DEFAULT_RATE_LIMIT = RateLimit(requests=200, period_s=60.0)
_TIMEFRAMES: dict[Timeframe, str] = {
    Timeframe.m1: "1Min",
    Timeframe.m5: "5Min",
    Timeframe.m15: "15Min",
    Timeframe.m30: "30Min",
    Timeframe.h1: "1Hour",
    Timeframe.d1: "1Day",
    Timeframe.w1: "1Week",
}
_WEEK_LEAD_S = 2 * 86_400  # reach back to a weekend anchor before our Monday label
_MAX_PAGES = 100_000  # a token chain longer than this is a provider loop
ACTIONS_LIMIT = 1_000

_Row = tuple[int, float, float, float, float, float, float | None, int | None]


def _rfc3339(ts: int) -> str:
    return str(np.datetime64(int(ts), "s")) + "Z"


def _parse_time(value: Any) -> int:
    if not isinstance(value, str):
        fail_payload(NAME, f"field 't': expected an RFC 3339 string, got {value!r}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail_payload(NAME, f"field 't': not RFC 3339: {value!r}")
    if when.tzinfo is None:
        fail_payload(NAME, f"field 't': no UTC offset: {value!r}")
    return int(when.timestamp())


class AlpacaProvider(HttpAdapter):
    """Bars from Alpaca's multi-symbol historical bars endpoint.

    Args:
        client: an httpx client owned by the caller (it closes it).
        key_id, secret_key: sent as headers; never logged nor put in a URL.
        base_url: the API root, configurable for proxies and tests.
        feed: ``iex`` (free, real time, one exchange) or ``sip`` (all
            exchanges; free plans cannot query its latest 15 minutes).
        adjustment: ``raw`` (default: adjust on read), ``split``, ``dividend``, ``all``.
        rate_limit: overrides 200 requests per minute.
        extended_hours: keep pre/post-market bars instead of filtering
            intraday bars to the regular session.
        calendar: the exchange calendar (default XNYS).
    """

    def __init__(
        self,
        client: HttpClient,
        *,
        key_id: str,
        secret_key: str,
        base_url: str = "https://data.alpaca.markets",
        feed: str = "iex",
        adjustment: str = "raw",
        rate_limit: RateLimit | None = None,
        extended_hours: bool = False,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self._client = client
        self._headers = {
            "APCA-API-KEY-ID": key_id,
            "APCA-API-SECRET-KEY": secret_key,
            "Accept": "application/json",
        }
        self._secrets = (key_id, secret_key)
        self._url = base_url.rstrip("/") + "/v2/stocks/bars"
        self._actions_url = base_url.rstrip("/") + "/v1/corporate-actions"
        self._feed = feed
        self._adjustment = adjustment
        self._extended = extended_hours
        self._calendar = calendar or get_calendar("XNYS")
        self._capabilities = Capabilities(
            name=NAME,
            timeframes=frozenset(_TIMEFRAMES),
            page_limit=PAGE_LIMIT,
            page_unit=PageUnit.bars,
            # Pre/post-market rows count against `limit` even though we filter them.
            extended_hours=True,
            max_symbols=MAX_SYMBOLS,
            rate_limit=rate_limit or DEFAULT_RATE_LIMIT,
            # IEX is real time on the free plan; SIP's latest 15 minutes are not.
            realtime=feed == "iex",
            basis=Basis(adjustment),
            # Alpaca's bars begin in 2016: an older range would come back empty and be covered.
            history_start=HISTORY_START,
        )

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """Bars with ``start <= ts < end`` for every symbol, all pages followed."""
        if timeframe not in _TIMEFRAMES:
            raise NotSupported(f"{NAME}: timeframe {timeframe.value}")
        if len(symbols) > MAX_SYMBOLS:
            raise NotSupported(f"{NAME}: {len(symbols)} symbols in one request (max {MAX_SYMBOLS})")
        if start < HISTORY_START:
            raise NotSupported(f"{NAME}: bars begin 2016-01-01; [{start}, {end}) starts before")
        if not symbols:
            return {}
        by_key = {s.upper(): s for s in symbols}
        lead = _WEEK_LEAD_S if timeframe == Timeframe.w1 else 0
        params: dict[str, str | int] = {
            "symbols": ",".join(by_key),
            "timeframe": _TIMEFRAMES[timeframe],
            "start": _rfc3339(start - lead),
            "end": _rfc3339(end - 1),
            "limit": PAGE_LIMIT,
            "adjustment": self._adjustment,
            "feed": self._feed,
            "sort": "asc",
        }
        rows: dict[str, list[_Row]] = {s: [] for s in symbols}
        tokens_seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            payload = await get_json(
                self._client,
                self._url,
                provider=NAME,
                params=params,
                headers=self._headers,
                secrets=self._secrets,
            )
            page = mapping(payload, provider=NAME, field="answer")
            self._collect(page, by_key, rows)
            token = page.get("next_page_token")
            if token is None or token == "":
                break
            if not isinstance(token, str) or token in tokens_seen:
                fail_payload(NAME, f"next_page_token {token!r} repeated or not a string")
            tokens_seen.add(token)
            params = {**params, "page_token": token}
            await grant_next_request()  # each page is a request the provider counts
        else:
            fail_payload(NAME, f"more than {_MAX_PAGES} pages; refusing to loop")
        out: dict[str, BarBatch] = {}
        for symbol, symbol_rows in rows.items():
            batch = relabel(BarBatch.from_rows(symbol, timeframe, NAME, symbol_rows), self._calendar)
            batch = session_bars(batch, self._calendar, extended=self._extended)
            out[symbol] = batch.between(start, end)
        return out

    async def fetch_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
        """Forward/reverse splits and cash dividends with ex dates in ``[start, end]`` (module doc)."""
        params: dict[str, str | int] = {
            "symbols": symbol.upper(),
            "types": "forward_split,reverse_split,cash_dividend",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "limit": ACTIONS_LIMIT,
            "sort": "asc",
        }
        out: list[CorporateAction] = []
        tokens_seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            payload = await get_json(
                self._client,
                self._actions_url,
                provider=NAME,
                params=params,
                headers=self._headers,
                secrets=self._secrets,
            )
            page = mapping(payload, provider=NAME, field="answer")
            found = mapping(page.get("corporate_actions") or {}, provider=NAME, field="corporate_actions")
            out.extend(_actions(symbol, found))
            token = page.get("next_page_token")
            if token is None or token == "":
                return within(out, start, end)
            if not isinstance(token, str) or token in tokens_seen:
                fail_payload(NAME, f"next_page_token {token!r} repeated or not a string")
            tokens_seen.add(token)
            params = {**params, "page_token": token}
            await grant_next_request()  # each page is a request the provider counts
        raise bad_payload(NAME, f"{symbol} corporate actions: over {_MAX_PAGES} pages; refusing to loop")

    def _collect(
        self, page: Mapping[str, Any], by_key: Mapping[str, str], rows: dict[str, list[_Row]]
    ) -> None:
        bars = page.get("bars")
        if bars is None:  # no symbol has bars on this page
            return
        for key, raw_rows in mapping(bars, provider=NAME, field="bars").items():
            symbol = by_key.get(str(key).upper())
            if symbol is None:
                fail_payload(NAME, f"answer holds bars for {key!r}, which was not asked for")
            target = rows[symbol]
            for i, raw in enumerate(rows_list(raw_rows, provider=NAME, field=f"bars.{key}")):
                row = mapping(raw, provider=NAME, field=f"bars.{key}[{i}]")
                trades = row.get("n")
                t = _parse_time(row.get("t"))
                bar = f"{symbol} bar {iso(t)}"
                target.append(
                    (
                        t,
                        number(row.get("o"), provider=NAME, field="o", bar=bar),
                        number(row.get("h"), provider=NAME, field="h", bar=bar),
                        number(row.get("l"), provider=NAME, field="l", bar=bar),
                        number(row.get("c"), provider=NAME, field="c", bar=bar),
                        number(row.get("v"), provider=NAME, field="v", bar=bar),
                        optional_number(row.get("vw"), provider=NAME, field="vw", bar=bar),
                        None if trades is None else integer(trades, provider=NAME, field="n", bar=bar),
                    )
                )


def _actions(symbol: str, found: Mapping[str, Any]) -> list[CorporateAction]:
    """The splits and cash dividends of one ``corporate_actions`` page (other kinds are ignored)."""
    out: list[CorporateAction] = []
    for key in ("forward_splits", "reverse_splits", "cash_dividends"):
        for i, raw in enumerate(rows_list(found.get(key) or [], provider=NAME, field=key)):
            where = f"{symbol} {key}[{i}]"
            row = mapping(raw, provider=NAME, field=where)
            answered = row.get("symbol")
            if answered is not None and str(answered).upper() != symbol.upper():
                fail_payload(NAME, f"{key}: asked for {symbol!r}, a row is for {answered!r}")
            ex = iso_date(row.get("ex_date"), provider=NAME, where=where, field="ex_date")
            with refused_as_bad_payload(NAME, where):
                if key == "cash_dividends":
                    out.append(dividend(symbol, ex, row.get("rate"), NAME))
                else:
                    ratio = split_ratio(
                        row.get("old_rate"), row.get("new_rate"), names=("old_rate", "new_rate")
                    )
                    out.append(split(symbol, ex, ratio, NAME))
    return out
