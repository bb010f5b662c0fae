"""LoopClient: one httpx client per event loop, so every ``asyncio.run`` gets a working one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from barfill.domain.calendar import get_calendar
from barfill.providers.http import LoopClient

from .servers import FakeServer, PolygonWire, Truth

PATH = "/v2/aggs/ticker/AAPL/range/1/day/1709528400000/1709873999999"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(PolygonWire(Truth(get_calendar("XNYS")), "k"), keep_alive=True) as server:
        yield server


def test_each_event_loop_gets_its_own_client_and_closes_it(server: FakeServer) -> None:
    shared = LoopClient(timeout_s=10)
    clients: list[httpx.AsyncClient] = []

    async def one_run(*, close: bool) -> int:
        response = await shared.get(server.url + PATH, headers={"Authorization": "Bearer k"})
        clients.append(shared.client())
        if close:
            await shared.aclose()
        return response.status_code

    assert asyncio.run(one_run(close=True)) == 200
    assert clients[0].is_closed  # closed on its own loop, before that loop ended
    assert asyncio.run(one_run(close=True)) == 200  # "client has been closed" before the fix
    assert clients[1].is_closed and clients[1] is not clients[0]
    shared.close()  # outside any loop: nothing left to close, and no "Event loop is closed"
    assert len(server.seen) == 2


def test_close_outside_a_loop_closes_an_idle_loops_client(server: FakeServer) -> None:
    shared = LoopClient(timeout_s=10)
    loop = asyncio.new_event_loop()
    try:
        response = loop.run_until_complete(
            shared.get(server.url + PATH, headers={"Authorization": "Bearer k"})
        )
        client = loop.run_until_complete(_current(shared))
        assert response.status_code == 200 and not client.is_closed
        shared.close()  # the loop is idle, not ended: the client is closed on it
        assert client.is_closed
    finally:
        loop.close()


async def _current(shared: LoopClient) -> httpx.AsyncClient:
    return shared.client()


async def test_a_closed_client_is_replaced_on_the_same_loop(server: FakeServer) -> None:
    shared = LoopClient(timeout_s=10)
    first = shared.client()
    await first.aclose()
    response = await shared.get(server.url + PATH, headers={"Authorization": "Bearer k"})
    assert response.status_code == 200 and shared.client() is not first
    await shared.aclose()
