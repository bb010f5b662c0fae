"""Providers that read bars from local files: Polygon flat files, or any CSV/Parquet.

Bulk history is often cheapest as files: Polygon publishes one CSV(.gz) per
trading day with every ticker's minute or day aggregates, and many users
keep their own CSV or Parquet exports. These providers read such a folder
and answer like any other provider, so the engine fills gaps from it.

Rules shared by both:

* Files are per session date (a pattern with a date field) or per symbol.
  A per-date file that is missing for a recent trading day (closed less than
  :data:`PUBLISH_GRACE_S` ago) is :class:`~barfill.errors.NotPublishedYet`:
  retryable, after :data:`NOT_PUBLISHED_RETRY_S` (Polygon publishes a day's
  file the next morning), so a slow retry takes one attempt an hour, not
  five in a minute. Missing for an older day it is a non-retryable
  ``ProviderError("missing_file")`` naming the file (not downloaded: the
  scheduler still tries again after its cool-down). A closed day has no
  file and none is looked for. A session not final at ``now()`` (see
  :mod:`barfill.domain.finality`: its extended close, or its publication
  time ``published_at_local_s``; Polygon's flat files: 07:00 New York the
  next calendar day) is never served from files (:class:`NotSupported`); the
  planner and worker wait for it instead of asking. A per-symbol file that is
  missing means this provider does not have that symbol (:class:`NotSupported`).
* Intraday bars are filtered to the regular session on every day, first and
  last included, as the HTTP adapters do (files hold pre/post-market minutes).
* ``x.csv.gz`` and ``x.csv`` are interchangeable: whichever exists is read.
* Duplicate rows for the same (symbol, bar) happen in providers' own data;
  the first in file order is kept, so the result is deterministic.
* d1 bars are stamped with barfill's d1 label, 00:00 exchange-local of the
  session date: taken from the file's date when files are per date, else
  from the timestamp (a timestamp at exactly 00:00 UTC is read as a date).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import string
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from barfill.domain.actions import CorporateAction, dividend, split, split_ratio
from barfill.domain.bars import I64, BarBatch
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import Capabilities, PageUnit, RateLimit
from barfill.domain.finality import session_final_at
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, NotPublishedYet, NotSupported, ProviderError
from barfill.providers.actions import within
from barfill.providers.http import session_bars

if TYPE_CHECKING:  # polars is imported where files are read: a worker without flat files never loads it
    import polars as pl

TsUnit = Literal["s", "ms", "us", "ns"]

_DAY = 86_400
# A day's file may still appear this long after its close (a holiday weekend after a
# Thursday: published on Friday's morning at the latest; margin for late downloads).
PUBLISH_GRACE_S = 4 * _DAY
# Until then ask again hourly: one attempt an hour, not the backoff's quick burst.
NOT_PUBLISHED_RETRY_S = 3600.0
_PER_SECOND: dict[str, int] = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_REQUIRED = ("ts", "open", "high", "low", "close", "volume")
_OPTIONAL = ("vwap", "trade_count", "symbol")
_DATE_FIELDS = {"date", "year", "month", "day"}
# Reading local files is cheap; this limit only keeps one worker from starving others.
_LOCAL_RATE = RateLimit(requests=1_000, period_s=1.0)
# Polygon publishes a session's flat files the next morning: 07:00 New York the next calendar day.
PUBLISHED_AT_LOCAL_S = 86_400 + 7 * 3600

POLYGON_COLUMNS: dict[str, str] = {
    "symbol": "ticker",
    "ts": "window_start",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "trade_count": "transactions",
}


class GenericFileProvider:
    """Bars of one timeframe from CSV(.gz) or Parquet files; implements :class:`barfill.ports.Provider`.

    Args:
        path_pattern: a ``str.format`` pattern with any of ``{symbol}``,
            ``{date}`` (``YYYY-MM-DD``), ``{year}``, ``{month}``, ``{day}``
            (ints: write ``{month:02d}``). With a date field there is one file
            per session; otherwise one per symbol (without ``{symbol}``, one
            file for everything). ``.parquet``/``.pq`` is read as Parquet,
            anything else as CSV.
        column_map: barfill column -> file column. Needs ``ts open high low
            close volume``; may have ``vwap``, ``trade_count``, and ``symbol``
            (required unless the pattern has ``{symbol}``).
        ts_unit: unit of a numeric ``ts`` column (bar open time, UTC);
            Parquet timestamp columns are converted whatever their unit.
        timeframe: the one timeframe the files hold.
        calendar: the exchange calendar (XNYS by default).
        name: provider name stamped on bars.
        now: clock (Unix seconds) telling final sessions from the others
            (bootstrap passes the database clock).
        published_at_local_s: when a session's file is published, in seconds
            after local midnight of its date (None: at its extended close).
    """

    def __init__(
        self,
        path_pattern: str,
        column_map: Mapping[str, str],
        ts_unit: TsUnit,
        timeframe: Timeframe,
        *,
        calendar: TradingCalendar | None = None,
        name: str = "files",
        now: Callable[[], float] = time.time,
        published_at_local_s: int | None = None,
    ) -> None:
        fields = {f for _, f, _, _ in string.Formatter().parse(path_pattern) if f}
        unknown = fields - _DATE_FIELDS - {"symbol"}
        if unknown:
            raise InvalidInput(
                "path_pattern", "fields among {symbol} {date} {year} {month} {day}", path_pattern
            )
        missing = [c for c in _REQUIRED if c not in column_map]
        extra = [c for c in column_map if c not in _REQUIRED + _OPTIONAL]
        if missing or extra:
            raise InvalidInput(
                "column_map", f"keys {' '.join(_REQUIRED)} [+ {' '.join(_OPTIONAL)}]", column_map
            )
        if "symbol" not in fields and "symbol" not in column_map:
            raise InvalidInput("column_map", "a 'symbol' column when the path has no {symbol}", column_map)
        if ts_unit not in _PER_SECOND:
            raise InvalidInput("ts_unit", "one of s ms us ns", ts_unit)
        self.path_pattern = path_pattern
        self.column_map = dict(column_map)
        self.ts_unit = ts_unit
        self.timeframe = Timeframe.parse(timeframe)
        self.calendar = calendar or get_calendar()
        self.name = name
        self.now = now
        self.per_date = bool(fields & _DATE_FIELDS)
        self.per_symbol = "symbol" in fields
        self._capabilities = Capabilities(
            name=name,
            timeframes=frozenset({self.timeframe}),
            page_limit=1_000_000,
            page_unit=PageUnit.bars,
            extended_hours=self.timeframe.intraday,
            max_symbols=1 if self.per_symbol else 100,
            rate_limit=_LOCAL_RATE,
            published_at_local_s=published_at_local_s,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """Bars with ``start <= ts < end`` per symbol, read in a thread (file I/O blocks)."""
        if timeframe != self.timeframe:
            raise NotSupported(f"{self.name}: holds {self.timeframe.value} bars only, not {timeframe.value}")
        return await asyncio.to_thread(self.read, list(dict.fromkeys(symbols)), start, end)

    async def aclose(self) -> None:
        """Nothing to release; present for the protocol."""

    def read(self, symbols: Sequence[str], start: int, end: int) -> dict[str, BarBatch]:
        """The blocking part of :meth:`fetch`."""
        self.calendar.check_range(start, end)
        frames: list[pl.DataFrame] = []
        if self.per_date:
            for i in self._sessions(start, end):
                date = str(self.calendar.dates[i])
                for owner, path in self._paths(symbols, date):
                    found = _existing(path)
                    if found is None:
                        raise self._missing(path, date, float(self.calendar.closes[i]))
                    label = int(self.calendar.midnights[i])
                    frames.append(self._load(found, symbols, owner=owner, day_label=label))
        else:
            for owner, path in self._paths(symbols, None):
                found = _existing(path)
                if found is None:
                    raise NotSupported(f"{self.name}: no file {path}")
                frames.append(self._load(found, symbols, owner=owner, day_label=None))
        return self._batches(frames, symbols, start, end)

    # -- internals ----------------------------------------------------------------

    def _missing(self, path: Path, date: str, close: float) -> ProviderError:
        """The error for a missing per-date file: "not published yet" while that may still be so."""
        if self.now() < close + PUBLISH_GRACE_S:
            return NotPublishedYet(
                f"{self.name}: no file {path} for trading day {date} yet (not published yet?)",
                retry_after_s=NOT_PUBLISHED_RETRY_S,
            )
        return ProviderError(
            "missing_file",
            f"{self.name}: no file {path} for trading day {date} (not downloaded?)",
            retryable=False,
        )

    def _sessions(self, start: int, end: int) -> range:
        """Sessions whose bars may be labelled in [start, end); all must be finished."""
        cal = self.calendar
        if self.timeframe.intraday:
            i0, i1 = cal.session_indices(start, end, extended=True)
        else:
            pad = 0 if self.timeframe == Timeframe.d1 else 8 * _DAY
            i0 = int(np.searchsorted(cal.midnights, start, side="left"))
            i1 = max(i0, int(np.searchsorted(cal.midnights, end + pad, side="left")))
        if i1 > i0 and session_final_at(self._capabilities, cal, i1 - 1) > self.now():
            raise NotSupported(
                f"{self.name}: files hold final (published) sessions only; [{start}, {end}) is not"
            )
        return range(i0, i1)

    def _paths(self, symbols: Sequence[str], date: str | None) -> list[tuple[str | None, Path]]:
        """The files to read, each with the symbol it belongs to (None: a file of many symbols)."""
        fields: dict[str, object] = {}
        if date is not None:
            y, m, d = (int(x) for x in date.split("-"))
            fields = {"date": date, "year": y, "month": m, "day": d}
        if self.per_symbol:
            return [(s, Path(self.path_pattern.format(symbol=s, **fields))) for s in symbols]
        return [(None, Path(self.path_pattern.format(**fields)))]

    def _load(
        self, path: Path, symbols: Sequence[str], *, owner: str | None, day_label: int | None
    ) -> pl.DataFrame:
        """One file as columns ``symbol ts open high low close volume vwap trade_count``."""
        import polars as pl

        cmap = self.column_map
        wanted = list(dict.fromkeys(cmap.values()))
        symbol_expr = pl.lit(owner) if owner is not None else pl.col(cmap["symbol"]).cast(pl.Utf8)
        try:
            if path.suffix in (".parquet", ".pq"):
                raw = pl.read_parquet(path, columns=wanted)
            else:
                raw = pl.read_csv(path, columns=wanted, infer_schema_length=10_000)
            frame = raw.select(
                symbol_expr.alias("symbol"),
                self._ts_expr(raw.schema[cmap["ts"]]).alias("ts"),
                *(
                    pl.col(cmap[c]).cast(pl.Float64).alias(c)
                    for c in ("open", "high", "low", "close", "volume")
                ),
                (pl.col(cmap["vwap"]).cast(pl.Float64) if "vwap" in cmap else pl.lit(float("nan"))).alias(
                    "vwap"
                ),
                (pl.col(cmap["trade_count"]) if "trade_count" in cmap else pl.lit(-1))
                .cast(pl.Int64)
                .fill_null(-1)
                .alias("trade_count"),
            ).filter(pl.col("symbol").is_in(list(symbols)))
        except (pl.exceptions.PolarsError, OSError) as e:
            raise ProviderError("bad_file", f"{self.name}: cannot read {path}: {e}", retryable=False) from e
        if self.timeframe in (Timeframe.d1, Timeframe.w1):
            frame = frame.with_columns(pl.Series("ts", self._day_labels(frame["ts"].to_numpy(), day_label)))
        return frame

    def _ts_expr(self, dtype: pl.DataType) -> pl.Expr:
        import polars as pl

        col = pl.col(self.column_map["ts"])
        if isinstance(dtype, pl.Datetime):
            return col.dt.epoch("s")
        return (col.cast(pl.Int64) // _PER_SECOND[self.ts_unit]).cast(pl.Int64)

    def _day_labels(self, ts: I64, day_label: int | None) -> I64:
        if day_label is not None and self.timeframe == Timeframe.d1:
            return np.full(len(ts), day_label, dtype=np.int64)
        # 00:00 UTC stamps mean "this date"; move them to noon so the local date is that date.
        noon = np.where(ts % _DAY == 0, ts + _DAY // 2, ts)
        return self.calendar.bucket(self.timeframe, noon)

    def _batches(
        self, frames: list[pl.DataFrame], symbols: Sequence[str], start: int, end: int
    ) -> dict[str, BarBatch]:
        import polars as pl

        out = {s: BarBatch.empty(s, self.timeframe, self.name) for s in symbols}
        if not frames:
            return out
        data = (
            pl.concat(frames, how="vertical")
            .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
            .unique(subset=["symbol", "ts"], keep="first", maintain_order=True)
            .sort(["symbol", "ts"], maintain_order=True)
        )
        for (symbol,), part in data.group_by("symbol", maintain_order=True):
            batch = BarBatch(
                str(symbol),
                self.timeframe,
                self.name,
                ts=part["ts"].to_numpy().astype(np.int64),
                open=part["open"].to_numpy(),
                high=part["high"].to_numpy(),
                low=part["low"].to_numpy(),
                close=part["close"].to_numpy(),
                volume=part["volume"].to_numpy(),
                vwap=part["vwap"].fill_null(float("nan")).to_numpy(),
                trade_count=part["trade_count"].to_numpy().astype(np.int64),
            )
            # Regular session only, every day alike (files hold 04:00-20:00 minutes).
            out[str(symbol)] = session_bars(batch, self.calendar, extended=False)
        return out


class FlatFileProvider:
    """Polygon flat files (minute and day aggregates) from a local folder.

    Layout under ``root``: ``{dataset}/minute_aggs_v1/YYYY/MM/YYYY-MM-DD.csv.gz``
    and ``{dataset}/day_aggs_v1/...`` (plain ``.csv`` also read). Columns
    ``ticker,volume,open,close,high,low,window_start,transactions`` with
    ``window_start`` in Unix nanoseconds. Minute files include extended hours
    (filtered to the regular session here). A session's files are published
    the next morning: ``published_at_local_s`` after local midnight of the
    session date, 07:00 New York the next calendar day by default.

    Corporate actions (barfill's own layout; Polygon publishes none as flat
    files): ``{dataset}/corporate_actions_v1/splits.csv`` with the columns of
    Polygon's ``/v3/reference/splits`` (``ticker,execution_date,split_from,
    split_to``) and ``{dataset}/corporate_actions_v1/dividends.csv`` with those
    of ``/v3/reference/dividends`` (``ticker,ex_dividend_date,cash_amount``);
    other columns are ignored, a missing file holds no actions, ``.csv.gz``
    is read too. A dump of the REST endpoints can be dropped in as is.
    """

    def __init__(
        self,
        root: Path,
        *,
        calendar: TradingCalendar | None = None,
        name: str = "flatfiles",
        dataset: str = "us_stocks_sip",
        now: Callable[[], float] = time.time,
        published_at_local_s: int = PUBLISHED_AT_LOCAL_S,
    ) -> None:
        self.root = Path(root)
        self.name = name
        self._actions_dir = self.root / dataset / "corporate_actions_v1"
        calendar = calendar or get_calendar()
        self._readers = {
            tf: GenericFileProvider(
                str(self.root / dataset / folder / "{year}" / "{month:02d}" / "{date}.csv.gz"),
                POLYGON_COLUMNS,
                "ns",
                tf,
                calendar=calendar,
                name=name,
                now=now,
                published_at_local_s=published_at_local_s,
            )
            for tf, folder in ((Timeframe.m1, "minute_aggs_v1"), (Timeframe.d1, "day_aggs_v1"))
        }
        minute = self._readers[Timeframe.m1].capabilities
        self._capabilities = Capabilities(
            name=name,
            timeframes=frozenset(self._readers),
            page_limit=minute.page_limit,
            page_unit=PageUnit.bars,
            extended_hours=True,
            max_symbols=minute.max_symbols,
            rate_limit=_LOCAL_RATE,
            published_at_local_s=published_at_local_s,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        """m1 or d1 bars with ``start <= ts < end`` per symbol."""
        reader = self._readers.get(timeframe)
        if reader is None:
            raise NotSupported(f"{self.name}: flat files hold m1 and d1 bars, not {timeframe.value}")
        return await reader.fetch(symbols, timeframe, start, end)

    async def aclose(self) -> None:
        """Nothing to release; present for the protocol."""

    async def fetch_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
        """Splits and dividends of ``symbol`` with ex dates in ``[start, end]`` from the action files."""
        return await asyncio.to_thread(self.read_actions, symbol, start, end)

    def read_actions(self, symbol: str, start: dt.date, end: dt.date) -> list[CorporateAction]:
        """:meth:`fetch_actions`, synchronously."""
        import polars as pl  # only where files are read: a worker without flat files never loads it

        out: list[CorporateAction] = []
        for kind, date_col in (("splits", "execution_date"), ("dividends", "ex_dividend_date")):
            path = _existing(self._actions_dir / f"{kind}.csv")
            if path is None:
                continue
            frame = pl.read_csv(path, infer_schema=False)  # every column as text: checked below
            missing = {"ticker", date_col} - set(frame.columns)
            if missing:
                raise ProviderError(
                    "bad_file", f"{self.name}: {path.name}: no column {sorted(missing)}", retryable=False
                )
            rows = frame.filter(pl.col("ticker").str.to_uppercase() == symbol.upper())
            for i, row in enumerate(rows.iter_rows(named=True)):
                where = f"{path.name}: {symbol} row {i + 1}"
                try:
                    ex = dt.date.fromisoformat(str(row[date_col]))
                    if kind == "splits":
                        ratio = split_ratio(_num(row.get("split_from")), _num(row.get("split_to")))
                        out.append(split(symbol, ex, ratio, self.name))
                    else:
                        out.append(dividend(symbol, ex, _num(row.get("cash_amount")), self.name))
                except (InvalidInput, ValueError) as e:
                    raise ProviderError("bad_file", f"{self.name}: {where}: {e}", retryable=False) from None
        return within(out, start, end)


def _num(text: object) -> object:
    """A CSV cell as a float when it reads as one, else as it is (refused by the domain, naming the field)."""
    try:
        return float(str(text))
    except ValueError:
        return text


def _existing(path: Path) -> Path | None:
    """``path`` if it exists, else its ``.csv``/``.csv.gz`` twin if that does."""
    if path.is_file():
        return path
    name = path.name
    if name.endswith(".csv.gz"):
        twin = path.with_name(name[: -len(".gz")])
    elif name.endswith(".csv"):
        twin = path.with_name(name + ".gz")
    else:
        return None
    return twin if twin.is_file() else None
