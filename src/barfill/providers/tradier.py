"""Tradier market data: ``/v1/markets/timesales`` (intraday) and ``/v1/markets/history`` (d1/w1).

Wire contract, as documented and as this adapter relies on it:

* Auth ``Authorization: Bearer <token>``, ``Accept: application/json``.
* Timesales: ``symbol``, ``interval`` (``1min`` ``5min`` ``15min``),
  ``start``/``end`` as ``YYYY-MM-DD HH:MM`` **New York** time,
  ``session_filter=open`` (regular session only). We send ``start`` floored
  and ``end`` rounded up to the minute and keep ``start <= ts < end``
  ourselves, so it does not matter whether Tradier's ``end`` is inclusive.
  Answer ``{series: {data: [{time, timestamp, open, high, low, close, volume,
  vwap, price}]}}``: ``time`` is New York local time without an offset,
  ``timestamp`` Unix seconds of the bar start. When both are present they
  must agree (a disagreement is ``bad_payload``, not a guess).
* History: ``symbol``, ``interval`` (``daily`` ``weekly``), ``start``/``end``
  as ``YYYY-MM-DD`` (inclusive). Answer ``{history: {day: [{date, open, high,
  low, close, volume}]}}``. ``date`` is read as the session date (d1) or a
  day of the week (w1, see :func:`~barfill.providers.http.weekly_labels`).
* A single row can come as an object instead of a list; no data comes as
  ``{series: null}`` / ``{history: null}`` (also accepted: the string
  ``"null"``), an empty, covered range.
* Reach with ``session_filter=open``: 1min 20 days, 5min and 15min 40 days
  (counted here as calendar days, the conservative reading). Asking for
  older bars raises ``NotSupported`` rather than recording a partial answer
  as covered. No hourly bars (the engine resamples h1/h4 from m15).
* Rate limit per token per minute: 120 assumed (documented range 60-120,
  exact figure unconfirmed); 429 with ``Retry-After`` if sent.
* Serves today's session (``realtime=True``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.providers.http import (
    HttpAdapter,
    HttpClient,
    bad_payload,
    check_reach,
    fail_payload,
    get_json,
    integer,
    iso,
    mapping,
    number,
    optional_number,
    relabel,
    session_bars,
)

NAME = "tradier"
PAGE_LIMIT = 10_000  # no pagination: one answer holds the whole (reach-limited) range
DEFAULT_RATE_LIMIT = RateLimit(requests=120, period_s=60.0)
_NEW_YORK = ZoneInfo("America/New_York")  # Tradier's parameters and `time` fields
_INTRADAY: dict[Timeframe, str] = {Timeframe.m1: "1min", Timeframe.m5: "5min", Timeframe.m15: "15min"}
_HISTORY: dict[Timeframe, str] = {Timeframe.d1: "daily", Timeframe.w1: "weekly"}
_HISTORY_DAYS = {Timeframe.m1: 20, Timeframe.m5: 40, Timeframe.m15: 40}
_WEEK_LEAD = timedelta(days=2)

_Row = tuple[int, float, float, float, float, float, float | None, int | None]


def _as_rows(value: Any, field: str) -> list[Any]:
    """Tradier's list-or-single-object-or-null, as a list."""
    if value is None or value == "null":
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise bad_payload(NAME, f"{field}: expected a list, an object or null, got {type(value).__name__}")


def _local(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, _NEW_YORK)


