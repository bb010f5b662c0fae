"""Each provider declares its adjustment basis, and the router stamps it on every batch it returns."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from barfill.domain.bars import BarBatch, Basis
from barfill.domain.calendar import get_calendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.timeframes import Timeframe
from barfill.providers.alpaca import AlpacaProvider
from barfill.providers.polygon import PolygonProvider
from barfill.providers.router import Router
from barfill.providers.synthetic import SyntheticProvider
from barfill.providers.tradier import TradierProvider
from barfill.providers.yahoo import YahooProvider

CAL = get_calendar("XNYS")
TUE = 1_710_216_000  # 2024-03-12 00:00 New York


async def test_providers_declare_what_they_serve() -> None:
    async with httpx.AsyncClient() as http:
        assert PolygonProvider(http, api_key="k").capabilities.basis == Basis.raw
        assert PolygonProvider(http, api_key="k", adjusted=True).capabilities.basis == Basis.split_adjusted
        for setting in ("raw", "split", "dividend", "all"):
            alpaca = AlpacaProvider(http, key_id="i", secret_key="s", adjustment=setting)
            assert alpaca.capabilities.basis.value == setting
        assert YahooProvider(http).capabilities.basis == Basis.split_adjusted
        assert TradierProvider(http, token="t").capabilities.basis == Basis.raw
    assert SyntheticProvider(calendar=CAL).capabilities.basis == Basis.raw


class _Adjusted(SyntheticProvider):
    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, basis=Basis.all_adjusted)


async def test_router_stamps_the_providers_basis_on_every_batch() -> None:
    router = Router(
        {"adj": _Adjusted(calendar=CAL, name="adj")}, historical=["adj"], realtime=[], calendar=CAL
    )
    start, end = TUE + 9 * 3600, TUE + 16 * 3600  # 09:00-16:00 New York
    name, batches = await router.fetch(["AAPL", "MSFT"], Timeframe.h1, start, end, now=TUE + 30 * 86_400)
    assert name == "adj" and set(batches) == {"AAPL", "MSFT"}
    assert [(len(b), b.basis) for b in batches.values()] == [(7, Basis.all_adjusted)] * 2


def test_a_batch_keeps_its_basis_through_take_concat_and_empty() -> None:
    b = BarBatch.empty("AAPL", Timeframe.h1, "x", "split")
    assert b.basis == Basis.split_adjusted and b.take(slice(0, 0)).basis == Basis.split_adjusted
    assert BarBatch.concat([b, b]).basis == Basis.split_adjusted
    assert b.with_basis("raw").basis == Basis.raw and b.with_provider("y").basis == Basis.split_adjusted
    with pytest.raises(ValueError):
        b.with_basis("adjusted")
