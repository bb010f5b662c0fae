"""A market that moves with simulated time, served over the providers' own wire formats.

:class:`Market` turns the deterministic :class:`~tests.integration.providers.servers.Truth`
into what a provider would answer *at the simulated time* of a request:

* a bar exists once its interval has ended (intraday), a day bar once its
  session has opened;
* a session's bars are **provisional** until 20:00 New York (its extended
  close): intraday volumes are short by late reports and the day bar's volume
  grows through the day; from 20:00 on they are **final** and never change;
* each vendor has its own volumes: Polygon (SIP) and its flat files carry the
  final truth; Alpaca's IEX feed sees a few percent of it; Tradier's
  consolidated volume differs by a fixed offset. So a bar stored from the
  wrong source, or before it was final, differs from the final truth.

The ``Timed*Wire`` classes are the existing wire classes (same formats, same
pagination) reading a :class:`Market`, and they record every request:
(server, symbol, timeframe, session, final at request time).
:class:`FlatFolder` publishes Polygon flat files into a folder: a session's
file appears at 07:00 New York the next calendar day.
Everything reads the same clock (a :class:`~barfill.testing.clock.SimClock`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import TradingCalendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.flatfiles import FlatFileProvider
from barfill.providers.synthetic import SyntheticProvider
from tests.integration.providers.servers import (
    NY,
    AlpacaWire,
    Answer,
    PolygonWire,
    TradierWire,
    Truth,
    YahooWire,
    rows,
)

SIP, IEX, TRADIER = "sip", "iex", "tradier"
PUBLISH_HOUR = 7  # flat files of a session appear at 07:00 New York the next calendar day


@dataclass(frozen=True)
class Request:
    """One provider request, as a server saw it, split per (symbol, session)."""

    server: str
    symbol: str
    timeframe: Timeframe
    session: date
    final: bool  # the session had reached its extended close (20:00 New York) at request time
    at: float  # simulated time of the request


class RequestLog:
    """Requests seen by every server of a replay (thread-safe: servers answer in threads)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.calls: Counter[str] = Counter()  # first-page requests per server
        self._lock = threading.Lock()

    def call(self, server: str) -> None:
        with self._lock:
            self.calls[server] += 1

    def add(self, items: Iterable[Request]) -> None:
        with self._lock:
            self.requests.extend(items)

    def final_counts(self) -> Counter[tuple[str, Timeframe, date]]:
        """(symbol, timeframe, session) -> how many requests asked for it once it was final."""
        return Counter((r.symbol, r.timeframe, r.session) for r in self.requests if r.final)

    def by_server(self) -> Counter[str]:
        return Counter(r.server for r in self.requests)


class Market:
    """Ground truth as seen at the simulated time ``clock()``; see the module docstring."""

    def __init__(self, calendar: TradingCalendar, clock: Callable[[], float]) -> None:
        self.calendar = calendar
        self.clock = clock
        self.truth = Truth(calendar, empty=frozenset())

    # -- time ------------------------------------------------------------------

    def session_of(self, label_or_ts: int) -> int:
        """Index of the session whose d1 label (00:00 New York) is at or before ``label_or_ts``."""
        return int(np.searchsorted(self.calendar.midnights, label_or_ts, side="right")) - 1

    def is_final(self, session: int, now: float | None = None) -> bool:
        """Final from the session's extended close on (20:00 New York; 17:00 after an early close).

        The same for every source (the rule the engine agreed on,
        ``barfill.domain.finality``): data may change until then.
        """
        t = self.clock() if now is None else now
        return t >= float(self.calendar.ext_closes[session])

    def session_date(self, session: int) -> date:
        return date.fromisoformat(str(self.calendar.dates[session]))

    def sessions(self, tf: Timeframe, start: int, end: int) -> range:
        """Sessions a request for [start, end) of ``tf`` touches."""
        cal = self.calendar
        if tf.intraday:
            i0, i1 = cal.session_indices(start, end, extended=True)
            return range(i0, i1)
        i0 = int(np.searchsorted(cal.midnights, start, side="left"))
        i1 = int(np.searchsorted(cal.midnights, end, side="left"))
        return range(i0, max(i0, i1))

    # -- bars ------------------------------------------------------------------

    def final_bars(
        self, symbol: str, tf: Timeframe, start: int, end: int, *, extended: bool = False
    ) -> BarBatch:
        """The bars as they are once final (Polygon's SIP numbers): what the store must end with."""
        return self.truth.bars(symbol, tf, start, end, extended=extended)

    def served(
        self, symbol: str, tf: Timeframe, start: int, end: int, *, extended: bool, vendor: str
    ) -> BarBatch:
        """What ``vendor`` answers now for [start, end) of ``tf``."""
        now = self.clock()
        batch = self.truth.bars(symbol, tf, start, end, extended=extended)
        cal = self.calendar
        if len(batch) == 0:
            return batch
        sessions = np.searchsorted(cal.midnights, batch.ts, side="right") - 1
        if tf.intraday:
            exists = cal.bar_end(tf, batch.ts, extended=extended) <= now
        else:
            exists = cal.opens[sessions] <= now
        batch = batch.take(exists)
        sessions = sessions[exists]
        volume = batch.volume.copy()
        open_ = cal.ext_closes[sessions] > now  # not final yet
        if np.any(open_):
            if tf.intraday:
                volume[open_] = np.floor(volume[open_] * 0.9)  # late reports still to come
            else:  # the day's volume grows until 20:00
                start_s = cal.opens[sessions[open_]].astype(np.float64)
                span = cal.ext_closes[sessions[open_]] - cal.opens[sessions[open_]]
                done = np.clip((now - start_s) / span, 0.0, 1.0)
                volume[open_] = np.floor(volume[open_] * (0.3 + 0.6 * done))
        if vendor == IEX:
            volume = np.floor(volume * 0.04) + 1
        elif vendor == TRADIER:
            volume = volume + 7
        return BarBatch(
            batch.symbol,
            batch.timeframe,
            batch.provider,
            batch.ts,
            batch.open,
            batch.high,
            batch.low,
            batch.close,
            volume,
            batch.vwap,
            batch.trade_count,
        )


