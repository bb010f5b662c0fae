"""The synthetic provider: deterministic, slicing-independent, calendar-true, never forming."""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import RateLimit
from barfill.domain.timeframes import Timeframe
from barfill.errors import NotSupported, ProviderError
from barfill.ports import Provider
from barfill.providers.synthetic import MISSING_MINUTE_RATE, SyntheticProvider

CAL = get_calendar("XNYS")
FAR_FUTURE = 4_000_000_000.0  # every bar in these tests is complete
M1, H1, D1, W1 = Timeframe.m1, Timeframe.h1, Timeframe.d1, Timeframe.w1


def ts(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").timestamp())


def provider(**kwargs: object) -> SyntheticProvider:
    kwargs.setdefault("now", lambda: FAR_FUTURE)
    return SyntheticProvider(calendar=CAL, **kwargs)  # type: ignore[arg-type]


def assert_same(a: BarBatch, b: BarBatch) -> None:
    for column in ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), err_msg=column)


def resample_m1(m1: BarBatch, timeframe: Timeframe) -> pd.DataFrame:
    """An independent (pandas) aggregation of minute bars into ``timeframe`` labels."""
    frame = pd.DataFrame(
        {
            "label": CAL.bucket(timeframe, m1.ts),
            "open": m1.open,
            "high": m1.high,
            "low": m1.low,
            "close": m1.close,
            "volume": m1.volume,
            "pv": m1.vwap * m1.volume,
            "trade_count": m1.trade_count,
        }
    )
    out = frame.groupby("label", sort=True).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        pv=("pv", "sum"),
        trade_count=("trade_count", "sum"),
    )
    out["vwap"] = out["pv"] / out["volume"]
    return out


def test_fits_the_provider_port_and_declares_its_capabilities() -> None:
    p = provider(page_limit=10_000, rate_limit=RateLimit(5, 60.0))
    assert isinstance(p, Provider)
    caps = p.capabilities
    assert caps.timeframes == frozenset(Timeframe)
    assert caps.page_limit == 10_000 and caps.max_symbols == 50
    assert caps.realtime and caps.history_days == {}
    assert caps.rate_limit == RateLimit(5, 60.0)


@pytest.mark.parametrize("timeframe", list(Timeframe))
def test_any_slicing_returns_the_same_bars(timeframe: Timeframe) -> None:
    a, c = ts("2024-01-02"), ts("2024-04-02")
    b = ts("2024-02-14 16:10")  # mid-session, mid-hour, mid-week
    whole = provider(seed=7).truth("AAPL", timeframe, a, c)
    fresh = provider(seed=7)  # a new instance (empty caches), fetched in two pieces
    joined = BarBatch.concat([fresh.truth("AAPL", timeframe, a, b), fresh.truth("AAPL", timeframe, b, c)])
    assert len(whole) > 0
    assert_same(whole, joined)


def test_seed_and_symbol_change_the_numbers() -> None:
    a, b = ts("2024-01-02"), ts("2024-01-09")
    base = provider(seed=1).truth("AAPL", M1, a, b)
    assert not np.array_equal(base.close, provider(seed=2).truth("AAPL", M1, a, b).close)
    assert not np.array_equal(base.close[:50], provider(seed=1).truth("MSFT", M1, a, b).close[:50])


@pytest.mark.parametrize("timeframe", [t for t in Timeframe if t != M1])
def test_every_timeframe_is_the_aggregate_of_the_minutes(timeframe: Timeframe) -> None:
    p = provider(seed=3)
    # Whole weeks, so no coarse bar is cut by the range.
    a, b = ts("2024-02-26 05:00"), ts("2024-03-25 04:00")
    m1 = p.truth("SPY", M1, a, b)
    coarse = p.truth("SPY", timeframe, a, b)
    expected = resample_m1(m1, timeframe)
    np.testing.assert_array_equal(coarse.ts, expected.index.to_numpy())
    for column in ("open", "high", "low", "close", "volume", "trade_count"):
        np.testing.assert_array_equal(getattr(coarse, column), expected[column].to_numpy(), err_msg=column)
    np.testing.assert_allclose(coarse.vwap, expected["vwap"].to_numpy(), rtol=1e-12)


def test_bars_are_valid_and_look_like_market_data() -> None:
    bars = provider().truth("AAPL", M1, ts("2024-01-02"), ts("2024-02-01"))
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.low > 0)
    for column in ("open", "high", "low", "close"):
        values = getattr(bars, column)
        np.testing.assert_allclose(values, np.round(values, 2), atol=1e-9)  # cents
    assert np.all(bars.volume >= 1) and np.all(bars.volume == np.floor(bars.volume))
    assert np.all((bars.vwap >= bars.low) & (bars.vwap <= bars.high))
    assert np.all(bars.trade_count >= 1)
    assert np.all(np.diff(bars.ts) > 0)


