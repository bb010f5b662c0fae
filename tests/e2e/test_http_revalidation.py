"""Revalidating a bar read (If-None-Match → 304) runs no SQL, until something is stored.

The server keeps each read's ETag while its data version stands still
(SQLite: ``PRAGMA data_version``; PostgreSQL: ``NOTIFY barfill``). A write by
another connection, as another process would make, must end the 304s.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from barfill.bootstrap import App
from barfill.domain.actions import split
from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.providers.synthetic import SyntheticProvider
from barfill.store import stamps
from barfill.store.actions import replace_actions
from barfill.store.api_keys import create_key, revoke_key
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.http_reads import notify_changed
from barfill.store.symbols import ensure_symbols
from tests.e2e.helpers import make_app, ts
from tests.e2e.http_server import LiveServer

START, END = ts("2024-03-04T14:30"), ts("2024-03-09T00:00")
PARAMS = {"timeframe": "m15", "start": str(START), "end": str(END), "layers": "historical"}


def _store(db: Database, provider: SyntheticProvider, start: int, end: int) -> None:
    with db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        batch = provider.truth("AAPL", Timeframe.m15, start, end)
        upsert_bars(conn, sid, batch, layer=Layer.historical, fetched_at=time.time())
        notify_changed(conn)


@contextmanager
def _statements(app: App) -> Iterator[list[str]]:
    """The SQL statements ``app``'s engine runs inside the block."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(app.db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(app.db.engine, "before_cursor_execute", count)


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def _served(status: int) -> float:
    """How many ``GET /v1/bars/{symbol}`` the request metrics counted with ``status``."""
    labels = {"method": "GET", "route": "/v1/bars/{symbol}", "status": str(status)}
    return REGISTRY.get_sample_value("barfill_http_request_duration_seconds_count", labels) or 0.0


def test_bar_reads_are_labelled_by_their_route_whoever_answers(db: Database) -> None:
    """The route answers a 200, the revalidation middleware a 304: both count under the route's
    template in the request metrics (not ``unmatched``, nor a nested router's own path)."""
    provider = SyntheticProvider(calendar=get_calendar())
    app: App = make_app(db, {"synthetic": provider})
    _store(db, provider, START, END)
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            version = server.fastapi_app.state.barfill_reads.version
            _wait(lambda: version.exact, "the data version (PostgreSQL: LISTEN) to be live")
            ok, not_modified = _served(200), _served(304)
            etag = c.get("/v1/bars/AAPL", params=PARAMS).headers["etag"]
            for _ in range(3):
                assert (
                    c.get("/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": etag}).status_code == 304
                )
            assert (_served(200) - ok, _served(304) - not_modified) == (1, 3)
    finally:
        app.close()


def test_revalidation_runs_no_sql_and_ends_when_bars_land(db: Database) -> None:
    provider = SyntheticProvider(calendar=get_calendar())
    app: App = make_app(db, {"synthetic": provider})
    _store(db, provider, START, ts("2024-03-06T00:00"))
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            version = server.fastapi_app.state.barfill_reads.version
            _wait(lambda: version.exact, "the data version (PostgreSQL: LISTEN) to be live")
            first = c.get("/v1/bars/AAPL", params=PARAMS)
            assert first.status_code == 200
            etag = first.headers["etag"]
            before = first.json()["layers"]["historical"]["t"]
            with _statements(app) as statements:
                for _ in range(5):
                    again = c.get("/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": etag})
                    assert again.status_code == 304
            assert statements == []

            # Another connection (as another process would) stores two more sessions.
            other = Database(db.url)
            try:
                _store(other, provider, ts("2024-03-06T00:00"), END)
            finally:
                other.dispose()

            def changed() -> bool:
                r = c.get("/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": etag})
                return r.status_code == 200

            _wait(changed, "the new bars to end the 304s")
            after = c.get("/v1/bars/AAPL", params=PARAMS)
            assert after.headers["etag"] != etag
            got = after.json()["layers"]["historical"]["t"]
            assert got[: len(before)] == before and len(got) > len(before)
            assert (
                c.get(
                    "/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": after.headers["etag"]}
                ).status_code
                == 304
            )
    finally:
        app.close()


