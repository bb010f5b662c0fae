"""Each provider's corporate-action parser against its local wire server: pages, empty answers, bad values."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from barfill.domain.actions import CorporateAction
from barfill.domain.calendar import get_calendar
from barfill.errors import ProviderError
from barfill.ports import ActionsProvider
from barfill.providers import AlpacaProvider, PolygonProvider, YahooProvider
from barfill.providers.flatfiles import FlatFileProvider

from .servers import AlpacaWire, FakeServer, Fault, PolygonWire, Truth, YahooWire

CAL = get_calendar("XNYS")
SECRET = "sEcReT-k3y-0123456789"
ALL = (dt.date(2000, 1, 1), dt.date(2026, 12, 31))
# What every provider must report for SPLT and RVRS, as paid (hand-written from the truth).
SPLT = [
    ("dividend", dt.date(2024, 2, 15), None, 0.88),
    ("dividend", dt.date(2024, 5, 15), None, 0.88),
    ("split", dt.date(2024, 6, 10), 4.0, None),
    ("dividend", dt.date(2024, 8, 15), None, 0.22),
    ("dividend", dt.date(2024, 11, 15), None, 0.22),
]
RVRS = [("split", dt.date(2023, 3, 1), 0.1, None)]


def facts(actions: list[CorporateAction]) -> list[tuple[str, dt.date, float | None, float | None]]:
    return [
        (a.kind.value, a.ex_date, a.ratio, None if a.cash is None else round(a.cash, 10)) for a in actions
    ]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


def _wire(name: str) -> Any:
    truth = Truth(CAL)
    if name == "polygon":
        return PolygonWire(truth, SECRET)
    if name == "alpaca":
        return AlpacaWire(truth, "kid", SECRET)
    return YahooWire(truth)


def _provider(name: str, client: httpx.AsyncClient, url: str) -> Any:
    if name == "polygon":
        return PolygonProvider(client, api_key=SECRET, base_url=url, calendar=CAL)
    if name == "alpaca":
        return AlpacaProvider(client, key_id="kid", secret_key=SECRET, base_url=url, calendar=CAL)
    return YahooProvider(client, base_url=url, calendar=CAL)


@pytest.fixture(params=["polygon", "alpaca", "yahoo"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer]]:
    with FakeServer(_wire(request.param)) as server:
        yield request.param, server
    assert not server.errors, server.errors


async def test_actions_parsed_across_pages(served, client) -> None:
    name, server = served
    provider = _provider(name, client, server.url)
    assert isinstance(provider, ActionsProvider)
    got = await provider.fetch_actions("SPLT", *ALL)
    assert facts(got) == SPLT
    assert {a.provider for a in got} == {name} and {a.symbol for a in got} == {"SPLT"}
    assert facts(await provider.fetch_actions("RVRS", *ALL)) == RVRS
    if name != "yahoo":  # Yahoo has no pagination: one chart answer
        # Page size 2: Polygon splits 1 page + dividends 2; Alpaca 5 actions in 3 pages.
        per_symbol = {"polygon": 1 + 2, "alpaca": 3}[name]
        assert len([s for s in server.seen if "SPLT" in s.url]) == per_symbol


async def test_window_and_empty_answer(served, client) -> None:
    name, server = served
    provider = _provider(name, client, server.url)
    got = await provider.fetch_actions("SPLT", dt.date(2024, 5, 1), dt.date(2024, 6, 30))
    assert facts(got) == SPLT[1:3]
    assert await provider.fetch_actions("AAPL", *ALL) == []


def _split_row(name: str, body: Any) -> dict[str, Any]:
    """RVRS's one split in ``body``, as each provider writes it."""
    if name == "polygon":
        row: dict[str, Any] = body["results"][0]
    elif name == "alpaca":
        row = body["corporate_actions"]["reverse_splits"][0]
    else:
        row = next(iter(body["chart"]["result"][0]["events"]["splits"].values()))
    return row


def _dividend_row(name: str, body: Any) -> dict[str, Any]:
    if name == "polygon":
        row: dict[str, Any] = body["results"][0]
    elif name == "alpaca":
        row = body["corporate_actions"]["cash_dividends"][0]
    else:
        row = next(iter(body["chart"]["result"][0]["events"]["dividends"].values()))
    return row


# Per provider: the field to break and the value that breaks it.
BAD_SPLITS: dict[str, dict[str, tuple[str, Any]]] = {
    "ratio-0": {"polygon": ("split_to", 0), "alpaca": ("new_rate", 0), "yahoo": ("numerator", 0)},
    "missing": {
        "polygon": ("split_from", None),
        "alpaca": ("old_rate", None),
        "yahoo": ("denominator", None),
    },
    "bad-date": {
        "polygon": ("execution_date", "June"),
        "alpaca": ("ex_date", None),
        "yahoo": ("date", "2023"),
    },
}


@pytest.mark.parametrize("case", sorted(BAD_SPLITS))
async def test_bad_split_is_bad_payload(served, client, case: str) -> None:
    name, server = served
    field, value = BAD_SPLITS[case][name]
    server.inject(Fault("mangle", edit=lambda body: _split_row(name, body).__setitem__(field, value)))
    with pytest.raises(ProviderError) as info:
        await _provider(name, client, server.url).fetch_actions("RVRS", *ALL)
    assert info.value.code == "bad_payload" and "RVRS" in str(info.value)
    assert field in str(info.value)  # the wire's own field name