def test_no_bar_outside_trading_time_and_some_minutes_missing() -> None:
    a, b = ts("2024-06-01"), ts("2024-09-01")
    p = provider()
    m1 = p.truth("QQQ", M1, a, b)
    sessions = np.array([CAL.session_at(int(t)) for t in m1.ts])
    assert all(s is not None for s in sessions)
    possible = sum((s.close - s.open) // 60 for s in CAL.sessions(a, b))
    missing = 1 - len(m1) / possible
    assert 0.5 * MISSING_MINUTE_RATE < missing < 2 * MISSING_MINUTE_RATE
    # Weekends and 2024-07-04 have nothing, at any timeframe.
    h1 = p.truth("QQQ", H1, a, b)
    days = pd.to_datetime(h1.ts, unit="s", utc=True).tz_convert("America/New_York").date
    assert pd.Timestamp("2024-07-04").date() not in set(days)
    assert all(d.weekday() < 5 for d in days)
    np.testing.assert_array_equal(np.unique(CAL.bucket(H1, m1.ts)), h1.ts)


def test_dst_change_week() -> None:
    # 2024-03-10: New York moves from EST (UTC-5) to EDT (UTC-4).
    p = provider()
    friday = p.truth("AAPL", M1, ts("2024-03-08"), ts("2024-03-09"))
    monday = p.truth("AAPL", M1, ts("2024-03-11"), ts("2024-03-12"))
    assert friday.ts.min() >= ts("2024-03-08 14:30") and friday.ts.max() < ts("2024-03-08 21:00")
    assert monday.ts.min() >= ts("2024-03-11 13:30") and monday.ts.max() < ts("2024-03-11 20:00")
    h1_fri = p.truth("AAPL", H1, ts("2024-03-08"), ts("2024-03-09"))
    h1_mon = p.truth("AAPL", H1, ts("2024-03-11"), ts("2024-03-12"))
    assert h1_fri.ts[0] == ts("2024-03-08 14:00") and h1_mon.ts[0] == ts("2024-03-11 13:00")  # 09:00 local
    assert len(h1_fri) == len(h1_mon) == 7
    d1 = p.truth("AAPL", D1, ts("2024-03-04"), ts("2024-03-16"))
    assert ts("2024-03-08 05:00") in d1.ts and ts("2024-03-11 04:00") in d1.ts  # 00:00 local
    w1 = p.truth("AAPL", W1, ts("2024-03-04"), ts("2024-03-18"))
    np.testing.assert_array_equal(w1.ts, [ts("2024-03-04 05:00"), ts("2024-03-11 04:00")])


def test_half_day_after_thanksgiving() -> None:
    p = provider()
    m1 = p.truth("AAPL", M1, ts("2024-11-29"), ts("2024-11-30"))
    assert m1.ts.min() >= ts("2024-11-29 14:30") and m1.ts.max() < ts("2024-11-29 18:00")  # 13:00 EST
    assert 180 < len(m1) <= 210
    h1 = p.truth("AAPL", H1, ts("2024-11-29"), ts("2024-11-30"))
    np.testing.assert_array_equal(h1.ts, [ts(f"2024-11-29 {h}:00") for h in (14, 15, 16, 17)])
    d1 = p.truth("AAPL", D1, ts("2024-11-28"), ts("2024-11-30"))
    assert list(d1.ts) == [ts("2024-11-29 05:00")]  # Thanksgiving itself has no bar
    assert d1.close[0] == m1.close[-1] and d1.open[0] == m1.open[0]
    assert d1.high[0] == m1.high.max() and d1.volume[0] == m1.volume.sum()


def test_no_forming_bars_at_a_pinned_now() -> None:
    now = ts("2024-03-12 15:07:30")  # Tuesday 11:07:30 EDT
    p = provider(now=lambda: float(now))
    a, b = ts("2024-03-11"), ts("2024-03-13")
    m1 = p.truth("AAPL", M1, a, b)
    assert m1.ts.max() <= ts("2024-03-12 15:06")
    h1 = p.truth("AAPL", H1, a, b)
    assert h1.ts.max() == ts("2024-03-12 14:00")  # 10:00-11:00 is done; 11:00 is forming
    assert list(p.truth("AAPL", D1, a, b).ts) == [ts("2024-03-11 04:00")]
    assert len(p.truth("AAPL", W1, ts("2024-03-11"), ts("2024-03-18"))) == 0
    # What is complete is identical to what an all-knowing clock returns.
    assert_same(m1, provider().truth("AAPL", M1, a, ts("2024-03-12 15:07")))


async def test_fetch_serves_many_symbols_counts_and_logs_requests() -> None:
    p = provider()
    a, b = ts("2024-01-02"), ts("2024-01-03")
    got = await p.fetch(["AAPL", "MSFT"], H1, a, b)
    assert sorted(got) == ["AAPL", "MSFT"]
    assert_same(got["MSFT"], p.truth("MSFT", H1, a, b))
    assert got["AAPL"].provider == "synthetic"
    await p.fetch(["AAPL"], D1, a, b)
    assert p.requests == 2
    assert p.request_log == [(("AAPL", "MSFT"), H1, a, b), (("AAPL",), D1, a, b)]
    with pytest.raises(NotSupported, match="at most 50"):
        await p.fetch([f"S{i}" for i in range(51)], H1, a, b)
    await p.aclose()


async def test_failures_are_reproducible_and_retries_can_succeed() -> None:
    a, b = ts("2024-01-02"), ts("2024-01-03")

    async def outcomes(p: SyntheticProvider, symbol: str) -> list[bool]:
        results = []
        for _ in range(12):
            try:
                await p.fetch([symbol], M1, a, b)
                results.append(True)
            except ProviderError as e:
                assert e.code == "synthetic_fault" and e.retryable
                results.append(False)
        return results

    runs = [await outcomes(provider(failure_rate=0.5, seed=11), "AAPL") for _ in range(2)]
    assert runs[0] == runs[1]  # same seed, same request sequence: same faults
    assert True in runs[0] and False in runs[0]
    never = await outcomes(provider(failure_rate=0.0), "AAPL")
    always = await outcomes(provider(failure_rate=1.0), "AAPL")
    assert all(never) and not any(always)


async def test_latency_is_awaited_concurrently(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four fetches wait out their latency at the same time, not one after another."""
    waiting: list[float] = []
    gate = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        waiting.append(seconds)
        await gate.wait()

    monkeypatch.setattr("barfill.providers.synthetic.asyncio.sleep", held_sleep)
    p = provider(latency_s=0.2)
    a, b = ts("2024-01-02"), ts("2024-01-03")
    fetches = asyncio.gather(*(p.fetch([s], D1, a, b) for s in ("A", "B", "C", "D")))
    for _ in range(100):  # let every fetch reach its latency; none may finish before the gate opens
        if len(waiting) == 4:
            break
        await asyncio.wait([fetches], timeout=0)
    assert waiting == [0.2] * 4 and not fetches.done()
    gate.set()
    got = await fetches
    assert [set(g) for g in got] == [{"A"}, {"B"}, {"C"}, {"D"}] and all(
        len(g[s]) == 1 for g, s in zip(got, "ABCD", strict=True)
    )


def test_two_years_of_hourly_bars_for_twenty_symbols_are_complete() -> None:
    """Every session hour of two years has a bar, for every symbol (speed: ``python -m bench synthetic``)."""
    p = provider()
    a, b = ts("2023-01-01"), ts("2025-01-01")
    total = sum(len(p.truth(f"SYM{i}", H1, a, b)) for i in range(20))
    i0, i1 = CAL.session_indices(a, b)
    assert total == 20 * int(CAL.bars_per_session(H1, i0, i1).sum())  # no hour without a trade


def test_splt_has_a_4_to_1_split_and_quarterly_dividends() -> None:
    p = provider()
    day = p.truth("SPLT", Timeframe.d1, ts("2024-06-03"), ts("2024-06-15"))
    other = p.truth("AAPL", Timeframe.d1, ts("2024-06-03"), ts("2024-06-15"))
    labels = [str(pd.Timestamp(t, unit="s", tz=CAL.tz).date()) for t in day.ts]
    i = labels.index("2024-06-10")
    # The raw bars jump at the split (the generated walk moves a few percent a day at most).
    assert 3.0 < day.close[i - 1] / day.open[i] < 5.0
    assert 0.8 < other.close[i - 1] / other.open[i] < 1.25
    got = asyncio.run(p.fetch_actions("SPLT", dt.date(2024, 1, 1), dt.date(2024, 12, 31)))
    assert [(a.kind.value, a.ex_date.isoformat(), a.ratio, a.cash) for a in got] == [
        ("dividend", "2024-02-15", None, 0.88),
        ("dividend", "2024-05-15", None, 0.88),
        ("split", "2024-06-10", 4.0, None),
        ("dividend", "2024-08-15", None, 0.22),
        ("dividend", "2024-11-15", None, 0.22),
    ]
    assert asyncio.run(p.fetch_actions("AAPL", dt.date(2000, 1, 1), dt.date(2030, 1, 1))) == []
    # Quarters before the calendar's first session have no session on or after their 15th to be
    # ex on (they used to all land on that first session).
    first = CAL.dates[0].astype(dt.date)
    early = asyncio.run(p.fetch_actions("SPLT", dt.date(1970, 1, 1), first + dt.timedelta(days=60)))
    assert early and all(a.ex_date.day >= 15 for a in early), early
    assert p.action_requests == 3
