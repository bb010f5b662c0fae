"""The replay's own servers, checked without the engine: their truth, their timing, their request log.

If these fail, a replay failure means nothing; if they pass, a replay failure
is the engine's.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from barfill.bootstrap import build_providers
from barfill.config import load_settings
from barfill.domain.bars import BarBatch
from barfill.domain.timeframes import Timeframe
from barfill.providers.http import LoopClient
from barfill.testing.clock import SimClock
from tests.integration.providers.servers import FakeServer
from tests.replay.harness import CAL, ny
from tests.replay.market import (
    IEX,
    SIP,
    TRADIER,
    FlatFolder,
    Market,
    RecordingFlatFiles,
    RequestLog,
    TimedAlpacaWire,
    TimedPolygonWire,
    TimedTradierWire,
    TimedYahooWire,
)

WED = date(2025, 11, 26)
FRI = date(2025, 11, 28)  # early close, 13:00 (extended close 17:00)
MON = date(2025, 12, 1)
M15 = Timeframe.m15
D1 = Timeframe.d1


def _market(at: int) -> tuple[Market, SimClock]:
    clock = SimClock(at)
    return Market(CAL, clock.now), clock


def test_a_bar_exists_once_its_interval_has_ended() -> None:
    market, clock = _market(ny(WED, 11, 0))
    lo, hi = ny(WED, 0), ny(WED, 23)
    final = market.final_bars("AAPL", M15, lo, hi)
    served = market.served("AAPL", M15, lo, hi, extended=False, vendor=SIP)
    ended = final.ts[final.ts + 900 <= ny(WED, 11, 0)]
    assert served.ts.tolist() == ended.tolist()
    assert ny(WED, 10, 45) in served.ts.tolist() or ny(WED, 10, 45) not in final.ts.tolist()
    assert ny(WED, 11, 0) not in served.ts.tolist()
    # The day bar exists from the open, not before.
    clock.set(ny(WED, 9, 29))
    assert len(market.served("AAPL", D1, lo, hi, extended=False, vendor=SIP)) == 0
    clock.set(ny(WED, 9, 30))
    assert len(market.served("AAPL", D1, lo, hi, extended=False, vendor=SIP)) == 1


def test_volumes_are_provisional_until_2000_new_york_then_final() -> None:
    market, clock = _market(ny(WED, 11, 0))
    lo, hi = ny(WED, 0), ny(WED, 23)
    final_d1 = market.final_bars("AAPL", D1, lo, hi)
    day_volumes = []
    for hh, mm in ((11, 0), (16, 30), (19, 59)):
        clock.set(ny(WED, hh, mm))
        day_volumes.append(float(market.served("AAPL", D1, lo, hi, extended=False, vendor=SIP).volume[0]))
        minute = market.served("AAPL", M15, lo, hi, extended=False, vendor=SIP)
        final = market.final_bars("AAPL", M15, lo, hi).take(
            np.isin(market.final_bars("AAPL", M15, lo, hi).ts, minute.ts)
        )
        assert np.all(minute.volume < final.volume), (hh, mm)
        np.testing.assert_array_equal(minute.close, final.close)
    assert day_volumes == sorted(day_volumes) and len(set(day_volumes)) == 3  # keeps changing
    assert day_volumes[-1] < float(final_d1.volume[0])
    clock.set(ny(WED, 20, 0))
    now_d1 = market.served("AAPL", D1, lo, hi, extended=False, vendor=SIP)
    np.testing.assert_array_equal(now_d1.volume, final_d1.volume)
    np.testing.assert_array_equal(
        market.served("AAPL", M15, lo, hi, extended=False, vendor=SIP).volume,
        market.final_bars("AAPL", M15, lo, hi).volume,
    )
    # The early close is final at its own extended close (17:00), not 20:00.
    assert not market.is_final(market.session_of(ny(FRI, 12)), ny(FRI, 16, 59))
    assert market.is_final(market.session_of(ny(FRI, 12)), ny(FRI, 17, 0))


def test_each_vendor_has_its_own_volumes_and_the_same_prices() -> None:
    market, _ = _market(ny(MON, 8, 0))
    lo, hi = ny(WED, 0), ny(FRI, 23)
    sip = market.served("AAPL", M15, lo, hi, extended=False, vendor=SIP)
    for vendor in (IEX, TRADIER):
        other = market.served("AAPL", M15, lo, hi, extended=False, vendor=vendor)
        np.testing.assert_array_equal(other.ts, sip.ts)
        np.testing.assert_array_equal(other.close, sip.close)
        assert np.all(other.volume != sip.volume), vendor
    np.testing.assert_array_equal(sip.volume, market.final_bars("AAPL", M15, lo, hi).volume)


def _fetch_all(
    urls: dict[str, str], clock: SimClock, lo: int, hi: int
) -> dict[str, dict[Timeframe, BarBatch]]:
    settings = load_settings(
        database_url="sqlite:///unused.db",
        polygon_api_key="pk",
        polygon_base_url=urls["polygon"],
        alpaca_key_id="ak",
        alpaca_secret_key="as",
        alpaca_base_url=urls["alpaca"],
        tradier_token="tt",
        tradier_base_url=urls["tradier"],
        yahoo_enabled=True,
        yahoo_base_url=urls["yahoo"],
    )

    async def main() -> dict[str, dict[Timeframe, BarBatch]]:
        async with LoopClient(timeout_s=10.0) as http:
            providers = build_providers(settings, http, CAL, clock=clock.now)[0]
            return {
                name: {tf: (await providers[name].fetch(["AAPL"], tf, lo, hi))["AAPL"] for tf in (M15, D1)}
                for name in ("polygon", "alpaca", "tradier", "yahoo")
            }

    return asyncio.run(main())


def test_the_real_adapters_read_the_final_truth_through_each_wire() -> None:
    """What the replay expects in the store is what the preferred adapter returns once final."""
    market, clock = _market(ny(MON, 8, 0))
    log = RequestLog()
    lo, hi = ny(date(2025, 11, 24), 0), ny(FRI, 23)  # Mon..Fri: Thanksgiving and the early close
    wires = {
        "polygon": TimedPolygonWire(market, log),
        "alpaca": TimedAlpacaWire(market, log),
        "tradier": TimedTradierWire(market, log),
        "yahoo": TimedYahooWire(market, log),
    }
    servers = {name: FakeServer(wire) for name, wire in wires.items()}
    for s in servers.values():
        s.__enter__()
    try:
        got = _fetch_all({n: s.url for n, s in servers.items()}, clock, lo, hi)
    finally:
        for s in servers.values():
            s.__exit__(None, None, None)
        assert all(not s.errors for s in servers.values()), [s.errors for s in servers.values()]
    for tf in (M15, D1):
        final = market.final_bars("AAPL", tf, lo, hi)
        assert len(final) > 0
        for name in ("polygon", "yahoo", "alpaca", "tradier"):
            batch = got[name][tf]
            np.testing.assert_array_equal(batch.ts, final.ts, err_msg=f"{name} {tf.value}")
            np.testing.assert_allclose(batch.close, final.close, err_msg=f"{name} {tf.value}")
            same_volume = bool(np.array_equal(batch.volume, final.volume))
            assert same_volume == (name in ("polygon", "yahoo")), f"{name} {tf.value}"
    # Four servers, two timeframes, one first-page request each; every session final at Mon 08:00.
    assert log.calls == {"polygon": 2, "alpaca": 2, "tradier": 2, "yahoo": 2}
    assert all(r.final for r in log.requests)
    sessions = {r.session for r in log.requests if r.server == "polygon" and r.timeframe == M15}
    assert sessions == {date(2025, 11, d) for d in (24, 25, 26, 28)}  # not Thanksgiving


def test_requests_are_logged_per_session_with_finality_at_request_time() -> None:
    market, _ = _market(ny(MON, 12, 0))
    log = RequestLog()
    wire = TimedPolygonWire(market, log)
    frm, to = ny(FRI, 9, 30) * 1000, ny(date(2025, 12, 2), 16) * 1000 - 1
    headers = {"authorization": "Bearer pk"}
    answer = wire.answer(f"/v2/aggs/ticker/AAPL/range/15/minute/{frm}/{to}", {}, headers)
    assert answer.status == 200
    wire.answer(
        f"/v2/aggs/ticker/AAPL/range/15/minute/{frm}/{to}", {"cursor": "MA=="}, headers
    )  # a next page
    assert log.calls == {"polygon": 1}
    seen = [(r.session, r.final) for r in log.requests]
    assert seen == [(FRI, True), (MON, False), (date(2025, 12, 2), False)]
    assert log.final_counts() == {("AAPL", M15, FRI): 1}
    # Monday's bars end at noon (the request came at 12:00).
    last = max(bar["t"] for bar in answer.body["results"]) // 1000
    assert last + 900 <= ny(MON, 12, 0) and last >= ny(MON, 11, 30)


def test_flat_files_appear_at_0700_new_york_the_next_day(tmp_path: Path) -> None:
    market, clock = _market(ny(date(2025, 11, 27), 6, 59))
    log = RequestLog()
    folder = FlatFolder(tmp_path, market, ["AAPL", "MSFT"], since=date(2025, 11, 24))
    assert folder.publish() == [date(2025, 11, 24), date(2025, 11, 25)]
    clock.set(ny(date(2025, 11, 27), 7, 0))
    assert folder.publish() == [WED]
    clock.set(ny(date(2025, 11, 29), 6, 0))
    assert folder.publish() == []  # Friday's file comes Saturday 07:00
    clock.set(ny(date(2025, 11, 29), 7, 0))
    assert folder.publish() == [FRI]
    files = RecordingFlatFiles(tmp_path, market, log)
    lo, hi = ny(date(2025, 11, 24), 0), ny(FRI, 23)

    async def read(tf: Timeframe):
        return (await files.fetch(["AAPL"], tf, lo, hi))["AAPL"]

    d1 = asyncio.run(read(D1))
    final = market.final_bars("AAPL", D1, lo, hi)
    np.testing.assert_array_equal(d1.ts, final.ts)
    np.testing.assert_array_equal(d1.volume, final.volume)
    m1 = asyncio.run(read(Timeframe.m1))
    # The files hold pre/post-market minutes; the adapter keeps the regular session, as the HTTP ones do.
    np.testing.assert_array_equal(m1.ts, market.final_bars("AAPL", Timeframe.m1, lo, hi).ts)
    assert log.calls == {"flatfiles": 2}
    assert {r.session for r in log.requests} == {date(2025, 11, d) for d in (24, 25, 26, 28)}


@pytest.mark.parametrize("hour", [6, 7])
def test_a_missing_flat_file_is_not_counted_as_served(tmp_path: Path, hour: int) -> None:
    from barfill.errors import ProviderError

    market, _ = _market(ny(date(2025, 11, 27), hour, 0))
    log = RequestLog()
    FlatFolder(tmp_path, market, ["AAPL"], since=WED).publish()
    files = RecordingFlatFiles(tmp_path, market, log)

    async def read():
        return await files.fetch(["AAPL"], D1, ny(WED, 0), ny(WED, 23))

    if hour < 7:
        with pytest.raises(ProviderError):
            asyncio.run(read())
        assert log.calls == {}
    else:
        assert len(asyncio.run(read())["AAPL"]) == 1
        assert log.calls == {"flatfiles": 1}