def test_revalidation_still_needs_a_valid_key(sqlite_db: Database) -> None:
    provider = SyntheticProvider(calendar=get_calendar())
    app: App = make_app(sqlite_db, {"synthetic": provider})
    _store(sqlite_db, provider, START, END)
    with sqlite_db.write() as conn:
        key = create_key(conn, "chart", "read")[1]
        other = create_key(conn, "gone", "read")
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            bearer = {"Authorization": f"Bearer {key}"}
            first = c.get("/v1/bars/AAPL", params=PARAMS, headers=bearer)
            assert first.status_code == 200
            etag = first.headers["etag"]
            assert (
                c.get("/v1/bars/AAPL", params=PARAMS, headers={**bearer, "If-None-Match": etag}).status_code
                == 304
            )
            # The cached read is no shortcut past the key check.
            assert c.get("/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": etag}).status_code == 401
            wrong = {"X-API-Key": key[:-2] + "xx", "If-None-Match": etag}
            assert c.get("/v1/bars/AAPL", params=PARAMS, headers=wrong).status_code == 401
            with sqlite_db.write() as conn:
                revoke_key(conn, other[0].key_id)
            revoked = {"Authorization": f"Bearer {other[1]}", "If-None-Match": etag}
            assert c.get("/v1/bars/AAPL", params=PARAMS, headers=revoked).status_code == 401
            # An unknown parameter is the route's to refuse, cached read or not.
            odd = c.get(
                "/v1/bars/AAPL", params={**PARAMS, "limit": "0"}, headers={**bearer, "If-None-Match": etag}
            )
            assert odd.status_code == 422
    finally:
        app.close()


def test_an_adjusted_read_revalidates_until_a_split_is_stored(db: Database) -> None:
    """adjust=split is revalidated from memory too; a split stored by another process ends it."""
    provider = SyntheticProvider(calendar=get_calendar())
    app: App = make_app(db, {"synthetic": provider})
    _store(db, provider, START, END)
    adjusted = {**PARAMS, "adjust": "split"}
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            version = server.fastapi_app.state.barfill_reads.version
            _wait(lambda: version.exact, "the data version (PostgreSQL: LISTEN) to be live")
            first = c.get("/v1/bars/AAPL", params=adjusted)
            assert first.status_code == 200
            etag, before = first.headers["etag"], first.json()["layers"]["historical"]["c"]
            with _statements(app) as statements:
                again = c.get("/v1/bars/AAPL", params=adjusted, headers={"If-None-Match": etag})
            assert again.status_code == 304
            assert statements == []

            other = Database(db.url)
            try:
                with other.write() as conn:
                    sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
                    found = [split("AAPL", dt.date(2024, 3, 7), 2.0, "synthetic")]
                    assert replace_actions(conn, sid, "synthetic", found, "America/New_York") == 1
                    notify_changed(conn)
            finally:
                other.dispose()

            def changed() -> bool:
                r = c.get("/v1/bars/AAPL", params=adjusted, headers={"If-None-Match": etag})
                return r.status_code == 200

            _wait(changed, "the new split to end the 304s")
            after = c.get("/v1/bars/AAPL", params=adjusted).json()["layers"]["historical"]
            t = np.array(after["t"])
            early = t < ts("2024-03-07")
            # Bars before the ex date are halved; the ones from it on are as stored.
            assert np.allclose(np.array(after["c"])[early], np.array(before)[early] / 2)
            assert np.allclose(np.array(after["c"])[~early], np.array(before)[~early])
    finally:
        app.close()


