"""Router rules (which provider, in which order) and fallback behaviour, with fake providers."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, NotSupported, ProviderError
from barfill.ports import Provider
from barfill.providers.router import Router

M1, H1, D1 = Timeframe.m1, Timeframe.h1, Timeframe.d1
ALL = frozenset(Timeframe)


def ts(text: str) -> int:
    """A UTC instant from ISO text."""
    return int(pd.Timestamp(text, tz="UTC").timestamp())


# Tuesday 2024-03-12, 11:00 New York (EDT): the market is open.
NOW = ts("2024-03-12 15:00")
TODAY_MIDNIGHT_NY = ts("2024-03-12 04:00")


class FakeProvider:
    def __init__(
        self,
        name: str,
        *,
        timeframes: frozenset[Timeframe] = ALL,
        realtime: bool = False,
        history_days: dict[Timeframe, int] | None = None,
        max_symbols: int = 1,
        history_start: int | None = None,
        published_at_local_s: int | None = None,
        error: ProviderError | None = None,
    ) -> None:
        self.name = name
        self.error = error
        self.calls: list[tuple[tuple[str, ...], Timeframe, int, int]] = []
        self._caps = Capabilities(
            name=name,
            timeframes=timeframes,
            page_limit=50_000,
            realtime=realtime,
            history_days=history_days or {},
            max_symbols=max_symbols,
            history_start=history_start,
            published_at_local_s=published_at_local_s,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        self.calls.append((tuple(symbols), timeframe, start, end))
        if self.error is not None:
            raise self.error
        return {s: BarBatch.empty(s, timeframe, self.name) for s in symbols if s != "NOBARS"}

    async def aclose(self) -> None:
        return None


def make_router(*providers: FakeProvider, historical: list[str], realtime: list[str]) -> Router:
    return Router(
        {p.name: p for p in providers},
        historical=historical,
        realtime=realtime,
        calendar=get_calendar(),
    )


def standard() -> tuple[Router, dict[str, FakeProvider]]:
    ps = {
        "polygon": FakeProvider("polygon", realtime=True),
        "flatfiles": FakeProvider("flatfiles", timeframes=frozenset({M1, D1})),
        "tradier": FakeProvider(
            "tradier",
            timeframes=frozenset({M1, Timeframe.m5, Timeframe.m15, D1}),
            realtime=True,
            history_days={M1: 20, Timeframe.m5: 40, Timeframe.m15: 40},
        ),
        "synthetic": FakeProvider("synthetic", realtime=True),
    }
    router = make_router(
        *ps.values(),
        historical=["flatfiles", "polygon", "alpaca", "synthetic"],  # alpaca not configured
        realtime=["tradier", "polygon", "flatfiles", "synthetic"],
    )
    return router, ps


def test_fake_provider_fits_the_port() -> None:
    assert isinstance(FakeProvider("x"), Provider)


def test_finished_sessions_use_the_historical_order() -> None:
    router, _ = standard()
    assert router.choose(M1, ts("2024-03-01 14:30"), ts("2024-03-02"), now=NOW) == [
        "flatfiles",
        "polygon",
        "synthetic",
    ]


def test_a_range_up_to_todays_midnight_is_final_and_historical() -> None:
    router, _ = standard()
    assert router.choose(D1, ts("2024-03-01"), TODAY_MIDNIGHT_NY, now=NOW)[0] == "flatfiles"


def test_a_range_touching_todays_session_is_provisional_on_realtime_providers_only() -> None:
    router, _ = standard()
    start, end = ts("2024-03-12 13:30"), ts("2024-03-12 14:30")  # 09:30-10:30 EDT, complete at 11:00
    # Not final for anyone before 20:00 New York: no historical provider serves it.
    assert router.choose(M1, start, end, now=NOW) == []
    assert "flatfiles: [2024-03-12T13:30:00Z, 2024-03-12T14:30:00Z) is not final yet" in router.explain(
        M1, start, end, now=NOW
    )
    got = router.choose(M1, start, end, now=NOW, layer=Layer.intraday)
    assert got == ["tradier", "polygon", "synthetic"]  # flatfiles is not realtime
    assert "flatfiles: no provisional bars (not a realtime provider)" in router.explain(
        M1, start, end, now=NOW, layer=Layer.intraday
    )
    # A forming bar is served by nobody.
    assert router.choose(M1, start, NOW + 60, now=NOW, layer=Layer.intraday) == []


def test_a_weekly_bar_of_the_current_week_is_not_final() -> None:
    router, _ = standard()
    monday = ts("2024-03-11 04:00")
    assert router.choose(Timeframe.w1, monday, monday + 7 * 86_400, now=NOW) == []
    assert router.choose(Timeframe.w1, monday - 7 * 86_400, monday, now=NOW) == ["polygon", "synthetic"]


def test_after_the_close_the_session_is_final_only_at_the_extended_close() -> None:
    router, _ = standard()
    start, end = ts("2024-03-12 19:00"), ts("2024-03-12 20:00")  # 15:00-16:00 EDT
    assert router.choose(M1, start, end, now=ts("2024-03-12 23:59")) == []  # 19:59 EDT
    assert router.choose(M1, start, end, now=ts("2024-03-13 00:00"))[0] == "flatfiles"  # 20:00 EDT


def test_flat_files_wait_for_publication_while_http_providers_are_final() -> None:
    files = FakeProvider("flatfiles", timeframes=frozenset({M1, D1}), published_at_local_s=86_400 + 7 * 3600)
    poly = FakeProvider("polygon")
    router = make_router(files, poly, historical=["flatfiles", "polygon"], realtime=[])
    start, end = TODAY_MIDNIGHT_NY, TODAY_MIDNIGHT_NY + 86_400
    assert router.choose(D1, start, end, now=ts("2024-03-13 06:00")) == ["polygon"]  # 02:00 EDT
    assert router.choose(D1, start, end, now=ts("2024-03-13 11:00")) == ["flatfiles", "polygon"]
    # The planner's question is different: flat files will serve it, so it waits for them.
    assigned, unfillable = router.assign(D1, [Interval(start, end)], now=ts("2024-03-13 06:00"))
    assert assigned == [("flatfiles", [Interval(start, end)])] and unfillable == []


def test_providers_without_the_timeframe_are_skipped() -> None:
    router, _ = standard()
    assert router.choose(H1, ts("2024-03-01"), ts("2024-03-02"), now=NOW) == ["polygon", "synthetic"]
    assert "flatfiles: no h1 bars" in router.explain(H1, ts("2024-03-01"), ts("2024-03-02"), now=NOW)


def test_history_depth_is_respected() -> None:
    router, _ = standard()
    end = TODAY_MIDNIGHT_NY + 6 * 3600  # 06:00 EDT: complete at NOW (11:00 EDT)
    recent = router.choose(M1, NOW - 10 * 86_400, end, now=NOW, layer=Layer.intraday)
    old = router.choose(M1, NOW - 30 * 86_400, end, now=NOW, layer=Layer.intraday)
    assert recent[0] == "tradier"
    assert old == ["polygon", "synthetic"]
    why = router.explain(M1, NOW - 30 * 86_400, end, now=NOW, layer=Layer.intraday)
    assert any("reaches back 20 days" in r for r in why)


def test_history_start_sends_older_ranges_elsewhere_or_reports_them_unfillable() -> None:
    alpaca = FakeProvider("alpaca", realtime=True, history_start=ts("2016-01-01"))
    poly = FakeProvider("polygon")
    old = Interval(ts("2010-03-01"), ts("2010-03-02"))
    both = make_router(alpaca, poly, historical=["alpaca", "polygon"], realtime=["alpaca"])
    assert both.choose(D1, *old, now=NOW) == ["polygon"]
    assert both.assign(D1, [old], now=NOW) == ([("polygon", [old])], [])
    alone = make_router(alpaca, historical=["alpaca"], realtime=["alpaca"])
    assigned, unfillable = alone.assign(D1, [old], now=NOW)
    assert assigned == []
    assert unfillable == [
        (old, "before the history of every provider serving d1 (alpaca: d1 history starts 2016-01-01)")
    ]


def test_pinned_provider_is_the_only_choice() -> None:
    router, _ = standard()
    assert router.choose(M1, ts("2024-03-01"), ts("2024-03-02"), now=NOW, pinned="synthetic") == ["synthetic"]
    # Pinned still has to be able to serve: flatfiles has no h1.
    assert router.choose(H1, ts("2024-03-01"), ts("2024-03-02"), now=NOW, pinned="flatfiles") == []


def test_unknown_pinned_provider_names_the_known_ones() -> None:
    router, _ = standard()
    with pytest.raises(InvalidInput, match="flatfiles, polygon, synthetic, tradier") as e:
        router.choose(M1, ts("2024-03-01"), ts("2024-03-02"), now=NOW, pinned="polgon")
    assert e.value.field == "provider"


def test_duplicate_and_unconfigured_names_in_orders_are_dropped() -> None:
    p = FakeProvider("a")
    router = make_router(p, historical=["a", "zzz", "a"], realtime=[])
    assert router.historical == ["a"]
    assert router.realtime == []


async def test_fetch_falls_back_on_not_supported_and_permanent_errors() -> None:
    first = FakeProvider("first", error=NotSupported("no such symbol"))
    second = FakeProvider("second", error=ProviderError("http_404", "unknown ticker", retryable=False))
    third = FakeProvider("third")
    router = make_router(first, second, third, historical=["first", "second", "third"], realtime=[])
    attempts: list[str] = []

    async def on_attempt(name: str) -> None:
        attempts.append(name)

    served, batches = await router.fetch(
        ["AAPL"], M1, ts("2024-03-01 14:30"), ts("2024-03-01 15:30"), now=NOW, on_attempt=on_attempt
    )
    assert served == "third"
    assert attempts == ["first", "second", "third"]
    assert list(batches) == ["AAPL"] and batches["AAPL"].provider == "third"


async def test_fetch_reraises_retryable_errors_without_touching_the_next_provider() -> None:
    busy = FakeProvider("busy", error=ProviderError("http_429", "slow down", retryable=True, retry_after_s=7))
    spare = FakeProvider("spare")
    router = make_router(busy, spare, historical=["busy", "spare"], realtime=[])
    with pytest.raises(ProviderError) as e:
        await router.fetch(["AAPL"], M1, ts("2024-03-01 14:30"), ts("2024-03-01 15:30"), now=NOW)
    assert e.value.code == "http_429" and e.value.retry_after_s == 7
    assert spare.calls == []


async def test_when_every_provider_fails_the_error_lists_them_all() -> None:
    a = FakeProvider("a", error=NotSupported("nope"))
    b = FakeProvider("b", error=ProviderError("missing_file", "2024-03-01.csv.gz", retryable=False))
    router = make_router(a, b, historical=["a", "b"], realtime=[])
    with pytest.raises(ProviderError) as e:
        await router.fetch(["AAPL"], M1, ts("2024-03-01 14:30"), ts("2024-03-01 15:30"), now=NOW)
    assert not isinstance(e.value, NotSupported)
    assert e.value.code == "missing_file" and not e.value.retryable
    assert (
        str(e.value) == "every provider failed: a (not_supported): nope; b (missing_file): 2024-03-01.csv.gz"
    )


async def test_one_failing_provider_is_reported_once_not_wrapped() -> None:
    bad = ProviderError("http_404", "polygon: GET /v2/aggs/ticker/ZZZZ: HTTP 404", retryable=False)
    polygon = FakeProvider("polygon", error=bad)
    router = make_router(polygon, historical=["polygon"], realtime=[])
    with pytest.raises(ProviderError) as e:
        await router.fetch(["ZZZZ"], M1, ts("2024-03-01 14:30"), ts("2024-03-01 15:30"), now=NOW)
    assert e.value is bad and str(e.value) == "polygon: GET /v2/aggs/ticker/ZZZZ: HTTP 404"
    polygon.error = ProviderError("http_404", "polygon: HTTP 404", retryable=False)
    other = FakeProvider("other", error=ProviderError("http_404", "other: HTTP 404", retryable=False))
    router = make_router(polygon, other, historical=["polygon", "other"], realtime=[])
    with pytest.raises(ProviderError) as e:
        await router.fetch(["ZZZZ"], M1, ts("2024-03-01 14:30"), ts("2024-03-01 15:30"), now=NOW)
    text = str(e.value)
    assert text == "every provider failed: polygon (http_404): HTTP 404; other (http_404): HTTP 404"


async def test_when_nobody_supports_it_the_error_is_not_supported() -> None:
    a = FakeProvider("a", error=NotSupported("nope"))
    router = make_router(a, historical=["a"], realtime=[])
    with pytest.raises(NotSupported, match="^a: nope$"):
        await router.fetch(["AAPL"], M1, ts("2024-03-01 14:30"), ts("2024-03-01 15:30"), now=NOW)
    with pytest.raises(NotSupported, match="no provider configured for realtime"):
        await router.fetch(["AAPL"], M1, NOW - 3600, NOW, now=NOW, layer=Layer.intraday)
    with pytest.raises(NotSupported, match="is not final yet"):
        await router.fetch(["AAPL"], M1, NOW - 3600, NOW, now=NOW)
    assert len(a.calls) == 1


async def test_fetch_splits_symbols_by_max_symbols_and_fills_missing_ones() -> None:
    multi = FakeProvider("multi", max_symbols=2)
    router = make_router(multi, historical=["multi"], realtime=[])
    attempts: list[str] = []

    async def on_attempt(name: str) -> None:
        attempts.append(name)

    served, batches = await router.fetch(
        ["A", "B", "NOBARS", "A"], D1, ts("2024-03-01"), ts("2024-03-08"), now=NOW, on_attempt=on_attempt
    )
    assert served == "multi"
    assert [c[0] for c in multi.calls] == [("A", "B"), ("NOBARS",)]
    assert attempts == ["multi", "multi"]  # one rate-limit slot per request
    assert sorted(batches) == ["A", "B", "NOBARS"]
    assert len(batches["NOBARS"]) == 0 and batches["NOBARS"].provider == "multi"
