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
retryable): then it waits the full interval like a success.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.actions import CorporateAction
from barfill.domain.calendar import get_calendar
from barfill.errors import ProviderError
from barfill.ports import ActionsProvider
from barfill.providers.http import next_grant
from barfill.store.actions import due_for_refresh, mark_refreshed, replace_actions
from barfill.store.http_reads import notify_changed
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
    """Take a request slot of ``provider``'s shared limit, waiting (on the app's clock) as told."""
    while (wait := await asyncio.to_thread(app.limiter.try_acquire, provider, app.rate_limit(provider))) > 0:
        await app.clock.sleep(wait)


def _store(
    app: App, symbol_id: int, provider: str, actions: Sequence[CorporateAction] | None, tz: str
) -> int:
    """Store a refresh (the provider's whole list, if fetched) and its time in one transaction.

    Returns rows new, changed or withdrawn (see :func:`barfill.store.actions.replace_actions`).
    """
    with app.db.write() as conn:
        changed = 0 if actions is None else replace_actions(conn, symbol_id, provider, actions, tz)
        mark_refreshed(conn, symbol_id, provider)
        if changed:  # adjusted answers changed: API processes re-check their cached reads
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
    return result


def _due(app: App, symbol_ids: list[int], provider: str, every_s: float) -> list[int]:
    with app.db.read() as conn:
        return due_for_refresh(conn, symbol_ids, provider, every_s)
