"""A deterministic synthetic provider, for the offline demo and the end-to-end tests.

Every number is a pure function of ``(seed, symbol, session date, minute of
the session)``, so any slicing of a range returns the same bars, and every
timeframe is an exact aggregate of one minute-bar "truth":

* a daily level per symbol: a bounded random walk of per-session returns
  accumulated from the calendar's first session (computed once per symbol);
* each session's minute path: a Brownian bridge from that day's open level to
  its close level, with wicks, a U-shaped volume profile, a vwap inside the
  bar's range and a trade count; about 3 % of minutes have no trades and
  therefore no bar, as in real data. Prices are rounded to cents, volumes are
  integers;
* coarser bars aggregate the minutes whose ``calendar.bucket(timeframe, ts)``
  is their label: open first, high max, low min, close last, volume sum, vwap
  volume-weighted, trade count sum.

Random numbers come from a counter-based hash (splitmix64) of those keys,
not from a sequential generator, so generating a two-year range is a handful
of vectorized numpy passes with no per-session Python work.

Regular hours only. Bars still forming at ``now()`` (``calendar.bar_end >
now``) are never returned.

Corporate actions: one symbol, ``SPLT`` (:data:`SPLIT_SYMBOL`), has a 4:1
split ex on 2024-06-10 (:data:`SPLIT_EX_DATE`) and a quarterly cash dividend
ex on the first session on or after the 15th of February, May, August and
November ($0.88 a share before the split, $0.22 after). Its raw bars before
the split are the generated prices times 4 (volumes as generated), so they
jump at the split and its split-adjusted prices are exactly the generated,
continuous ones. :meth:`SyntheticProvider.fetch_actions` publishes them;
every other symbol has none.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from barfill.domain.actions import CorporateAction, dividend, split
from barfill.domain.bars import F64, I64, BarBatch
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, PageUnit, RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, NotSupported, ProviderError

U64 = npt.NDArray[np.uint64]

MISSING_MINUTE_RATE = 0.03
_DAY = 86_400
_BLOCK_SESSIONS = 512  # generate at most this many sessions at once (bounds memory)
_GRID_CACHE = 8  # session blocks kept (a full block: ~200k minutes, ~10 MB of shared arrays)
_DAILY_CACHE = 2_048  # symbols whose daily levels are kept (~110 kB each on XNYS)
_K_DAY = np.uint64(0x9E3779B97F4A7C15)
_K_MINUTE = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_PI = 2.0 * np.pi
_TO_UNIT = 2.0**-32
_LOW32 = np.uint64(0xFFFFFFFF)
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "trade_count")

SPLIT_SYMBOL = "SPLT"
SPLIT_EX_DATE = dt.date(2024, 6, 10)
SPLIT_RATIO = 4.0
DIVIDEND_CASH = 0.88  # per share before the split; / SPLIT_RATIO after it
_DIVIDEND_MONTHS = (2, 5, 8, 11)


def _mix(x: U64) -> U64:
    """splitmix64's finalizer: a bijective, well-scrambled uint64 -> uint64 (wraps on purpose)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _key(*parts: object) -> np.uint64:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _uniforms(base: U64, key: np.uint64) -> tuple[F64, F64]:
    """Two independent uniforms in [0, 1) per element, from one 64-bit hash."""
    h = _mix(base + key)
    return (h >> np.uint64(32)).astype(np.float64) * _TO_UNIT, (h & _LOW32).astype(np.float64) * _TO_UNIT


def _normal(base: U64, key: np.uint64) -> F64:
    u1, u2 = _uniforms(base, key)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(_TWO_PI * u2)


@dataclass
class _Grid:
    """Every minute of sessions [i0, i1) (regular hours), shared by all symbols."""

    i0: int
    i1: int
    ts: I64
    session: I64  # absolute session index of each minute
    minute: I64  # minute number inside its session
    n: I64  # minutes in each minute's session
    first: I64  # offset of each session's first minute in the arrays
    base: U64  # hash input: (session date, minute)
    labels: dict[Timeframe, I64] = field(default_factory=dict)


@dataclass(frozen=True)
class _Daily:
    """Per-symbol constants and per-session log levels (open and close) over the whole calendar."""

    log_open: F64
    log_close: F64
    sigma_minute: float
    volume_per_minute: float
    keys: tuple[np.uint64, ...]


