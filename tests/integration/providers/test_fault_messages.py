"""A damaged answer names the bar and the field, once, and is worth retrying."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.providers import AlpacaProvider, PolygonProvider
from barfill.providers.router import Router

from .servers import AlpacaWire, FakeServer, Fault, PolygonWire, Truth, iso_z, ny

CAL = get_calendar("XNYS")
KEY = "k-0123456789"
START, END = ny(2024, 3, 4), ny(2024, 3, 9)


@pytest.fixture
def truth() -> Truth:
    return Truth(CAL)


@pytest.fixture
def polygon_server(truth: Truth) -> Iterator[FakeServer]:
    with FakeServer(PolygonWire(truth, KEY)) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


def nan_open(body: Any) -> None:
    body["results"][2]["o"] = "NaN"


async def test_a_nan_field_names_symbol_bar_and_field_once(
    polygon_server: FakeServer, client: httpx.AsyncClient, truth: Truth
) -> None:
    polygon_server.inject(Fault("mangle", edit=nan_open))
    provider = PolygonProvider(client, api_key=KEY, base_url=polygon_server.url, calendar=CAL)
    router = Router({"polygon": provider}, historical=["polygon"], realtime=[], calendar=CAL)
    with pytest.raises(ProviderError) as info:
        await router.fetch(["AAPL"], Timeframe.d1, START, END, now=END + 86_400)
    bar = iso_z(int(truth.bars("AAPL", Timeframe.d1, START, END).ts[2]))
    assert (info.value.code, info.value.retryable) == ("bad_payload", True)
    assert str(info.value) == f"polygon: AAPL bar {bar}: field 'o': expected a number, got 'NaN'"
    # the next answer is whole again: the same request now succeeds
    got = await router.fetch(["AAPL"], Timeframe.d1, START, END, now=END + 86_400)
    assert len(got[1]["AAPL"]) == 5


async def test_a_non_numeric_alpaca_field_names_its_bar(truth: Truth, client: httpx.AsyncClient) -> None:
    def text_volume(body: Any) -> None:
        body["bars"]["MSFT"][1]["v"] = "1.2k"

    with FakeServer(AlpacaWire(truth, "id", "secret")) as server:
        server.inject(Fault("mangle", edit=text_volume))
        provider = AlpacaProvider(client, key_id="id", secret_key="secret", base_url=server.url, calendar=CAL)
        with pytest.raises(ProviderError) as info:
            await provider.fetch(["AAPL", "MSFT"], Timeframe.d1, START, END)
    bar = iso_z(int(truth.bars("MSFT", Timeframe.d1, START, END).ts[1]))
    assert info.value.code == "bad_payload" and info.value.retryable
    assert str(info.value) == f"alpaca: MSFT bar {bar}: field 'v': expected a number, got '1.2k'"
    assert len(re.findall("alpaca", str(info.value))) == 1
