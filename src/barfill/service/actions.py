"""Refreshing corporate actions: each symbol with an enabled definition, once per interval.

The scheduler starts :func:`refresh_due` after a tick, as a background task
(one at a time), so a slow provider never delays the tick. For every provider
of the router's historical order that publishes actions
(:class:`barfill.ports.ActionsProvider`), the symbols not refreshed within
``actions_refresh_s`` (database clock) are fetched, each request taking a
slot of that provider's shared rate limit first and waiting for it when
there is none: the first before the refresh, each further one (a next page, a
second request chain) when the adapter is about to send it, through
:data:`barfill.providers.http.next_grant`. A fetch stores its
actions and the refresh time in one transaction; a failed fetch is logged,
counted and retried on the next run, unless it cannot succeed (not
retryable): then it waits the full interval like a success. Symbols never
refreshed come first (:func:`~barfill.store.actions.due_for_refresh`).

After a refresh, the reference closes its dividends need are queued as d1
bars (:func:`barfill.service.ensure.ensure_reference_closes`), and
:func:`actions_ready` is what ``ensure --wait`` (and ``Barfill.wait``) waits
for: every ensured symbol's actions refreshed once, and those closes queued.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.actions import CorporateAction
from barfill.domain.calendar import get_calendar
from barfill.errors import ProviderError
from barfill.ports import ActionsProvider
from barfill.providers.http import next_grant, on_send
from barfill.service.ensure import ensure_reference_closes
from barfill.service.progress import JobRef
from barfill.store import stamps
from barfill.store.actions import (
    due_for_refresh,
    mark_refreshed,
    never_refreshed,
    refreshed_at,
    replace_actions,
)
from barfill.store.http_reads import notify_changed
from barfill.store.ratelimit import acquire, record_send
from barfill.store.schema import job_definitions, symbols

log = logging.getLogger("barfill.actions")

HISTORY_START = dt.date(1970, 1, 1)
ANNOUNCED_AHEAD_DAYS = 366  # announced actions with an ex date up to a year ahead are stored too
MAX_SYMBOLS_PER_RUN = 500


@dataclass
class RefreshResult:
    """What one refresh did: symbols fetched per provider, actions new or changed, errors."""

    fetched: dict[str, int] = field(default_factory=dict)
    changed: int = 0
    deferred: int = 0  # due but left for the next run (over the per-run cap)
    errors: list[str] = field(default_factory=list)
    reference_jobs: list[JobRef] = field(default_factory=list)  # reference closes queued after it


@dataclass
class ActionsReady:
    """What :func:`actions_ready` saw: tickers never refreshed still (failure or timeout), the
    refresh errors, and the job fetching the reference closes of their dividends (or None)."""

    unrefreshed: list[str]
    errors: list[str]
    job: JobRef | None


def action_providers(app: App) -> list[tuple[str, ActionsProvider]]:
    """The configured providers that publish actions, in the router's historical order."""
    out: list[tuple[str, ActionsProvider]] = []
    for name in app.router.historical:
        provider = app.providers.get(name)
        if isinstance(provider, ActionsProvider):
            out.append((name, provider))
    return out


def _symbols(app: App, tickers: Sequence[str] | None) -> list[tuple[int, str, str]]:
    """(id, ticker, calendar) of the given tickers, else of every symbol with an enabled definition."""
    with app.db.read() as conn:
        query = sa.select(symbols.c.id, symbols.c.ticker, symbols.c.calendar)
        if tickers is None:
            enabled = sa.select(job_definitions.c.symbol_id).where(job_definitions.c.enabled.is_(True))
            query = query.where(symbols.c.id.in_(enabled))
        else:
            query = query.where(symbols.c.ticker.in_([t.upper() for t in tickers]))
        return [(int(i), str(t), str(c)) for i, t, c in conn.execute(query.order_by(symbols.c.id))]


async def _take_slot(app: App, provider: str) -> None:
    """Take a request slot of ``provider``'s shared limit as a worker does (:func:`acquire`:
    a grant is good for the send margin only, and the request's departure is recorded)."""
    clock = app.clock.now if app.clock.simulated else None
    await acquire(app.limiter, provider, app.rate_limit(provider), sleep=app.clock.sleep, clock=clock)
    on_send.set(record_send)  # this task's next request leaves on this grant


def _store(
    app: App, symbol_id: int, provider: str, actions: Sequence[CorporateAction] | None, tz: str
) -> int:
    """Store a refresh (the provider's whole list, if fetched) and its time in one transaction.

    Returns rows new, changed or withdrawn (see :func:`barfill.store.actions.replace_actions`).
    """
    with app.db.write() as conn:
        first = refreshed_at(conn, symbol_id, provider) is None
        changed = 0 if actions is None else replace_actions(conn, symbol_id, provider, actions, tz)
        mark_refreshed(conn, symbol_id, provider)
        if first and not changed:  # reads said "never refreshed": they must be read again
            stamps.touch(conn, symbol_id)
        if changed or first:  # adjusted answers changed: API processes re-check their cached reads
            notify_changed(conn)
    return changed


