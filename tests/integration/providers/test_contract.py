"""The provider contract: one test class, subclassed per provider with only fixtures changed.

Every adapter is run over a real socket against a local server that speaks its
documented wire format from deterministic ground truth (``servers.py``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import HourAlignment, PageUnit, RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.domain.validate import validate_bars
from barfill.errors import NotSupported, ProviderError
from barfill.ports import Provider
from barfill.providers import AlpacaProvider, PolygonProvider, TradierProvider, YahooProvider
from barfill.providers.http import daily_labels, parse_retry_after, redact, weekly_labels

from .servers import DAY, AlpacaWire, FakeServer, Fault, PolygonWire, TradierWire, Truth, YahooWire, iso_z, ny

CAL = get_calendar("XNYS")
SECRET = "sEcReT-k3y-0123456789"
# (day, regular open, close) in UTC: DST starts 03-10, ends 11-03; 11-29 closes at 13:00.
SPECIAL_DAYS = {
    "dst-start": (ny(2024, 3, 11), ny(2024, 3, 11, 9, 30), ny(2024, 3, 11, 16)),
    "dst-end": (ny(2024, 11, 4), ny(2024, 11, 4, 9, 30), ny(2024, 11, 4, 16)),
    "half-day": (ny(2024, 11, 29), ny(2024, 11, 29, 9, 30), ny(2024, 11, 29, 13)),
}


def window(tf: Timeframe) -> tuple[int, int]:
    if tf.intraday:
        return ny(2024, 3, 7), ny(2024, 3, 13)  # Thu..Tue, across the DST change
    if tf == Timeframe.d1:
        return ny(2024, 2, 1), ny(2024, 4, 1)
    return ny(2024, 1, 1), ny(2024, 6, 3)  # Mondays


class Clock:
    now = float(ny(2024, 12, 31))

    def __call__(self) -> float:
        return self.now


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cls = metafunc.cls
    if cls is None or not hasattr(cls, "TIMEFRAMES"):
        return
    if "timeframe" in metafunc.fixturenames:
        metafunc.parametrize("timeframe", cls.TIMEFRAMES, ids=lambda t: t.value)
    if "intraday" in metafunc.fixturenames:
        metafunc.parametrize("intraday", [t for t in cls.TIMEFRAMES if t.intraday], ids=lambda t: t.value)
    if "unsupported" in metafunc.fixturenames:
        missing = [t for t in Timeframe if t not in cls.TIMEFRAMES]
        metafunc.parametrize("unsupported", missing, ids=lambda t: t.value)


def assert_same(got: BarBatch, want: BarBatch, *, name: str, vwap: bool, trades: bool) -> None:
    assert (got.symbol, got.timeframe, got.provider) == (want.symbol, want.timeframe, name)
    assert [iso_z(t) for t in got.ts[:3]] == [iso_z(t) for t in want.ts[:3]]
    np.testing.assert_array_equal(got.ts, want.ts)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(got, col), getattr(want, col), err_msg=col)
    if vwap:
        np.testing.assert_array_equal(got.vwap, want.vwap)
    if trades:
        np.testing.assert_array_equal(got.trade_count, want.trade_count)


class ProviderContract:
    """What every HTTP provider adapter must do. Subclasses supply fixtures and facts only."""

    NAME: ClassVar[str]
    TIMEFRAMES: ClassVar[tuple[Timeframe, ...]]
    RATE_LIMIT: ClassVar[RateLimit]
    HAS_VWAP: ClassVar[bool] = True
    HAS_TRADES: ClassVar[bool] = True
    SECRET: ClassVar[str | None] = SECRET

    @pytest.fixture
    def truth(self) -> Truth:
        return Truth(CAL)

    @pytest.fixture
    def server(self, wire: Any) -> Iterator[FakeServer]:
        with FakeServer(wire) as server:
            yield server
        assert not server.errors, server.errors

    @pytest.fixture
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            yield client

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def provider(self, provider_factory: Callable[..., Provider], server: FakeServer) -> Provider:
        return provider_factory(server.url)

    async def fetch(
        self, provider: Provider, clock: Clock, symbols: list[str], tf: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        clock.now = float(end + DAY)
        return await provider.fetch(symbols, tf, start, end)

    def check(self, got: BarBatch, want: BarBatch) -> None:
        assert_same(got, want, name=self.NAME, vwap=self.HAS_VWAP, trades=self.HAS_TRADES)

    # -- shape --------------------------------------------------------------

    def test_fits_the_port_and_declares_capabilities(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)
        caps = provider.capabilities
        assert caps.name == self.NAME
        assert caps.timeframes == frozenset(self.TIMEFRAMES)
        assert caps.rate_limit == self.RATE_LIMIT

    # -- data ---------------------------------------------------------------

    async def test_fetch_equals_ground_truth(
        self, provider: Provider, truth: Truth, clock: Clock, timeframe: Timeframe
    ) -> None:
        start, end = window(timeframe)
        got = await self.fetch(provider, clock, ["AAPL", "MSFT"], timeframe, start, end)
        assert set(got) == {"AAPL", "MSFT"}
        for symbol, batch in got.items():
            want = truth.bars(symbol, timeframe, start, end)
            assert len(want) > 0
            self.check(batch, want)
            assert validate_bars(batch, start=start, end=end, calendar=CAL, now=clock.now) == []

    @pytest.mark.parametrize("day", SPECIAL_DAYS, ids=str)
    async def test_dst_and_half_days(
        self, provider: Provider, truth: Truth, clock: Clock, intraday: Timeframe, day: str
    ) -> None:
        midnight, open_, close = SPECIAL_DAYS[day]
        got = (await self.fetch(provider, clock, ["AAPL"], intraday, midnight, midnight + DAY))["AAPL"]
        self.check(got, truth.bars("AAPL", intraday, midnight, midnight + DAY))
        first_label = open_ - open_ % intraday.seconds  # whole hours from UTC: same grid as New York
        assert int(got.ts[0]) >= first_label and int(got.ts[-1]) < close
        assert int(got.ts[-1]) >= close - 2 * intraday.seconds  # the session's end is there

    async def test_daily_labels_across_dst(self, provider: Provider, clock: Clock) -> None:
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, ny(2024, 3, 4), ny(2024, 3, 16)))[
            "AAPL"
        ]
        assert [iso_z(t) for t in got.ts] == [
            *(f"2024-03-0{d}T05:00:00Z" for d in range(4, 9)),
            *(f"2024-03-{d}T04:00:00Z" for d in range(11, 16)),
        ]

    async def test_every_symbol_answered_even_without_bars(self, provider: Provider, clock: Clock) -> None:
        start, end = window(Timeframe.m15)
        got = await self.fetch(provider, clock, ["AAPL", "EMPTY"], Timeframe.m15, start, end)
        assert set(got) == {"AAPL", "EMPTY"}
        assert len(got["AAPL"]) > 0
        assert len(got["EMPTY"]) == 0 and got["EMPTY"].provider == self.NAME

    async def test_weekend_is_an_empty_covered_range(self, provider: Provider, clock: Clock) -> None:
        got = await self.fetch(provider, clock, ["AAPL"], Timeframe.m15, ny(2024, 3, 9), ny(2024, 3, 11))
        assert len(got["AAPL"]) == 0

    async def test_bad_bar_reaches_validation(self, provider: Provider, truth: Truth, clock: Clock) -> None:
        start, end = window(Timeframe.d1)
        bad = int(truth.bars("AAPL", Timeframe.d1, start, end).ts[3])
        truth.corrupt.add(("AAPL", Timeframe.d1, bad))
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, start, end))["AAPL"]
        reasons = validate_bars(got, start=start, end=end, calendar=CAL, now=clock.now)
        assert reasons and all(r.startswith(iso_z(bad)) for r in reasons)

    # -- failures -----------------------------------------------------------

    async def test_401_is_final_and_never_shows_the_secret(
        self, provider: Provider, server: FakeServer, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        secret = self.SECRET or "no-secret-here"
        body = {"error": f"Unknown API Key {self.SECRET}", "apiKey": self.SECRET} if self.SECRET else {}
        server.inject(Fault("status", 401, body))
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        err = info.value
        assert (err.code, err.retryable) == ("http_401", False)
        assert "401" in str(err) and secret not in str(err) and secret not in repr(err.args)
        assert err.__cause__ is None and err.__context__ is None
        assert secret not in caplog.text
        assert all(secret not in seen.url for seen in server.seen)

    @pytest.mark.parametrize(("headers", "expected"), [({"Retry-After": "7"}, 7.0), ({}, None)])
    async def test_429_is_retryable_with_retry_after(
        self,
        provider: Provider,
        server: FakeServer,
        clock: Clock,
        headers: dict[str, str],
        expected: float | None,
    ) -> None:
        server.inject(Fault("status", 429, {"status": "ERROR", "error": "exceeded"}, headers))
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert (info.value.code, info.value.retryable, info.value.retry_after_s) == (
            "http_429",
            True,
            expected,
        )

    async def test_5xx_is_retryable(self, provider: Provider, server: FakeServer, clock: Clock) -> None:
        server.inject(Fault("status", 503, b"<html>upstream down</html>", {"Retry-After": "30"}))
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert (info.value.code, info.value.retryable, info.value.retry_after_s) == ("http_5xx", True, 30.0)

    async def test_timeout(
        self, provider: Provider, server: FakeServer, client: httpx.AsyncClient, clock: Clock
    ) -> None:
        client.timeout = httpx.Timeout(0.2)
        server.inject(Fault("delay", delay_s=5.0))
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert (info.value.code, info.value.retryable) == ("timeout", True)
        assert info.value.__cause__ is None and info.value.__context__ is None

    async def test_connection_refused(self, provider_factory: Callable[..., Provider], clock: Clock) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        provider = provider_factory(f"http://127.0.0.1:{port}")
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert (info.value.code, info.value.retryable) == ("connect", True)
        # httpx's exception (whose message holds the URL) is not chained.
        assert info.value.__cause__ is None and info.value.__context__ is None

    async def test_truncated_json_is_bad_payload_and_retried(
        self, provider: Provider, server: FakeServer, clock: Clock
    ) -> None:
        server.inject(Fault("truncate"))
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert (info.value.code, info.value.retryable) == ("bad_payload", True)  # a one-off, likely
        assert str(info.value).startswith(f"{self.NAME}: ") and "bad_payload" not in str(info.value)

    async def test_unexpected_shape_is_bad_payload(
        self, provider: Provider, server: FakeServer, clock: Clock
    ) -> None:
        server.inject(Fault("status", 200, ["not", "an", "object"]))
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert info.value.code == "bad_payload"

    async def test_close_leaves_the_client_open(self, provider: Provider, client: httpx.AsyncClient) -> None:
        await provider.aclose()
        assert not client.is_closed


# -- Polygon ----------------------------------------------------------------


class PaginationContract(ProviderContract):
    """For providers that page through a slice (Polygon next_url, Alpaca next_page_token)."""

    async def test_pagination_followed_to_the_end(
        self, provider: Provider, server: FakeServer, truth: Truth, clock: Clock
    ) -> None:
        server.wire.page_size = 50
        start, end = ny(2024, 3, 8), ny(2024, 3, 12)
        symbols = ["AAPL", "MSFT", "NVDA"]
        got = await self.fetch(provider, clock, symbols, Timeframe.m5, start, end)
        for symbol in symbols:
            self.check(got[symbol], truth.bars(symbol, Timeframe.m5, start, end))
        assert len(server.seen) > 3

    async def test_failure_mid_pagination_returns_nothing(
        self, provider: Provider, server: FakeServer, clock: Clock
    ) -> None:
        server.wire.page_size = 50
        server.inject(Fault("status", 502, {"error": "bad gateway"}, after=2))
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL", "MSFT"], Timeframe.m5, ny(2024, 3, 8), ny(2024, 3, 12))
        assert info.value.code == "http_5xx"
        assert len(server.seen) == 3


class CredentialsContract(ProviderContract):
    """For providers that need a key."""

    async def test_wrong_credentials(
        self, provider_factory: Callable[..., Provider], server: FakeServer, clock: Clock
    ) -> None:
        provider = provider_factory(server.url, wrong=True)
        with pytest.raises(ProviderError) as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert (info.value.code, info.value.retryable) == ("http_401", False)
        assert "wrong-" not in str(info.value)


class PartialTimeframesContract(ProviderContract):
    """For providers that lack some timeframes natively."""

    async def test_unsupported_timeframe_raises_without_a_request(
        self, provider: Provider, server: FakeServer, clock: Clock, unsupported: Timeframe
    ) -> None:
        with pytest.raises(NotSupported):
            await self.fetch(provider, clock, ["AAPL"], unsupported, *window(unsupported))
        assert server.seen == []


class TestPolygon(PaginationContract, CredentialsContract):
    NAME = "polygon"
    TIMEFRAMES = tuple(Timeframe)
    RATE_LIMIT = RateLimit(5, 60.0)

    @pytest.fixture
    def wire(self, truth: Truth) -> PolygonWire:
        return PolygonWire(truth, SECRET)

    @pytest.fixture
    def provider_factory(self, client: httpx.AsyncClient) -> Callable[..., Provider]:
        def make(base_url: str, *, wrong: bool = False, **kw: Any) -> Provider:
            key = "wrong-key" if wrong else SECRET
            return PolygonProvider(client, api_key=key, base_url=base_url, calendar=CAL, **kw)

        return make

    def test_capabilities_count_base_minutes(self, provider: Provider) -> None:
        caps = provider.capabilities
        assert (caps.page_unit, caps.page_limit, caps.extended_hours) == (PageUnit.base_minutes, 50_000, True)

    async def test_request_contract(self, provider: Provider, server: FakeServer, clock: Clock) -> None:
        start, end = window(Timeframe.m1)
        await self.fetch(provider, clock, ["BRK.B"], Timeframe.m1, start, end)
        first = server.seen[0]
        assert first.path == f"/v2/aggs/ticker/BRK.B/range/1/minute/{start * 1000}/{end * 1000 - 1}"
        assert {k: v[0] for k, v in first.query.items()} == {
            "adjusted": "false",
            "sort": "asc",
            "limit": "50000",
        }
        assert first.headers["authorization"] == f"Bearer {SECRET}"

    async def test_extended_hours_on_request(
        self, provider_factory: Callable[..., Provider], server: FakeServer, truth: Truth, clock: Clock
    ) -> None:
        provider = provider_factory(server.url, extended_hours=True)
        start, end = SPECIAL_DAYS["half-day"][0], SPECIAL_DAYS["half-day"][0] + DAY
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.m15, start, end))["AAPL"]
        self.check(got, truth.bars("AAPL", Timeframe.m15, start, end, extended=True))
        assert (
            iso_z(int(got.ts[-1])) == "2024-11-29T21:45:00Z"
        )  # post-market ends 17:00 after the early close

    async def test_week_anchor_monday_also_accepted_saturday_refused(
        self, provider: Provider, server: FakeServer, wire: PolygonWire, truth: Truth, clock: Clock
    ) -> None:
        start, end = window(Timeframe.w1)
        wire.week_anchor = lambda monday: monday
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.w1, start, end))["AAPL"]
        self.check(got, truth.bars("AAPL", Timeframe.w1, start, end))
        wire.week_anchor = lambda monday: int(CAL.bucket(Timeframe.d1, np.asarray([monday - 36 * 3600]))[0])
        with pytest.raises(ProviderError, match="Saturday") as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.w1, start, end)
        assert info.value.code == "bad_payload"

    async def test_no_results_key_is_empty(
        self, provider: Provider, server: FakeServer, clock: Clock
    ) -> None:
        body = {"ticker": "AAPL", "queryCount": 0, "resultsCount": 0, "adjusted": False, "status": "OK"}
        server.inject(Fault("status", 200, body))
        got = await self.fetch(provider, clock, ["AAPL"], Timeframe.m1, *window(Timeframe.m1))
        assert len(got["AAPL"]) == 0

    @pytest.mark.parametrize(
        ("status", "code"), [("ERROR", "provider_error"), ("NOT_AUTHORIZED", "not_authorized")]
    )
    async def test_error_status_in_body(
        self, provider: Provider, server: FakeServer, clock: Clock, status: str, code: str
    ) -> None:
        server.inject(Fault("status", 200, {"status": status, "error": "plan does not include minute bars"}))
        with pytest.raises(ProviderError, match="plan does not") as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.m1, *window(Timeframe.m1))
        assert (info.value.code, info.value.retryable) == (code, False)

    async def test_next_url_to_another_host_is_refused(
        self, provider: Provider, server: FakeServer, clock: Clock
    ) -> None:
        body = {
            "ticker": "AAPL",
            "status": "OK",
            "adjusted": False,
            "next_url": "https://evil.example/v2/aggs",
        }
        server.inject(Fault("status", 200, body))
        with pytest.raises(ProviderError, match="evil.example") as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.m1, *window(Timeframe.m1))
        assert info.value.code == "bad_payload"
        assert len(server.seen) == 1

    async def test_adjusted_mismatch_is_bad_payload(
        self, provider: Provider, server: FakeServer, clock: Clock
    ) -> None:
        server.inject(Fault("status", 200, {"ticker": "AAPL", "status": "OK", "adjusted": True}))
        with pytest.raises(ProviderError, match="adjusted"):
            await self.fetch(provider, clock, ["AAPL"], Timeframe.m1, *window(Timeframe.m1))


# -- Alpaca -----------------------------------------------------------------


class TestAlpaca(PaginationContract, CredentialsContract, PartialTimeframesContract):
    NAME = "alpaca"
    TIMEFRAMES = tuple(t for t in Timeframe if t != Timeframe.h4)
    RATE_LIMIT = RateLimit(200, 60.0)

    @pytest.fixture
    def wire(self, truth: Truth) -> AlpacaWire:
        return AlpacaWire(truth, "key-id-1", SECRET)

    @pytest.fixture
    def provider_factory(self, client: httpx.AsyncClient) -> Callable[..., Provider]:
        def make(base_url: str, *, wrong: bool = False, **kw: Any) -> Provider:
            secret = "wrong-secret" if wrong else SECRET
            return AlpacaProvider(
                client, key_id="key-id-1", secret_key=secret, base_url=base_url, calendar=CAL, **kw
            )

        return make

    def test_capabilities_multi_symbol(self, provider: Provider) -> None:
        caps = provider.capabilities
        assert (caps.max_symbols, caps.page_limit, caps.page_unit) == (100, 10_000, PageUnit.bars)
        assert caps.realtime is True  # iex

    async def test_symbol_first_pages_all_followed(
        self, provider: Provider, server: FakeServer, wire: AlpacaWire, truth: Truth, clock: Clock
    ) -> None:
        wire.page_size = 100
        start, end = ny(2024, 3, 8), ny(2024, 3, 12)
        symbols = ["NVDA", "AAPL", "MSFT"]
        got = await self.fetch(provider, clock, symbols, Timeframe.m5, start, end)
        assert wire.pages[0] == ["AAPL"] and wire.pages[-1] == ["NVDA"]  # early pages: first symbol only
        for symbol in symbols:
            self.check(got[symbol], truth.bars(symbol, Timeframe.m5, start, end))
        tokens = [s.query.get("page_token", [None])[0] for s in server.seen]
        assert tokens[0] is None and all(tokens[1:]) and len(set(tokens[1:])) == len(tokens) - 1

    async def test_request_contract(self, provider: Provider, server: FakeServer, clock: Clock) -> None:
        start, end = window(Timeframe.h1)
        await self.fetch(provider, clock, ["AAPL", "msft"], Timeframe.h1, start, end)
        q = {k: v[0] for k, v in server.seen[0].query.items()}
        assert q == {
            "symbols": "AAPL,MSFT",
            "timeframe": "1Hour",
            "start": iso_z(start),
            "end": iso_z(end - 1),
            "limit": "10000",
            "adjustment": "raw",
            "feed": "iex",
            "sort": "asc",
        }
        assert server.seen[0].headers["apca-api-key-id"] == "key-id-1"

    async def test_daily_stamp_at_midnight_utc_fails_loudly(
        self, provider: Provider, wire: AlpacaWire, clock: Clock
    ) -> None:
        wire.daily_stamp = lambda label: label // DAY * DAY  # 00:00Z = 19:00/20:00 New York the day before
        with pytest.raises(ProviderError, match="not within a XNYS session date") as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, *window(Timeframe.d1))
        assert info.value.code == "bad_payload"

    async def test_too_many_symbols(self, provider: Provider, server: FakeServer, clock: Clock) -> None:
        with pytest.raises(NotSupported):
            await self.fetch(
                provider, clock, [f"S{i}" for i in range(101)], Timeframe.d1, *window(Timeframe.d1)
            )
        assert server.seen == []


# -- Tradier ----------------------------------------------------------------


class TestTradier(CredentialsContract, PartialTimeframesContract):
    NAME = "tradier"
    TIMEFRAMES = (Timeframe.m1, Timeframe.m5, Timeframe.m15, Timeframe.d1, Timeframe.w1)
    RATE_LIMIT = RateLimit(120, 60.0)
    HAS_TRADES = False

    @pytest.fixture
    def wire(self, truth: Truth) -> TradierWire:
        return TradierWire(truth, SECRET)

    @pytest.fixture
    def provider_factory(self, client: httpx.AsyncClient, clock: Clock) -> Callable[..., Provider]:
        def make(base_url: str, *, wrong: bool = False) -> Provider:
            token = "wrong-token" if wrong else SECRET
            return TradierProvider(client, token=token, base_url=base_url, calendar=CAL, clock=clock)

        return make

    def check(self, got: BarBatch, want: BarBatch) -> None:
        if not want.timeframe.intraday:  # history has no vwap
            want = want.take(slice(None))
            want = BarBatch(
                want.symbol,
                want.timeframe,
                want.provider,
                *(getattr(want, c) for c in ("ts", "open", "high", "low", "close", "volume")),
            )
        super().check(got, want)

    async def test_request_contract(self, provider: Provider, server: FakeServer, clock: Clock) -> None:
        _, open_, close = SPECIAL_DAYS["dst-start"]
        await self.fetch(provider, clock, ["AAPL"], Timeframe.m5, open_, close)
        q = {k: v[0] for k, v in server.seen[0].query.items()}
        assert q == {
            "symbol": "AAPL",
            "interval": "5min",
            "start": "2024-03-11 09:30",
            "end": "2024-03-11 16:00",
            "session_filter": "open",
        }
        assert server.seen[0].headers["accept"] == "application/json"

    async def test_single_row_as_object(self, provider: Provider, truth: Truth, clock: Clock) -> None:
        start, end = window(Timeframe.m15)
        label = int(truth.bars("AAPL", Timeframe.m15, start, end).ts[5])
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.m15, label, label + 900))["AAPL"]
        self.check(got, truth.bars("AAPL", Timeframe.m15, label, label + 900))
        assert len(got) == 1
        day = ny(2024, 3, 11)
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, day, day + DAY))["AAPL"]
        assert [iso_z(t) for t in got.ts] == ["2024-03-11T04:00:00Z"]

    async def test_history_null_is_empty(self, provider: Provider, clock: Clock) -> None:
        got = await self.fetch(provider, clock, ["AAPL"], Timeframe.d1, ny(2024, 3, 9), ny(2024, 3, 11))
        assert len(got["AAPL"]) == 0

    async def test_time_and_timestamp_must_agree(
        self, provider: Provider, wire: TradierWire, clock: Clock
    ) -> None:
        wire.time_shift_s = 3600
        with pytest.raises(ProviderError, match="disagree") as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.m5, *window(Timeframe.m5))
        assert info.value.code == "bad_payload"

    async def test_beyond_reach_is_not_supported(
        self, provider: Provider, server: FakeServer, clock: Clock
    ) -> None:
        start, end = window(Timeframe.m1)
        clock.now = float(end + 25 * DAY)
        with pytest.raises(NotSupported, match="20 days"):
            await provider.fetch(["AAPL"], Timeframe.m1, start, end)
        assert server.seen == []


# -- Yahoo ------------------------------------------------------------------


class TestYahoo(PartialTimeframesContract):
    NAME = "yahoo"
    TIMEFRAMES = (Timeframe.m1, Timeframe.m5, Timeframe.m15, Timeframe.m30, Timeframe.d1, Timeframe.w1)
    RATE_LIMIT = RateLimit(30, 60.0)
    HAS_VWAP = False
    HAS_TRADES = False
    SECRET = None

    @pytest.fixture
    def wire(self, truth: Truth) -> YahooWire:
        return YahooWire(truth)

    @pytest.fixture
    def provider_factory(self, client: httpx.AsyncClient, clock: Clock) -> Callable[..., Provider]:
        def make(base_url: str, *, wrong: bool = False) -> Provider:
            return YahooProvider(client, base_url=base_url, calendar=CAL, clock=clock)

        return make

    def test_hours_are_declared_misaligned(self, provider: Provider) -> None:
        assert provider.capabilities.hour_alignment == HourAlignment.session_open
        assert provider.capabilities.max_span_days[Timeframe.m1] == 7

    async def test_null_rows_dropped(
        self, provider: Provider, wire: YahooWire, truth: Truth, clock: Clock
    ) -> None:
        start, end = window(Timeframe.m1)
        served = wire.answer(
            "/v8/finance/chart/AAPL", {"interval": "1m", "period1": str(start), "period2": str(end)}, {}
        )
        quote = served.body["chart"]["result"][0]["indicators"]["quote"][0]
        nulls = sum(v is None for v in quote["close"])
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.m1, start, end))["AAPL"]
        assert nulls > 0 and len(got) == len(quote["close"]) - nulls
        self.check(got, truth.bars("AAPL", Timeframe.m1, start, end))

    async def test_live_quote_row_dropped(
        self, provider: Provider, wire: YahooWire, truth: Truth, clock: Clock
    ) -> None:
        wire.live_row = True
        start, end = window(Timeframe.m5)
        got = (await self.fetch(provider, clock, ["AAPL"], Timeframe.m5, start, end))["AAPL"]
        self.check(got, truth.bars("AAPL", Timeframe.m5, start, end))

    @pytest.mark.parametrize("tf", [Timeframe.h1, Timeframe.h4])
    async def test_hourly_not_supported(
        self, provider: Provider, server: FakeServer, clock: Clock, tf: Timeframe
    ) -> None:
        with pytest.raises(NotSupported):
            await self.fetch(provider, clock, ["AAPL"], tf, *window(tf))
        assert server.seen == []

    async def test_chart_error(self, provider: Provider, server: FakeServer, clock: Clock) -> None:
        error = {
            "chart": {"result": None, "error": {"code": "Not Found", "description": "symbol may be delisted"}}
        }
        server.inject(Fault("status", 404, error))
        with pytest.raises(ProviderError, match="delisted") as info:
            await self.fetch(provider, clock, ["NOPE"], Timeframe.d1, *window(Timeframe.d1))
        assert (info.value.code, info.value.retryable) == ("http_404", False)
        server.inject(Fault("status", 200, error))
        with pytest.raises(ProviderError, match="delisted") as info:
            await self.fetch(provider, clock, ["NOPE"], Timeframe.d1, *window(Timeframe.d1))
        assert info.value.code == "provider_error"

    async def test_other_granularity_is_bad_payload(
        self, provider: Provider, wire: YahooWire, clock: Clock
    ) -> None:
        wire.granularity = "1h"
        with pytest.raises(ProviderError, match="1h") as info:
            await self.fetch(provider, clock, ["AAPL"], Timeframe.m30, *window(Timeframe.m30))
        assert info.value.code == "bad_payload"

    async def test_m1_span_limited(self, provider: Provider, server: FakeServer, clock: Clock) -> None:
        with pytest.raises(NotSupported, match="7 days"):
            await self.fetch(provider, clock, ["AAPL"], Timeframe.m1, ny(2024, 3, 1), ny(2024, 3, 12))
        assert server.seen == []


# -- shared helpers ---------------------------------------------------------


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:20:00 GMT", now) == 400.0
    assert parse_retry_after("Tue, 14 Nov 2000 22:15:20 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_redact() -> None:
    text = 'GET https://x/v2?apiKey=abc123&sort=asc token=zz; key sEcReT {"api_key": "k1", "n": 1}'
    want = 'GET https://x/v2?apiKey=***&sort=asc token=***; key *** {"api_key": "***", "n": 1}'
    assert redact(text, ["sEcReT"]) == want


def test_weekly_labels() -> None:
    sunday, monday = ny(2024, 3, 10), ny(2024, 3, 11)  # DST starts on that Sunday
    tuesday_after_holiday = ny(2024, 1, 16, 9, 30)  # 2024-01-15 was a holiday (Monday)
    labels = weekly_labels(
        CAL, np.asarray([sunday, monday, monday + 4 * DAY, tuesday_after_holiday]), provider="t"
    )
    assert [iso_z(t) for t in labels] == [
        "2024-03-11T04:00:00Z",
        "2024-03-11T04:00:00Z",
        "2024-03-11T04:00:00Z",
        "2024-01-15T05:00:00Z",
    ]
    with pytest.raises(ProviderError, match="Saturday"):
        weekly_labels(CAL, np.asarray([ny(2024, 3, 9)]), provider="t")


def test_daily_labels() -> None:
    stamps = np.asarray([ny(2024, 3, 11), ny(2024, 3, 11, 9, 30), ny(2024, 3, 11, 16, 5)])
    assert set(daily_labels(CAL, stamps, provider="t").tolist()) == {ny(2024, 3, 11)}
    for bad in (ny(2024, 3, 10, 20), ny(2024, 3, 9, 10)):  # 00:00Z Monday; a Saturday
        with pytest.raises(ProviderError, match="session date"):
            daily_labels(CAL, np.asarray([bad]), provider="t")
