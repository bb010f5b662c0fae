"""Refreshing corporate actions: each symbol with an enabled definition, once per interval.

The scheduler calls :func:`refresh_due` after each tick. For every provider
of the router's historical order that publishes actions
(:class:`barfill.ports.ActionsProvider`), the symbols not refreshed within
``actions_refresh_s`` (database clock) are fetched, each request taking a
slot of that provider's shared rate limit first (``ACTION_REQUESTS`` slots
when a provider's refresh sends several requests; a further page of a long
answer is not counted); when no slot is free the rest waits for the next
tick. A fetch stores its actions and the refresh time in one transaction; a
failed fetch is logged, counted and retried next tick, unless it cannot
succeed (not retryable): then it waits the full interval like a success.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.errors import ProviderError
from barfill.ports import ActionsProvider
from barfill.store.actions import due_for_refresh, mark_refreshed, upsert_actions
from barfill.store.schema import job_definitions, symbols

log = logging.getLogger("barfill.actions")

HISTORY_START = dt.date(1970, 1, 1)
ANNOUNCED_AHEAD_DAYS = 366  # announced actions with an ex date up to a year ahead are stored too
MAX_SYMBOLS_PER_TICK = 200


@dataclass
class RefreshResult:
    """What one refresh did: symbols fetched per provider, actions new or changed, errors."""

    fetched: dict[str, int] = field(default_factory=dict)
    changed: int = 0
    deferred: int = 0  # due but left for the next tick (rate limit, per-tick cap)
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


def _slots(app: App, provider: str, n: int) -> bool:
    """Take ``n`` request slots of ``provider``'s shared limit; False as soon as one is refused."""
    return all(app.limiter.try_acquire(provider, app.rate_limit(provider)) == 0.0 for _ in range(n))


async def refresh_due(
    app: App, *, tickers: Sequence[str] | None = None, force: bool = False
) -> RefreshResult:
    """Fetch and store the actions of the symbols that are due (``force``: all of ``tickers``).

    Args:
        tickers: these symbols (known ones only); ``None``: every symbol with
            an enabled definition.
        force: ignore the refresh interval (``barfill actions --refresh``).
    """
    result = RefreshResult()
    wanted = _symbols(app, tickers)
    if not wanted:
        return result
    now = app.db.now()
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    until = today + dt.timedelta(days=ANNOUNCED_AHEAD_DAYS)
    by_id = {sid: (ticker, cal) for sid, ticker, cal in wanted}
    every_s = 0.0 if force else app.settings.actions_refresh_s
    for name, provider in action_providers(app):
        with app.db.read() as conn:
            due = due_for_refresh(conn, list(by_id), name, every_s) if not force else list(by_id)
        done = 0
        # Slots per symbol: the requests one refresh sends (Polygon: splits and dividends).
        need = int(getattr(provider, "ACTION_REQUESTS", 1))
        for sid in due:
            if done >= MAX_SYMBOLS_PER_TICK or not _slots(app, name, need):
                result.deferred += len(due) - done
                break
            ticker, cal = by_id[sid]
            done += 1
            try:
                actions = await provider.fetch_actions(ticker, HISTORY_START, until)
            except ProviderError as e:
                app.limiter.record_error(name)
                result.errors.append(f"{name}: {ticker}: {e}")
                log.warning("actions of %s from %s failed: %s", ticker, name, e)
                if not e.retryable:
                    with app.db.write() as conn:
                        mark_refreshed(conn, sid, name)
                continue
            with app.db.write() as conn:
                result.changed += upsert_actions(conn, sid, actions, get_calendar(cal).tz)
                mark_refreshed(conn, sid, name)
            result.fetched[name] = result.fetched.get(name, 0) + 1
    return result
