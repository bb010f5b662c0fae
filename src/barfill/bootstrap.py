"""The one place that wires barfill together from :class:`~barfill.config.Settings`.

Entry points (CLI, Python facade, tests) call :func:`build`; nothing else
reads configuration or creates HTTP clients, engines or providers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from barfill.clock import SystemClock
from barfill.config import Settings
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import RateLimit
from barfill.domain.sources import Precedence
from barfill.ports import Clock, Provider
from barfill.providers.alpaca import AlpacaProvider
from barfill.providers.flatfiles import FlatFileProvider
from barfill.providers.http import LoopClient
from barfill.providers.polygon import PolygonProvider
from barfill.providers.router import Router
from barfill.providers.synthetic import SyntheticProvider
from barfill.providers.tradier import TradierProvider
from barfill.providers.yahoo import YahooProvider
from barfill.store.db import Database
from barfill.store.queue import SqlQueue
from barfill.store.ratelimit import SqlRateLimiter

T = TypeVar("T")


def parse_rate(value: str | None) -> RateLimit | None:
    """``"5/60"`` → 5 requests per 60 s (already validated by Settings)."""
    if value is None:
        return None
    n, _, per = value.partition("/")
    return RateLimit(requests=int(n), period_s=float(per))


@dataclass
class App:
    """Everything a process needs, built once.

    ``clock`` is the time the process lives in: the real one, or a simulated
    one injected by a test (the database clock follows the same clock).
    """

    settings: Settings
    db: Database
    queue: SqlQueue
    limiter: SqlRateLimiter
    providers: dict[str, Provider]
    router: Router
    calendar: TradingCalendar
    http: LoopClient | None = None
    notices: list[str] = field(default_factory=list)
    clock: Clock = field(default_factory=SystemClock)

    @property
    def precedence(self) -> Precedence:
        """The read precedence: the router's historical and realtime orders (see domain.sources)."""
        return Precedence(tuple(self.router.historical), tuple(self.router.realtime))

    def rate_limit(self, provider: str) -> RateLimit:
        return self.providers[provider].capabilities.rate_limit

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """``asyncio.run(main)``, then release provider connections on that same loop.

        Every async entry point (``ensure --wait``, ``worker``, ``Barfill.wait``)
        goes through here: HTTP connections belong to the loop that opened
        them, so they are closed before that loop ends, and the next
        ``asyncio.run`` opens fresh ones (see :class:`~barfill.providers.http.LoopClient`).
        """

        async def body() -> T:
            try:
                return await main
            finally:
                await self.aclose()

        return asyncio.run(body())

    async def aclose(self) -> None:
        """Release the running loop's provider connections; the App stays usable."""
        for p in self.providers.values():
            await p.aclose()
        if self.http is not None:
            await self.http.aclose()

    def close(self) -> None:
        """Release everything (outside any event loop): connections, then the engine."""
        if self.http is not None:
            self.http.close()
        self.db.dispose()


def published_at_local_s(value: str) -> int:
    """``"07:00"`` (next calendar day, exchange-local) → seconds after the session date's midnight."""
    hh, _, mm = value.partition(":")
    return 86_400 + int(hh) * 3600 + int(mm) * 60