class _TimedTruth(Truth):
    """A :class:`Truth` whose ``bars`` answer as ``vendor`` at the market's current time."""

    def __init__(self, market: Market, vendor: str) -> None:
        super().__init__(market.calendar, empty=frozenset())
        self.market = market
        self.vendor = vendor

    def bars(self, symbol: str, tf: Timeframe, start: int, end: int, *, extended: bool = False) -> BarBatch:
        return self.market.served(symbol, tf, start, end, extended=extended, vendor=self.vendor)


class _Recording:
    """Mixin for a wire: record each first-page request per (symbol, session), then answer."""

    market: Market
    log: RequestLog
    server: str

    def requested(self, path: str, query: dict[str, str]) -> list[tuple[str, Timeframe, int, int]] | None:
        """(symbol, timeframe, start, end) per symbol of a first-page request; None: a follow-up page."""
        raise NotImplementedError

    def record(self, path: str, query: dict[str, str]) -> None:
        asked = self.requested(path, query)
        if not asked:
            return
        self.log.call(self.server)
        now = self.market.clock()
        self.log.add(
            Request(self.server, symbol, tf, self.market.session_date(i), self.market.is_final(i, now), now)
            for symbol, tf, start, end in asked
            for i in self.market.sessions(tf, start, end)
        )


class TimedPolygonWire(_Recording, PolygonWire):
    def __init__(self, market: Market, log: RequestLog, api_key: str = "pk") -> None:
        PolygonWire.__init__(self, _TimedTruth(market, SIP), api_key)
        self.market, self.log, self.server = market, log, "polygon"
        self.page_size = 50_000  # one page per request: a request is one fetch

    def requested(self, path: str, query: dict[str, str]) -> list[tuple[str, Timeframe, int, int]] | None:
        parts = path.strip("/").split("/")
        if "cursor" in query or len(parts) != 9:
            return None
        tf = self.SPANS[(parts[5], parts[6])]
        return [(parts[3], tf, int(parts[7]) // 1000, int(parts[8]) // 1000 + 1)]

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        self.record(path, query)
        return PolygonWire.answer(self, path, query, headers)


class TimedAlpacaWire(_Recording, AlpacaWire):
    def __init__(self, market: Market, log: RequestLog, key_id: str = "ak", secret: str = "as") -> None:
        AlpacaWire.__init__(self, _TimedTruth(market, IEX), key_id, secret)
        self.market, self.log, self.server = market, log, "alpaca"
        self.page_size = 50_000

    def requested(self, path: str, query: dict[str, str]) -> list[tuple[str, Timeframe, int, int]] | None:
        if "page_token" in query or path != "/v2/stocks/bars":
            return None
        tf = self.FRAMES[query["timeframe"]]
        start = int(datetime.fromisoformat(query["start"]).timestamp())
        end = int(datetime.fromisoformat(query["end"]).timestamp()) + 1
        return [(s, tf, start, end) for s in query["symbols"].split(",")]

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        self.record(path, query)
        return AlpacaWire.answer(self, path, query, headers)


class TimedTradierWire(_Recording, TradierWire):
    def __init__(self, market: Market, log: RequestLog, token: str = "tt") -> None:
        TradierWire.__init__(self, _TimedTruth(market, TRADIER), token)
        self.market, self.log, self.server = market, log, "tradier"

    def requested(self, path: str, query: dict[str, str]) -> list[tuple[str, Timeframe, int, int]] | None:
        symbol = query.get("symbol", "")
        if path == "/v1/markets/timesales":
            tf = self.INTERVALS[query["interval"]]
            start, end = (
                int(datetime.strptime(query[k], "%Y-%m-%d %H:%M").replace(tzinfo=NY).timestamp())
                for k in ("start", "end")
            )
            return [(symbol, tf, start, end)]
        if path == "/v1/markets/history":
            tf = {"daily": Timeframe.d1, "weekly": Timeframe.w1}[query["interval"]]
            first, last = date.fromisoformat(query["start"]), date.fromisoformat(query["end"])
            return [(symbol, tf, _midnight(first), _midnight(last + timedelta(days=1)))]
        return None

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        self.record(path, query)
        return TradierWire.answer(self, path, query, headers)


class TimedYahooWire(_Recording, YahooWire):
    def __init__(self, market: Market, log: RequestLog) -> None:
        YahooWire.__init__(self, _TimedTruth(market, SIP))
        self.market, self.log, self.server = market, log, "yahoo"

    def requested(self, path: str, query: dict[str, str]) -> list[tuple[str, Timeframe, int, int]] | None:
        if not path.startswith("/v8/finance/chart/"):
            return None
        tf = self.INTERVALS[query["interval"]]
        return [(path.rsplit("/", 1)[-1], tf, int(query["period1"]), int(query["period2"]))]

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        self.record(path, query)
        return YahooWire.answer(self, path, query, headers)


def _midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=NY).timestamp())