class TradierProvider(HttpAdapter):
    """Intraday (1/5/15 min) and daily/weekly bars from Tradier, one symbol per request.

    Args:
        client: an httpx client owned by the caller (it closes it).
        token: the bearer token; never logged nor put in a URL.
        base_url: the API root (``https://sandbox.tradier.com`` for the sandbox).
        rate_limit: overrides 120 requests per minute.
        calendar: the exchange calendar (default XNYS).
        clock: Unix seconds now, to refuse requests beyond Tradier's reach.
    """

    def __init__(
        self,
        client: HttpClient,
        *,
        token: str,
        base_url: str = "https://api.tradier.com",
        rate_limit: RateLimit | None = None,
        calendar: TradingCalendar | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._token = token
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._base_url = base_url.rstrip("/")
        self._calendar = calendar or get_calendar("XNYS")
        self._clock = clock
        self._capabilities = Capabilities(
            name=NAME,
            timeframes=frozenset(_INTRADAY) | frozenset(_HISTORY),
            page_limit=PAGE_LIMIT,
            history_days=dict(_HISTORY_DAYS),
            rate_limit=rate_limit or DEFAULT_RATE_LIMIT,
            realtime=True,
        )

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """Bars with ``start <= ts < end`` for each symbol (h1/h4/m30: ``NotSupported``)."""
        check_reach(self._capabilities, timeframe, start, end, self._clock())
        out: dict[str, BarBatch] = {}
        for symbol in symbols:
            if timeframe in _INTRADAY:
                rows = await self._timesales(symbol, timeframe, start, end)
            else:
                rows = await self._history(symbol, timeframe, start, end)
            batch = relabel(BarBatch.from_rows(symbol, timeframe, NAME, rows), self._calendar)
            batch = session_bars(batch, self._calendar, extended=False)
            out[symbol] = batch.between(start, end)
        return out

    async def _get(self, path: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        payload = await get_json(
            self._client,
            f"{self._base_url}{path}",
            provider=NAME,
            params=params,
            headers=self._headers,
            secrets=(self._token,),
        )
        return mapping(payload, provider=NAME, field="answer")

    async def _timesales(self, symbol: str, timeframe: Timeframe, start: int, end: int) -> list[_Row]:
        end_minute = -(-end // 60) * 60
        page = await self._get(
            "/v1/markets/timesales",
            {
                "symbol": symbol,
                "interval": _INTRADAY[timeframe],
                "start": _local(start).strftime("%Y-%m-%d %H:%M"),
                "end": _local(end_minute).strftime("%Y-%m-%d %H:%M"),
                "session_filter": "open",
            },
        )
        if "series" not in page:
            fail_payload(NAME, f"{symbol}: answer has no 'series' key")
        series = page["series"]
        if series is None or series == "null":
            return []
        data = mapping(series, provider=NAME, field="series").get("data")
        return [self._timesale_row(raw, i) for i, raw in enumerate(_as_rows(data, "series.data"))]

    def _timesale_row(self, raw: Any, i: int) -> _Row:
        row = mapping(raw, provider=NAME, field=f"series.data[{i}]")
        from_time = None
        if row.get("time") is not None:
            try:
                naive = datetime.fromisoformat(str(row["time"]))
            except ValueError:
                fail_payload(NAME, f"series.data[{i}].time: not a date-time: {row['time']!r}")
            if naive.tzinfo is not None:
                fail_payload(NAME, f"series.data[{i}].time: expected New York local time, got an offset")
            from_time = int(naive.replace(tzinfo=_NEW_YORK).timestamp())
        if row.get("timestamp") is not None:
            ts = integer(row["timestamp"], provider=NAME, field="timestamp")
            if from_time is not None and from_time != ts:
                fail_payload(
                    NAME,
                    f"series.data[{i}]: time {row['time']!r} (New York) and timestamp {ts} disagree",
                )
        elif from_time is not None:
            ts = from_time
        else:
            fail_payload(NAME, f"series.data[{i}]: neither 'time' nor 'timestamp'")
        bar = f"bar {iso(ts)}"
        return (
            ts,
            number(row.get("open"), provider=NAME, field="open", bar=bar),
            number(row.get("high"), provider=NAME, field="high", bar=bar),
            number(row.get("low"), provider=NAME, field="low", bar=bar),
            number(row.get("close"), provider=NAME, field="close", bar=bar),
            number(row.get("volume"), provider=NAME, field="volume", bar=bar),
            optional_number(row.get("vwap"), provider=NAME, field="vwap", bar=bar),
            None,
        )

    async def _history(self, symbol: str, timeframe: Timeframe, start: int, end: int) -> list[_Row]:
        first = _local(start).date() - (_WEEK_LEAD if timeframe == Timeframe.w1 else timedelta(0))
        last = _local(end - 1).date()
        page = await self._get(
            "/v1/markets/history",
            {
                "symbol": symbol,
                "interval": _HISTORY[timeframe],
                "start": first.isoformat(),
                "end": last.isoformat(),
            },
        )
        if "history" not in page:
            fail_payload(NAME, f"{symbol}: answer has no 'history' key")
        history = page["history"]
        if history is None or history == "null":
            return []
        history = mapping(history, provider=NAME, field="history")
        if "day" not in history:
            fail_payload(NAME, f"{symbol}: 'history' has no 'day' key (keys: {sorted(history)})")
        out: list[_Row] = []
        for i, raw in enumerate(_as_rows(history["day"], "history.day")):
            row = mapping(raw, provider=NAME, field=f"history.day[{i}]")
            try:
                day = date.fromisoformat(str(row.get("date")))
            except ValueError:
                fail_payload(NAME, f"history.day[{i}].date: not YYYY-MM-DD: {row.get('date')!r}")
            midnight = int(datetime(day.year, day.month, day.day, tzinfo=_NEW_YORK).timestamp())
            bar = f"{symbol} bar {day.isoformat()}"
            out.append(
                (
                    midnight,
                    number(row.get("open"), provider=NAME, field="open", bar=bar),
                    number(row.get("high"), provider=NAME, field="high", bar=bar),
                    number(row.get("low"), provider=NAME, field="low", bar=bar),
                    number(row.get("close"), provider=NAME, field="close", bar=bar),
                    number(row.get("volume"), provider=NAME, field="volume", bar=bar),
                    None,
                    None,
                )
            )
        return out