def build_providers(
    settings: Settings,
    http: LoopClient,
    calendar: TradingCalendar,
    clock: Callable[[], float] = time.time,
) -> tuple[dict[str, Provider], list[str]]:
    """Providers that have what they need (keys, folders), plus notices for the user.

    ``clock`` is what adapters check reach and finality against: :func:`build`
    passes the database clock, so every process agrees.
    """
    providers: dict[str, Provider] = {}
    notices: list[str] = []
    if settings.polygon_api_key is not None:
        providers["polygon"] = PolygonProvider(
            http,
            api_key=settings.polygon_api_key.get_secret_value(),
            base_url=settings.polygon_base_url,
            adjusted=settings.polygon_adjusted,
            rate_limit=parse_rate(settings.polygon_rate_limit),
            calendar=calendar,
        )
    if settings.alpaca_key_id is not None and settings.alpaca_secret_key is not None:
        providers["alpaca"] = AlpacaProvider(
            http,
            key_id=settings.alpaca_key_id.get_secret_value(),
            secret_key=settings.alpaca_secret_key.get_secret_value(),
            base_url=settings.alpaca_base_url,
            feed=settings.alpaca_feed,
            adjustment=settings.alpaca_adjustment,
            rate_limit=parse_rate(settings.alpaca_rate_limit),
            calendar=calendar,
        )
    if settings.tradier_token is not None:
        providers["tradier"] = TradierProvider(
            http,
            token=settings.tradier_token.get_secret_value(),
            base_url=settings.tradier_base_url,
            rate_limit=parse_rate(settings.tradier_rate_limit),
            calendar=calendar,
            clock=clock,
        )
    if settings.yahoo_enabled:
        providers["yahoo"] = YahooProvider(
            http,
            base_url=settings.yahoo_base_url,
            rate_limit=parse_rate(settings.yahoo_rate_limit),
            calendar=calendar,
            clock=clock,
        )
    if settings.flatfiles_dir is not None:
        providers["flatfiles"] = FlatFileProvider(
            settings.flatfiles_dir,
            calendar=calendar,
            now=clock,
            published_at_local_s=published_at_local_s(settings.flatfiles_published_at),
        )
    real = sorted(providers)
    providers["synthetic"] = SyntheticProvider(
        calendar=calendar,
        latency_s=settings.synthetic_latency_ms / 1000.0,
        failure_rate=settings.synthetic_failure_rate,
        rate_limit=parse_rate(settings.synthetic_rate_limit),
        now=clock,
    )
    if not real:
        notices.append(
            "no provider keys configured: using the offline synthetic provider "
            "(deterministic made-up prices). Set BARFILL_POLYGON_API_KEY or another key for real data."
        )
    return providers, notices


def _auto_order(preferred: list[str], built: Mapping[str, Provider]) -> list[str]:
    """Providers the router may pick on its own, in order of preference.

    The synthetic provider makes up prices: it is chosen automatically only
    when no real provider is configured, so a failing real provider never
    falls back to fake data. It can always be pinned with ``--provider``.
    """
    names = [p for p in dict.fromkeys([*preferred, *built]) if p in built]
    real = [p for p in names if p != "synthetic"]
    return real or names


def build(
    settings: Settings, *, providers: Mapping[str, Provider] | None = None, clock: Clock | None = None
) -> App:
    """Wire an :class:`App`.

    Args:
        settings: the configuration.
        providers: replaces the configured providers (tests, benches).
        clock: a simulated clock (tests, replays): the database clock, the
            worker's waits and ``App.clock`` follow it. None: real time, and
            the database's own clock in SQL.
    """
    db = Database(settings.database_url, clock=clock)
    calendar = get_calendar(settings.calendar)
    http: LoopClient | None = None
    notices: list[str] = []
    if providers is None:
        http = LoopClient(timeout_s=settings.http_timeout_s)
        built, notices = build_providers(settings, http, calendar, clock=db.now)
    else:
        built = dict(providers)
    historical = _auto_order(settings.historical_providers, built)
    realtime = _auto_order(settings.realtime_providers, built)
    router = Router(built, historical=historical, realtime=realtime, calendar=calendar)
    queue = SqlQueue(
        db,
        backoff_base_s=settings.backoff_base_s,
        backoff_cap_s=settings.backoff_cap_s,
        failed_cooldown_s=settings.failed_cooldown_s,
        failed_cooldown_max_s=settings.failed_cooldown_max_s,
    )
    return App(
        settings=settings,
        db=db,
        queue=queue,
        limiter=SqlRateLimiter(db),
        providers=built,
        router=router,
        calendar=calendar,
        http=http,
        notices=notices,
        clock=clock if clock is not None else SystemClock(),
    )
