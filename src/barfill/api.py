"""The Python facade: ``Barfill(database_url).ensure(...)``, ``.wait(job)``, ``.bars(...)``.

A notebook or a trading system uses this; the CLI uses the same services.
``ensure`` answers at once; ``wait`` runs an in-process worker (unless told
another process does the work) and returns when the job is done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pandas as pd
import polars as pl
from sqlalchemy.engine import Connection

from barfill.bootstrap import App, build
from barfill.config import Settings, load_settings
from barfill.domain.actions import CorporateAction
from barfill.domain.adjust import parse_adjust
from barfill.domain.calendar import get_calendar
from barfill.domain.symbols import validate_ticker
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.ports import Provider
from barfill.service.actions import RefreshResult, actions_ready, refresh_due
from barfill.service.ensure import EnsureReport, ensure, parse_time
from barfill.service.orchestrator import TickResult, tick
from barfill.service.progress import JobRef, Progress, job_progress, merge
from barfill.service.worker import Worker, WorkerStats
from barfill.store import migrate
from barfill.store.actions import list_actions
from barfill.store.bar_reads import read_bars_frame
from barfill.store.definitions import DEFAULT_REQUESTER, get_definition
from barfill.store.http_reads import UNAPPLIED_HEADER, UNREFRESHED_HEADER, adjust_notes
from barfill.store.symbols import symbol_calendars, symbol_id

TimeLike = datetime | date | str | int
UNKNOWN_SYMBOL = "a symbol in the store (add it with `barfill ensure` or `barfill universe add`)"


class Barfill:
    """A handle on one bar store.

    Args:
        database_url: SQLite or PostgreSQL URL; default from configuration.
        settings: full settings (overrides ``database_url``'s lookup).
        providers: use these providers instead of the configured ones.
        create: create or upgrade the schema first (like ``barfill init``).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        providers: Mapping[str, Provider] | None = None,
        create: bool = False,
    ) -> None:
        self.settings = settings or load_settings(database_url=database_url)
        self.app: App = build(self.settings, providers=providers)
        if create:
            migrate.upgrade(self.app.db)
        migrate.require_current(self.app.db)

    @classmethod
    def wrap(cls, app: App) -> Barfill:
        """A facade over an already-built :class:`App` (the CLI's)."""
        self = cls.__new__(cls)
        self.settings, self.app = app.settings, app
        return self

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        self.app.close()

    def __enter__(self) -> Barfill:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- hydration --------------------------------------------------------------

    def ensure(
        self,
        symbols: str | Sequence[str],
        timeframe: Timeframe | str,
        *,
        days: int | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        priority: int = 0,
        provider: str | None = None,
        requester: str = DEFAULT_REQUESTER,
    ) -> EnsureReport:
        """Record the desired coverage and queue what is missing; returns at once.

        Args:
            days: a rolling window ending now (instead of ``start``/``end``).
            start: a date (00:00 exchange time of that date), an aware
                datetime, an ISO 8601 time with offset, or Unix seconds.
            end: a date-only end is **inclusive** (``"2024-12-31"`` includes
                Dec 31's session); a datetime/ISO time/Unix seconds is exclusive.
            requester: who asks (default ``"default"``): each requester keeps
                its own window and pinned provider per (symbol, timeframe), so
                a notebook's backfill (``requester="notebook"``) leaves a
                scheduler's rolling window alone.

        Failed or cancelled slices of the window are revived; ``slices_queued``
        counts what this call queued and ``slices_pending`` what was already
        queued or running.
        """
        items = [symbols] if isinstance(symbols, str) else list(symbols)
        return ensure(
            self.app,
            items,
            timeframe,
            days=days,
            start=start,
            end=end,
            priority=priority,
            provider=provider,
            requester=requester,
        )

    def progress(self, job: JobRef) -> Progress:
        return job_progress(self.app.db, job)

    def tick(self) -> TickResult:
        return tick(self.app)

    def wait(
        self,
        job: JobRef,
        *,
        work: bool = True,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Progress:
        """Block until the job has nothing queued or running, and its symbols' adjusted reads are right.

        With ``work`` (the default) an in-process worker does the fetching;
        pass ``work=False`` when separate worker processes run. Then the
        symbols' corporate actions are refreshed once if they never were (with
        ``work``; else the scheduler's refresh is waited for) and the reference
        closes of their dividends fetched (:func:`barfill.service.actions.actions_ready`).
        ``timeout_s`` bounds the whole wait; the progress returned covers both jobs.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        p = self._wait_job(job, work, timeout_s, poll_s, on_progress)
        if not p.done:
            return p
        with self.app.db.read() as conn:
            found = [get_definition(conn, i) for i in job.definition_ids]
        tickers = sorted({d.symbol for d in found if d is not None})
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = self.app.run(actions_ready(self.app, tickers, refresh=work, timeout_s=left))
        if ready.job is None:
            return p
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return merge([p, self._wait_job(ready.job, work, left, poll_s, on_progress)])

    def _wait_job(
        self,
        job: JobRef,
        work: bool,
        timeout_s: float | None,
        poll_s: float,
        on_progress: Callable[[Progress], None] | None,
    ) -> Progress:
        if work:
            return self.app.run(self._work_until_done(job, timeout_s, poll_s, on_progress))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            p = self.progress(job)
            if on_progress:
                on_progress(p)
            if p.done or (deadline is not None and time.monotonic() > deadline):
                return p
            time.sleep(poll_s)

    async def _work_until_done(
        self,
        job: JobRef,
        timeout_s: float | None,
        poll_s: float,
        on_progress: Callable[[Progress], None] | None,
    ) -> Progress:
        stop = asyncio.Event()
        worker = Worker(self.app)
        task = asyncio.create_task(worker.run(stop))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                p = await asyncio.to_thread(self.progress, job)
                if on_progress:
                    on_progress(p)
                if p.done or task.done() or (deadline is not None and time.monotonic() > deadline):
                    return p
                await asyncio.sleep(poll_s)
        finally:
            stop.set()
            await task

    def work(self, *, concurrency: int | None = None, drain: bool = True) -> WorkerStats:
        """Run one in-process worker until the queue is empty (``drain``)."""

        return self.app.run(Worker(self.app, concurrency=concurrency).run(drain=drain))

    # -- reading ----------------------------------------------------------------

    def bars(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        library: Literal["pandas", "polars"] = "pandas",
        basis: str | None = None,
        adjust: str | None = None,
        include_flagged: bool = False,
    ) -> Any:
        """Stored bars as a DataFrame indexed by bar-open time (UTC). Never waits for a provider.

        ``start``/``end`` as in :meth:`ensure`: dates are the exchange's calendar
        dates and a date-only ``end`` is inclusive; an ISO time ``end`` is exclusive.
        A symbol never added gives an empty frame (see :meth:`export`).

        One source per session (see :mod:`barfill.domain.sources`): historical
        bars before intraday ones, native before resampled, providers in the
        configured historical/realtime order. One adjustment ``basis`` per read
        (``raw``, ``split``, ``dividend``, ``all``): the one asked for, else the
        preferred source's; the ``provider``, ``layer`` and ``basis`` columns say
        where each row came from. Bars flagged bad (:mod:`barfill.domain.badbars`:
        a one-bar spike, an empty bar in a busy session) are left out unless
        ``include_flagged``.

        ``adjust`` (``raw``, ``split`` or ``all``) adjusts raw bars for the splits
        (and, for ``all``, dividends) known now; see :mod:`barfill.domain.adjust`.
        ``None`` returns the bars as stored.
        """
        ticker = validate_ticker(symbol)
        tf = Timeframe.parse(timeframe)
        with self.app.db.read() as conn:
            sid = symbol_id(conn, ticker)
            zone = self._zone(conn, sid)
            lo = 0 if start is None else parse_time(start, "start", tz=zone)
            hi = 2**62 if end is None else parse_time(end, "end", tz=zone, end=True)
            if hi <= lo:
                raise InvalidInput("end", "a time after start", end)
            frame = read_bars_frame(
                conn,
                -1 if sid is None else sid,
                tf,
                lo,
                hi,
                precedence=self.app.precedence,
                basis=basis,
                adjust=adjust,
                include_flagged=include_flagged,
            )
            first = int(frame.index[0].timestamp()) if len(frame) else None
            order = self.app.precedence.historical
            notes = [] if sid is None else adjust_notes(conn, sid, parse_adjust(adjust), first, order)
        # What an adjusted read lacks (pandas only): see barfill.store.http_reads.adjust_notes.
        frame.attrs["actions_unrefreshed"] = any(k == UNREFRESHED_HEADER for k, _ in notes)
        frame.attrs["unapplied_dividends"] = [
            date.fromisoformat(d) for k, v in notes if k == UNAPPLIED_HEADER for d in v.split(",")
        ]
        if library == "polars":
            return pl.from_pandas(frame.reset_index())
        if library != "pandas":
            raise InvalidInput("library", "pandas or polars", library)
        return frame

    def _zone(self, conn: Connection, sid: int | None) -> str:
        """The time zone of a symbol's exchange (the configured calendar's if unknown)."""
        if sid is None:
            return self.app.calendar.tz
        name = symbol_calendars(conn, [sid]).get(sid)
        return self.app.calendar.tz if name is None else get_calendar(name).tz

    def actions(self, symbol: str) -> list[CorporateAction]:
        """Stored splits and dividends of ``symbol`` (every provider's report), by ex date."""
        ticker = validate_ticker(symbol)
        with self.app.db.read() as conn:
            sid = symbol_id(conn, ticker)
            return [] if sid is None else list_actions(conn, sid)

    def refresh_actions(self, symbols: Sequence[str] | None = None, *, force: bool = True) -> RefreshResult:
        """Fetch splits and dividends now (``symbols``, else every defined symbol).

        Stored with the refresh time; see :mod:`barfill.service.actions`.
        """
        tickers = None if symbols is None else [validate_ticker(s) for s in symbols]
        return self.app.run(refresh_due(self.app, tickers=tickers, force=force))

    def export(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        path: str | Path,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        format: Literal["csv", "parquet"] | None = None,
        basis: str | None = None,
        adjust: str | None = None,
    ) -> int:
        """Write stored bars to CSV or Parquet (by ``format`` or the file suffix); returns rows.

        ``start``/``end`` as in :meth:`bars` (a date-only ``end`` is inclusive).

        Raises:
            InvalidInput: ``symbol`` is not a symbol barfill knows (nothing is
                written: an empty file would look like a symbol without bars).
        """
        out = Path(path)
        fmt = format or out.suffix.lstrip(".").lower()
        if fmt not in ("csv", "parquet"):
            raise InvalidInput("format", "csv or parquet (or a .csv/.parquet file name)", fmt)
        ticker = validate_ticker(symbol)
        with self.app.db.read() as conn:
            if symbol_id(conn, ticker) is None:
                raise InvalidInput("symbol", UNKNOWN_SYMBOL, symbol)
        frame: pd.DataFrame = self.bars(ticker, timeframe, start=start, end=end, basis=basis, adjust=adjust)
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            frame.to_csv(out)
        else:
            frame.to_parquet(out)
        return len(frame)