async def test_negative_cash_is_bad_payload(served, client) -> None:
    name, server = served
    field = {"polygon": "cash_amount", "alpaca": "rate", "yahoo": "amount"}[name]
    # Polygon asks for splits first (one page), then dividends: mangle the dividends' first page.
    edit = Fault("mangle", edit=lambda body: _dividend_row(name, body).__setitem__(field, -0.5))
    edit.after = 1 if name == "polygon" else 0
    server.inject(edit)
    with pytest.raises(ProviderError) as info:
        await _provider(name, client, server.url).fetch_actions("SPLT", *ALL)
    assert info.value.code == "bad_payload" and "cash: expected cash per share >= 0" in str(info.value)


def test_flat_file_actions(tmp_path: Path) -> None:
    folder = tmp_path / "us_stocks_sip" / "corporate_actions_v1"
    folder.mkdir(parents=True)
    (folder / "splits.csv").write_text(
        "ticker,execution_date,split_from,split_to,id\nSPLT,2024-06-10,1,4,E1\nRVRS,2023-03-01,10,1,E2\n"
    )
    rows = "".join(f"SPLT,{d.isoformat()},{c},CD\n" for _, d, _, c in SPLT if c is not None)
    (folder / "dividends.csv").write_text("ticker,ex_dividend_date,cash_amount,dividend_type\n" + rows)
    files = FlatFileProvider(tmp_path, calendar=CAL)
    assert isinstance(files, ActionsProvider)
    assert facts(files.read_actions("SPLT", *ALL)) == SPLT
    assert facts(files.read_actions("RVRS", *ALL)) == RVRS
    assert files.read_actions("AAPL", *ALL) == []
    assert FlatFileProvider(tmp_path / "nothing", calendar=CAL).read_actions("SPLT", *ALL) == []
    (folder / "splits.csv").write_text("ticker,execution_date,split_from,split_to\nSPLT,2024-06-10,0,4\n")
    with pytest.raises(ProviderError, match=r"splits.csv: SPLT row 1: split_from: expected"):
        files.read_actions("SPLT", *ALL)


def test_split_announced_later_needs_no_bar_refetch(db) -> None:
    """Bars from the local Polygon, then its split: the adjusted answer changes, no bar is asked again."""
    from barfill.api import Barfill
    from barfill.bootstrap import build
    from barfill.config import load_settings

    with FakeServer(PolygonWire(Truth(CAL), SECRET)) as server:
        settings = load_settings(
            database_url=db.url,
            polygon_api_key=SECRET,
            polygon_base_url=server.url,
            polygon_rate_limit="100/1",
        )
        with Barfill.wrap(build(settings)) as bf:
            bf.ensure("SPLT", "d1", start="2024-06-05", end="2024-06-12")
            bf.work()
            aggs = [s for s in server.seen if s.path.startswith("/v2/aggs/")]
            raw = bf.bars("SPLT", "d1", adjust="raw")
            assert len(aggs) >= 1 and len(raw) == 6
            np.testing.assert_array_equal(bf.bars("SPLT", "d1", adjust="split")["close"], raw["close"])

            result = bf.refresh_actions(["SPLT"])
            assert result.fetched == {"polygon": 1} and result.errors == [], result
            adj = bf.bars("SPLT", "d1", adjust="split")
        assert not server.errors
    # 06-05, 06-06, 06-07 are before the 06-10 split: / 4 (hand-computed); 06-10..06-12 as traded.
    np.testing.assert_array_equal(adj["close"].to_numpy(), raw["close"].to_numpy() / [4, 4, 4, 1, 1, 1])
    np.testing.assert_array_equal(adj["volume"].to_numpy(), raw["volume"].to_numpy() * [4, 4, 4, 1, 1, 1])
    assert [s for s in server.seen if s.path.startswith("/v2/aggs/")] == aggs
    assert {s.path for s in server.seen[len(aggs) :]} == {"/v3/reference/splits", "/v3/reference/dividends"}


def test_refresh_backs_off_on_429_and_tries_again(db) -> None:
    from barfill.bootstrap import build
    from barfill.config import load_settings
    from barfill.service.actions import refresh_due
    from barfill.service.ensure import ensure

    with FakeServer(PolygonWire(Truth(CAL), SECRET)) as server:
        settings = load_settings(
            database_url=db.url,
            polygon_api_key=SECRET,
            polygon_base_url=server.url,
            polygon_rate_limit="100/1",
        )
        app = build(settings)
        try:
            ensure(app, ["SPLT"], "d1", start="2024-06-05", end="2024-06-12")
            server.inject(Fault("status", status=429, body={"status": "ERROR"}, headers={"Retry-After": "1"}))
            first = app.run(refresh_due(app))
            assert first.fetched == {} and "http_429" in " ".join(first.errors)
            with db.read() as conn:
                throttled = conn.exec_driver_sql(
                    "SELECT throttled FROM rate_limits WHERE provider = 'polygon'"
                )
                assert throttled.scalar_one() == 1
            second = app.run(refresh_due(app))  # not marked refreshed: due again, after the penalty
            assert second.fetched == {"polygon": 1} and second.errors == []
        finally:
            app.close()