def test_another_symbols_commit_keeps_the_read_and_its_own_write_ends_it(db: Database) -> None:
    """After a commit that wrote other symbols only, a read is served again from memory once its
    symbol's change counter shows nothing changed; a write to its own bars is served at once."""
    provider = SyntheticProvider(calendar=get_calendar())
    app: App = make_app(db, {"synthetic": provider})
    _store(db, provider, START, END)
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            reads = server.fastapi_app.state.barfill_reads
            _wait(lambda: reads.version.exact, "the data version (PostgreSQL: LISTEN) to be live")
            first = c.get("/v1/bars/AAPL", params=PARAMS)
            assert first.status_code == 200
            version, misses = reads.version.current(), (reads.cache.misses, reads.columns.misses)

            other = Database(db.url)
            try:
                with other.write() as conn:
                    msft = ensure_symbols(conn, ["MSFT"])["MSFT"]
                    batch = provider.truth("MSFT", Timeframe.m15, START, END)
                    upsert_bars(conn, msft, batch, layer=Layer.historical, fetched_at=time.time())
                    notify_changed(conn)
                _wait(lambda: reads.version.current() != version, "the other commit to be seen")
                again = c.get("/v1/bars/AAPL", params=PARAMS)
                assert again.headers["etag"] == first.headers["etag"]
                assert again.json() == first.json()
                assert (reads.cache.misses, reads.columns.misses) == misses  # renewed, not read again

                # Its own bars change (a vendor correction of one close, stored by another process).
                with other.write() as conn:
                    aapl = ensure_symbols(conn, ["AAPL"])["AAPL"]
                    bar = provider.truth("AAPL", Timeframe.m15, START, START + 900)
                    bar.close[:] = bar.close + 0.5
                    upsert_bars(conn, aapl, bar, layer=Layer.historical, fetched_at=time.time() + 1)
                    notify_changed(conn)
            finally:
                other.dispose()

            def corrected() -> bool:
                r = c.get("/v1/bars/AAPL", params=PARAMS)
                return r.headers["etag"] != first.headers["etag"]

            _wait(corrected, "the corrected bar to be served")
            after = c.get("/v1/bars/AAPL", params=PARAMS).json()["layers"]["historical"]
            want = first.json()["layers"]["historical"]
            assert after["t"] == want["t"]
            assert after["c"][0] == pytest.approx(want["c"][0] + 0.5)
            assert after["c"][1:] == want["c"][1:]
    finally:
        app.close()


def test_a_flag_moved_between_bars_changes_the_etag(db: Database) -> None:
    """Every count of the bars' fingerprint stays as it was; the symbol's change counter does not."""
    provider = SyntheticProvider(calendar=get_calendar())
    app: App = make_app(db, {"synthetic": provider})
    _store(db, provider, START, END)
    bar = sa.table("bars", sa.column("ts"), sa.column("flag"))
    with db.write() as conn:
        conn.execute(sa.update(bar).where(bar.c.ts == START).values(flag="spike"))
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            reads = server.fastapi_app.state.barfill_reads
            _wait(lambda: reads.version.exact, "the data version (PostgreSQL: LISTEN) to be live")
            first = c.get("/v1/bars/AAPL", params=PARAMS)
            assert first.json()["layers"]["historical"]["t"][0] == START + 900
            with db.write() as conn:  # as store.flags.reflag does: same transaction, one touch
                conn.execute(sa.update(bar).where(bar.c.ts == START).values(flag=None))
                conn.execute(sa.update(bar).where(bar.c.ts == START + 900).values(flag="spike"))
                stamps.touch(conn, ensure_symbols(conn, ["AAPL"])["AAPL"])
                notify_changed(conn)

            def moved() -> bool:
                r = c.get("/v1/bars/AAPL", params=PARAMS, headers={"If-None-Match": first.headers["etag"]})
                return r.status_code == 200

            _wait(moved, "the moved flag to end the 304s")
            t = c.get("/v1/bars/AAPL", params=PARAMS).json()["layers"]["historical"]["t"]
            assert t[:2] == [START, START + 1800]
    finally:
        app.close()
