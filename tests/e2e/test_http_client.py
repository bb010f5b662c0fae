"""barfill.client.Client against a real server: ensure, wait, bars as a DataFrame, ETag disk cache."""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
import pytest

from barfill.client import ApiError, Client
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.app import ServerOptions
from barfill.store.db import Database
from tests.e2e.helpers import make_app
from tests.e2e.http_server import LiveServer


def test_client_round_trip_with_cache(db: Database, tmp_path: Path) -> None:
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())}, worker_poll_s=0.1)
    try:
        with (
            LiveServer(app, ServerOptions(workers=True)) as server,
            Client(server.url, cache_dir=tmp_path) as c,
        ):
            statuses: list[int] = []
            c.http.event_hooks["response"].append(lambda r: statuses.append(r.status_code))
            answer = c.ensure("AAPL", "h1", days=30)
            seen: list[float] = []
            final = c.wait(answer["job"], on_progress=lambda p: seen.append(p["percent"]))
            assert final["done"] and final["percent"] == 100.0 and seen[-1] == 100.0
            assert c.progress(answer["job"])["bars_written"] == final["bars_written"] > 0

            frame = c.bars("AAPL", "h1", start=0)
            assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
            assert list(frame.columns)[:5] == ["open", "high", "low", "close", "volume"]
            assert len(frame) == final["bars_written"]
            assert frame.index.is_monotonic_increasing
            assert statuses[-1] == 200

            again = c.bars("AAPL", "h1", start=0)  # unchanged: revalidated, served from disk
            assert statuses[-1] == 304
            pd.testing.assert_frame_equal(again, frame)
            assert len(list(tmp_path.rglob("AAPL_h1.parquet"))) == 1

            newest = c.bars("AAPL", "h1", limit=3)  # another query: fetched, not the cached one
            assert statuses[-1] == 200 and len(newest) == 3
            assert list(newest.index) == list(frame.index[-3:])

            with pytest.raises(ApiError) as e:
                c.bars("NOPE", "h1")
            assert e.value.status == 404
            with pytest.raises(ApiError) as e:
                c.ensure("AAPL", "h7")
            assert e.value.status == 422 and "timeframe" in str(e.value)

            first = next(iter(c.events()))
            assert first.event == "queue" and first.data["counts"]["succeeded"] >= 1 and first.id
    finally:
        app.close()


def test_client_sends_the_key(db: Database, tmp_path: Path) -> None:
    from barfill.store.api_keys import create_key

    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    try:
        with app.db.write() as conn:
            _, key = create_key(conn, "client", "read")
        with LiveServer(app) as server:
            with Client(server.url, key, use_cache=False) as c:
                assert c.progress(_job(c))["total_slices"] == 0
                with pytest.raises(ApiError) as e:
                    c.ensure("AAPL", "d1")
                assert e.value.status == 403
            with Client(server.url, use_cache=False) as anonymous, pytest.raises(ApiError) as e:
                anonymous.progress(_job(anonymous))
            assert e.value.status == 401
    finally:
        app.close()


def _job(c: Client) -> str:
    from barfill.server.v1 import encode_job
    from barfill.service.progress import JobRef

    assert isinstance(c.http, httpx.Client)
    return encode_job(JobRef((1,), 0.0))