class SyntheticProvider:
    """Seeded random-walk bars on the trading calendar; implements :class:`barfill.ports.Provider`.

    Args:
        calendar: the trading calendar (XNYS by default).
        latency_s: awaited before every answer, to exercise concurrency.
        failure_rate: probability that a fetch raises a retryable
            ``ProviderError("synthetic_fault")``; decided by a hash of the
            request and its attempt number, so a retry of the same request
            can succeed, and runs are reproducible.
        seed: changes every number.
        rate_limit: the declared limit (default 100 requests/s).
        page_limit: declared bars per request (the planner sizes slices by it).
        name: the provider name stamped on bars.
        now: clock (Unix seconds) deciding which bars are still forming.

    Attributes:
        requests: how many times :meth:`fetch` was called.
        request_log: ``(symbols, timeframe, start, end)`` of every fetch call.
        action_requests: how many times :meth:`fetch_actions` was called.
    """

    def __init__(
        self,
        *,
        calendar: TradingCalendar | None = None,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        rate_limit: RateLimit | None = None,
        page_limit: int = 50_000,
        name: str = "synthetic",
        now: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise InvalidInput("failure_rate", "a probability between 0 and 1", failure_rate)
        if latency_s < 0:
            raise InvalidInput("latency_s", "seconds >= 0", latency_s)
        self.calendar = calendar or get_calendar()
        self.latency_s = latency_s
        self.failure_rate = failure_rate
        self.seed = seed
        self.name = name
        self.now = now
        self.requests = 0
        self.action_requests = 0
        self.request_log: list[tuple[tuple[str, ...], Timeframe, int, int]] = []
        self._attempts: dict[tuple[tuple[str, ...], Timeframe, int, int], int] = {}
        self._daily: OrderedDict[str, _Daily] = OrderedDict()
        self._grids: OrderedDict[tuple[int, int], _Grid] = OrderedDict()
        self._capabilities = Capabilities(
            name=name,
            timeframes=frozenset(Timeframe),
            page_limit=page_limit,
            page_unit=PageUnit.bars,
            max_symbols=50,
            rate_limit=rate_limit or RateLimit(requests=100, period_s=1.0),
            realtime=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """Bars with ``start <= ts < end`` per symbol, complete at ``now()``; see the module doc."""
        key = (tuple(symbols), timeframe, int(start), int(end))
        self.requests += 1
        self.request_log.append(key)
        if len(key[0]) > self._capabilities.max_symbols:
            raise NotSupported(f"{self.name}: at most {self._capabilities.max_symbols} symbols per request")
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if self.failure_rate > 0:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            draw = int(_key(self.seed, "fault", *key, attempt)) / 2.0**64
            if draw < self.failure_rate:
                raise ProviderError(
                    "synthetic_fault", f"injected failure (attempt {attempt + 1})", retryable=True
                )
        return {s: self.truth(s, timeframe, start, end) for s in dict.fromkeys(key[0])}

    async def aclose(self) -> None:
        """Nothing to release; present for the protocol."""

    async def fetch_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
        """SPLT's split and dividends with ``start <= ex_date <= end`` (see the module doc); else none."""
        self.action_requests += 1
        if symbol.upper() != SPLIT_SYMBOL:
            return []
        out: list[CorporateAction] = []
        if start <= SPLIT_EX_DATE <= end:
            out.append(split(SPLIT_SYMBOL, SPLIT_EX_DATE, SPLIT_RATIO, provider=self.name))
        for ex in self.dividend_dates(start, end):
            cash = DIVIDEND_CASH if ex < SPLIT_EX_DATE else DIVIDEND_CASH / SPLIT_RATIO
            out.append(dividend(SPLIT_SYMBOL, ex, cash, provider=self.name))
        return sorted(out, key=lambda a: (a.ex_date, a.kind.value))

    def dividend_dates(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """SPLT's dividend ex dates in ``[start, end]``: the first session on or after each quarter's 15th."""
        dates = self.calendar.dates
        out: list[dt.date] = []
        for year in range(start.year, end.year + 1):
            for month in _DIVIDEND_MONTHS:
                day = np.datetime64(dt.date(year, month, 15), "D")
                i = int(np.searchsorted(dates, day))
                # Before the calendar's first session there is no session "on or after" to find.
                if i < len(dates) and (i > 0 or dates[0] == day):
                    ex = dates[i].astype(dt.date)
                    if start <= ex <= end:
                        out.append(ex)
        return out

    def truth(self, symbol: str, timeframe: Timeframe, start: int, end: int) -> BarBatch:
        """The bars :meth:`fetch` returns for ``symbol`` (same numbers), without faults or latency.

        ``ts`` in [start, end), Unix seconds UTC; bars still forming at
        ``now()`` are left out, as in :meth:`fetch`.
        """
        timeframe = Timeframe.parse(timeframe)
        self.calendar.check_range(start, end)
        # w1 bars span sessions that may fall in different blocks: build them from d1.
        base_tf = Timeframe.d1 if timeframe == Timeframe.w1 else timeframe
        i0, i1 = self._session_range(timeframe, start, end)
        parts = [
            self._bars(symbol, base_tf, self._grid(a, min(a + _BLOCK_SESSIONS, i1)))
            for a in range(i0, i1, _BLOCK_SESSIONS)
        ]
        if not parts:
            return BarBatch.empty(symbol, timeframe, self.name)
        batch = parts[0] if len(parts) == 1 else BarBatch.concat(parts)
        if timeframe == Timeframe.w1:
            columns = {c: getattr(batch, c) for c in _VALUE_COLUMNS}
            batch = aggregate(
                symbol, timeframe, self.name, self.calendar.bucket(timeframe, batch.ts), columns
            )
        keep = (batch.ts >= start) & (batch.ts < end)
        keep &= self.calendar.bar_end(timeframe, batch.ts) <= self.now()
        return batch.take(keep)

    # -- generation ---------------------------------------------------------------

    def _session_range(self, timeframe: Timeframe, start: int, end: int) -> tuple[int, int]:
        """Sessions holding a minute of some bar labelled in [start, end)."""
        cal = self.calendar
        if timeframe.intraday:
            return cal.session_indices(start, end + timeframe.seconds)
        # d1 labels are session midnights; a w1 label precedes its sessions by < 7 days.
        pad = 0 if timeframe == Timeframe.d1 else 8 * _DAY
        i0 = int(np.searchsorted(cal.midnights, start, side="left"))
        i1 = int(np.searchsorted(cal.midnights, end + pad, side="left"))
        return i0, max(i0, i1)

    def _grid(self, i0: int, i1: int) -> _Grid:
        grid = self._grids.get((i0, i1))
        if grid is not None:
            self._grids.move_to_end((i0, i1))
            return grid
        cal = self.calendar
        opens = cal.opens[i0:i1]
        counts = (cal.closes[i0:i1] - opens) // 60
        total = int(counts.sum())
        first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        local = np.repeat(np.arange(i1 - i0, dtype=np.int64), counts)
        minute = np.arange(total, dtype=np.int64) - first[local]
        days = cal.dates[i0:i1].astype(np.int64)
        base = days[local].astype(np.uint64) * _K_DAY + minute.astype(np.uint64) * _K_MINUTE
        grid = _Grid(
            i0=i0,
            i1=i1,
            ts=np.repeat(opens, counts) + 60 * minute,
            session=local + i0,
            minute=minute,
            n=counts[local],
            first=first,
            base=base,
        )
        self._grids[(i0, i1)] = grid
        if len(self._grids) > _GRID_CACHE:
            self._grids.popitem(last=False)
        return grid

    def _labels(self, grid: _Grid, timeframe: Timeframe) -> I64:
        labels = grid.labels.get(timeframe)
        if labels is None:
            cal = self.calendar
            if timeframe == Timeframe.m1:
                labels = grid.ts
            elif timeframe == Timeframe.d1:
                labels = cal.midnights[grid.session]
            else:
                labels = cal.bucket(timeframe, grid.ts)
            grid.labels[timeframe] = labels
        return labels

    def _daily_for(self, symbol: str) -> _Daily:
        daily = self._daily.get(symbol)
        if daily is not None:
            self._daily.move_to_end(symbol)
            return daily
        keys = tuple(_key(self.seed, symbol, stream) for stream in range(8))
        u = [x / 2.0**64 for x in (int(_key(self.seed, symbol, "p", i)) for i in range(3))]
        price0, sigma_day = 20.0 + 380.0 * u[0], 0.01 + 0.015 * u[1]
        days = self.calendar.dates.astype(np.int64).astype(np.uint64) * _K_DAY
        walk = np.cumsum(sigma_day * _normal(days, keys[5]))
        # A bounded walk (tanh) keeps 25 years of prices positive and plausible.
        span = 1.5
        log_close = np.log(price0) + span * np.tanh(walk / span)
        prev = np.concatenate(([np.log(price0)], log_close[:-1]))
        log_open = prev + 0.3 * sigma_day * _normal(days, keys[6])
        daily = _Daily(
            log_open=log_open,
            log_close=log_close,
            sigma_minute=sigma_day / np.sqrt(390.0),
            volume_per_minute=10.0 ** (6.0 + 1.3 * u[2]) / 390.0,
            keys=keys,
        )
        self._daily[symbol] = daily
        if len(self._daily) > _DAILY_CACHE:
            self._daily.popitem(last=False)
        return daily

    def _minutes(self, symbol: str, grid: _Grid) -> dict[str, npt.NDArray[np.generic]]:
        """Every present minute bar of ``symbol`` in ``grid`` (columns plus the ``index`` kept)."""
        d = self._daily_for(symbol)
        k = d.keys
        n = grid.n.astype(np.float64)
        frac = (grid.minute + 1) / n
        eps = d.sigma_minute * _normal(grid.base, k[0])
        csum = np.cumsum(eps)
        local = grid.session - grid.i0
        before = np.concatenate(([0.0], csum))[grid.first]  # sum of eps before each session
        last = np.append(grid.first[1:], len(csum)) - 1
        walk = csum - before[local]
        seg_total = (csum[last] - before)[local]
        lo, lc = d.log_open[grid.session], d.log_close[grid.session]
        log_close = lo + walk - frac * seg_total + frac * (lc - lo)
        log_open = np.empty_like(log_close)
        log_open[1:] = log_close[:-1]
        log_open[grid.first] = d.log_open[grid.i0 : grid.i1]
        open_, close = np.round(np.exp(log_open), 2), np.round(np.exp(log_close), 2)
        u_missing, u_vwap = _uniforms(grid.base, k[1])
        u_high, u_low = _uniforms(grid.base, k[2])
        wick = 0.6 * d.sigma_minute
        high = np.round(np.maximum(open_, close) * np.exp(-wick * np.log1p(-u_high)), 2)
        low = np.round(np.minimum(open_, close) * np.exp(wick * np.log1p(-u_low)), 2)
        high = np.maximum(high, np.maximum(open_, close))
        low = np.maximum(np.minimum(low, np.minimum(open_, close)), 0.01)
        x = 2.0 * frac - 1.0
        profile = 0.5 + 1.5 * x * x
        noise = np.exp(0.5 * _normal(grid.base, k[3]) - 0.125)
        volume = np.floor(d.volume_per_minute * profile * noise) + 1.0
        u_size, _ = _uniforms(grid.base, k[4])
        trades = np.maximum(1, (volume / (20.0 + 80.0 * u_size)).astype(np.int64))
        vwap = np.round(low + (high - low) * (0.25 + 0.5 * u_vwap), 4)
        if symbol == SPLIT_SYMBOL:  # raw prices: x4 before the split (exact: a power of two)
            before = self.calendar.dates[grid.session] < np.datetime64(SPLIT_EX_DATE, "D")
            scale = np.where(before, SPLIT_RATIO, 1.0)
            open_, high, low, close, vwap = (x * scale for x in (open_, high, low, close, vwap))
        keep = u_missing >= MISSING_MINUTE_RATE
        return {
            "index": np.flatnonzero(keep),
            "open": open_[keep],
            "high": high[keep],
            "low": low[keep],
            "close": close[keep],
            "volume": volume[keep],
            "vwap": vwap[keep],
            "trade_count": trades[keep],
        }

    def _bars(self, symbol: str, timeframe: Timeframe, grid: _Grid) -> BarBatch:
        m = self._minutes(symbol, grid)
        labels = self._labels(grid, timeframe)[m["index"]]
        if timeframe == Timeframe.m1:
            columns = [np.asarray(m[c]) for c in _VALUE_COLUMNS]
            return BarBatch(symbol, timeframe, self.name, np.asarray(labels, dtype=np.int64), *columns)
        return aggregate(symbol, timeframe, self.name, labels, m)


def aggregate(
    symbol: str,
    timeframe: Timeframe,
    provider: str,
    labels: I64,
    minutes: dict[str, npt.NDArray[np.generic]],
) -> BarBatch:
    """Aggregate time-ordered minute columns into bars, one per run of equal ``labels``."""
    if len(labels) == 0:
        return BarBatch.empty(symbol, timeframe, provider)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(labels)) + 1))
    ends = np.append(starts[1:], len(labels))
    volume = np.asarray(minutes["volume"], dtype=np.float64)
    vwap = np.asarray(minutes["vwap"], dtype=np.float64)
    vol_sum = np.add.reduceat(volume, starts)
    return BarBatch(
        symbol,
        timeframe,
        provider,
        ts=np.asarray(labels[starts], dtype=np.int64),
        open=np.asarray(minutes["open"], dtype=np.float64)[starts],
        high=np.maximum.reduceat(np.asarray(minutes["high"], dtype=np.float64), starts),
        low=np.minimum.reduceat(np.asarray(minutes["low"], dtype=np.float64), starts),
        close=np.asarray(minutes["close"], dtype=np.float64)[ends - 1],
        volume=vol_sum,
        vwap=np.add.reduceat(vwap * volume, starts) / vol_sum,
        trade_count=np.add.reduceat(np.asarray(minutes["trade_count"], dtype=np.int64), starts),
    )