async def refresh_due(
    app: App, *, tickers: Sequence[str] | None = None, force: bool = False, limit: int = MAX_SYMBOLS_PER_RUN
) -> RefreshResult:
    """Fetch and store the actions of the symbols that are due (``force``: all of ``tickers``).

    Waits for rate-limit slots rather than exceed a limit; providers run side by side.
    Database work runs in threads: the caller's event loop (the server's) is never blocked.

    Args:
        tickers: these symbols (known ones only); ``None``: every symbol with
            an enabled definition.
        force: ignore the refresh interval (``barfill actions --refresh``).
        limit: at most this many symbols per provider in this run (the rest: next run).
    """
    result = RefreshResult()
    wanted = await asyncio.to_thread(_symbols, app, tickers)
    if not wanted:
        return result
    now = await asyncio.to_thread(app.db.now)
    until = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=ANNOUNCED_AHEAD_DAYS)
    by_id = {sid: (ticker, cal) for sid, ticker, cal in wanted}
    every_s = 0.0 if force else app.settings.actions_refresh_s

    async def one_provider(name: str, provider: ActionsProvider) -> None:
        due = await asyncio.to_thread(_due, app, list(by_id), name, every_s)
        result.deferred += max(0, len(due) - limit)
        # Each request after a refresh's first takes its slot as it is sent (this task's context).
        next_grant.set(lambda: _take_slot(app, name))
        for sid in due[:limit]:
            ticker, cal = by_id[sid]
            await _take_slot(app, name)
            try:
                actions = await provider.fetch_actions(ticker, HISTORY_START, until)
            except ProviderError as e:
                await asyncio.to_thread(app.limiter.record_error, name)
                if e.code == "http_429":  # every process backs off, as the worker does
                    wait = e.retry_after_s or 2 * app.rate_limit(name).interval_s
                    await asyncio.to_thread(app.limiter.penalize, name, wait)
                result.errors.append(f"{ticker}: {e} ({e.code})")  # the message names the provider
                log.warning("actions of %s from %s failed: %s", ticker, name, e)
                if not e.retryable:  # asking again soon cannot help: wait the full interval
                    await asyncio.to_thread(_store, app, sid, name, None, get_calendar(cal).tz)
                continue
            result.changed += await asyncio.to_thread(_store, app, sid, name, actions, get_calendar(cal).tz)
            result.fetched[name] = result.fetched.get(name, 0) + 1

    await asyncio.gather(*(one_provider(name, p) for name, p in action_providers(app)))
    if result.fetched:  # their dividends' reference closes, as ordinary d1 bars (queue + worker)
        result.reference_jobs = await asyncio.to_thread(ensure_reference_closes, app, list(by_id))
    return result


async def actions_ready(
    app: App,
    tickers: Sequence[str],
    *,
    refresh: bool,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    on_waiting: Callable[[list[str]], object] | None = None,
) -> ActionsReady:
    """Until every provider that publishes actions has refreshed each ticker's at least once.

    Adjusted reads of a symbol are only right after that (and once its dividends'
    reference closes land: the returned job). ``refresh``: fetch the due ones here
    (rate-limited, :func:`refresh_due`); else wait for the scheduler to, calling
    ``on_waiting`` once with the tickers waited for, until ``timeout_s`` (None: no limit).
    """
    errors: list[str] = []
    jobs: list[JobRef] = []
    if refresh:
        result = await refresh_due(app, tickers=tickers)
        errors, jobs = result.errors, result.reference_jobs  # its slices count in the job's progress
    wanted = await asyncio.to_thread(_symbols, app, tickers)
    names = [name for name, _ in action_providers(app)]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    told = False
    while pending := await asyncio.to_thread(_never_refreshed, app, [s for s, _, _ in wanted], names):
        if refresh or (deadline is not None and time.monotonic() >= deadline):
            break
        if on_waiting is not None and not told:
            on_waiting(_tickers(wanted, pending))
            told = True
        await asyncio.sleep(poll_s)
    jobs += await asyncio.to_thread(ensure_reference_closes, app, [s for s, _, _ in wanted])
    return ActionsReady(_tickers(wanted, pending), errors, merge_jobs(jobs))


def merge_jobs(jobs: Sequence[JobRef]) -> JobRef | None:
    """One job over several (their definitions, since the earliest), or None for none."""
    if not jobs:
        return None
    ids = tuple(dict.fromkeys(i for job in jobs for i in job.definition_ids))
    return JobRef(ids, min(job.since for job in jobs))


def _tickers(wanted: list[tuple[int, str, str]], ids: list[int]) -> list[str]:
    return [t for s, t, _ in wanted if s in set(ids)]


def _never_refreshed(app: App, symbol_ids: list[int], providers: list[str]) -> list[int]:
    with app.db.read() as conn:
        return never_refreshed(conn, symbol_ids, providers)


def _due(app: App, symbol_ids: list[int], provider: str, every_s: float) -> list[int]:
    with app.db.read() as conn:
        return due_for_refresh(conn, symbol_ids, provider, every_s)