# -- flat files and the in-process providers -------------------------------------------------


class FlatFolder:
    """Polygon flat files (minute and day aggregates, SIP) appearing as simulated time passes.

    :meth:`publish` writes the files of every session from ``since`` whose
    publication time (07:00 New York the calendar day after the session) has
    come; call it whenever the clock moves (the replay does, at each step).
    """

    def __init__(self, root: Path, market: Market, symbols: Sequence[str], since: date) -> None:
        self.root = Path(root)
        self.market = market
        self.symbols = list(symbols)
        self.since = since
        self.published: list[date] = []

    def publish_time(self, session: int) -> int:
        d = self.market.session_date(session) + timedelta(days=1)
        return int(datetime(d.year, d.month, d.day, PUBLISH_HOUR, tzinfo=NY).timestamp())

    def publish(self) -> list[date]:
        """Write the files now due; returns the session dates written by this call."""
        cal = self.market.calendar
        now = self.market.clock()
        i0 = int(np.searchsorted(cal.midnights, _midnight(self.since), side="left"))
        new: list[date] = []
        i = i0
        while i < len(cal.midnights) and self.publish_time(i) <= now:
            day = self.market.session_date(i)
            if day not in self.published:
                self._write(i, day)
                self.published.append(day)
                new.append(day)
            i += 1
        return new

    def _write(self, session: int, day: date) -> None:
        cal = self.market.calendar
        lo, hi = int(cal.midnights[session]), int(cal.midnights[session]) + 86_400
        for folder, tf in (("minute_aggs_v1", Timeframe.m1), ("day_aggs_v1", Timeframe.d1)):
            path = self.root / "us_stocks_sip" / folder / f"{day.year}" / f"{day.month:02d}" / f"{day}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = ["ticker,volume,open,close,high,low,window_start,transactions"]
            for symbol in self.symbols:
                batch = self.market.served(symbol, tf, lo, hi, extended=True, vendor=SIP)
                for t, o, h, low, c, v, _, n in rows(batch):
                    lines.append(f"{symbol},{v:.0f},{o},{c},{h},{low},{t * 1_000_000_000},{n}")
            path.write_text("\n".join(lines) + "\n")


class RecordingFlatFiles(FlatFileProvider):
    """The real flat-file provider, recording each request like the HTTP servers do."""

    def __init__(self, root: Path, market: Market, log: RequestLog) -> None:
        super().__init__(root, calendar=market.calendar, now=market.clock)
        self.market, self.log = market, log

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        # Recorded once served: a file not published yet costs nothing and serves nothing.
        now = self.market.clock()
        out = await super().fetch(symbols, timeframe, start, end)
        self.log.call("flatfiles")
        self.log.add(
            Request("flatfiles", s, timeframe, self.market.session_date(i), self.market.is_final(i, now), now)
            for s in dict.fromkeys(symbols)
            for i in self.market.sessions(timeframe, start, end)
        )
        return out


class RecordingSynthetic(SyntheticProvider):
    """The synthetic provider on the simulated clock, recording each request per session.

    Its numbers never change once a bar has ended, but a session counts as
    final only from its extended close, as for every other source.
    """

    def __init__(self, market: Market, log: RequestLog, **kwargs: Any) -> None:
        super().__init__(calendar=market.calendar, now=market.clock, **kwargs)
        self.market, self.log = market, log

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        now = self.market.clock()
        self.log.call("synthetic")
        self.log.add(
            Request(
                "synthetic",
                s,
                timeframe,
                self.market.session_date(i),
                self.market.is_final(i, now),
                now,
            )
            for s in dict.fromkeys(symbols)
            for i in self.market.sessions(timeframe, start, end)
        )
        return await super().fetch(symbols, timeframe, start, end)
