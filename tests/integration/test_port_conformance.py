"""Every implementation still fits its port, statically (mypy reads the assignments) and at run time."""

from __future__ import annotations

import httpx

from barfill.clock import SystemClock
from barfill.domain.calendar import get_calendar
from barfill.ports import ActionsProvider, Clock, JobQueue, Provider, RateLimiter
from barfill.providers.alpaca import AlpacaProvider
from barfill.providers.flatfiles import FlatFileProvider
from barfill.providers.polygon import PolygonProvider
from barfill.providers.synthetic import SyntheticProvider
from barfill.providers.tradier import TradierProvider
from barfill.providers.yahoo import YahooProvider
from barfill.store.db import Database
from barfill.store.queue import SqlQueue
from barfill.store.ratelimit import SqlRateLimiter
from barfill.testing.clock import SimClock


async def test_implementations_fit_their_ports(sqlite_db: Database, tmp_path) -> None:
    queue: JobQueue = SqlQueue(sqlite_db)
    limiter: RateLimiter = SqlRateLimiter(sqlite_db)
    assert isinstance(queue, JobQueue) and isinstance(limiter, RateLimiter)
    clocks: list[Clock] = [SystemClock(), SimClock(0.0)]
    assert all(isinstance(c, Clock) for c in clocks)
    cal = get_calendar()
    async with httpx.AsyncClient() as client:
        providers: list[Provider] = [
            PolygonProvider(client, api_key="k", calendar=cal),
            AlpacaProvider(client, key_id="k", secret_key="s", calendar=cal),
            TradierProvider(client, token="t", calendar=cal),
            YahooProvider(client, calendar=cal),
            FlatFileProvider(tmp_path, calendar=cal),
            SyntheticProvider(calendar=cal),
        ]
        for p in providers:
            assert isinstance(p, Provider)
            assert p.capabilities.page_limit > 0 and p.capabilities.timeframes
        # The optional capability: every provider that publishes splits and dividends.
        actions: list[ActionsProvider] = [
            PolygonProvider(client, api_key="k", calendar=cal),
            AlpacaProvider(client, key_id="k", secret_key="s", calendar=cal),
            YahooProvider(client, calendar=cal),
            FlatFileProvider(tmp_path, calendar=cal),
            SyntheticProvider(calendar=cal),
        ]
        assert all(isinstance(p, ActionsProvider) for p in actions)
        assert not isinstance(TradierProvider(client, token="t", calendar=cal), ActionsProvider)
