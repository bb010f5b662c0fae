"""Who may call what: the API-key matrix over every route, binding rules, rate limit, bad input."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.errors import ConfigError
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.deps import check_bind
from barfill.service.ensure import ensure
from barfill.store.api_keys import create_key, revoke_key
from barfill.store.db import Database
from barfill.store.schema import api_keys
from tests.e2e.helpers import make_app
from tests.e2e.http_server import LiveServer

ENSURE = {"symbol": "AAPL", "timeframe": "d1", "window_days": 30}
FORECAST = {"symbol": "AAPL", "timeframe": "d1", "bars": {"t": [], "o": [], "h": [], "l": [], "c": []}}
# (method, path, json body, scope needed)
ROUTES = [
    ("POST", "/v1/ensure", ENSURE, "write"),
    ("GET", "/v1/progress/{job}", None, "read"),
    ("GET", "/v1/bars/AAPL?timeframe=d1", None, "read"),
    ("GET", "/v1/coverage/AAPL?timeframe=d1", None, "read"),
    ("GET", "/v1/jobs", None, "read"),
    ("GET", "/v1/jobs/1", None, "read"),
    ("POST", "/v1/jobs/1/retry", None, "write"),
    ("POST", "/v1/jobs/1/cancel", None, "write"),
    ("GET", "/v1/status", None, "read"),
    ("POST", "/v1/tick", None, "admin"),
    ("GET", "/v1/definitions", None, "read"),
    ("PATCH", "/v1/definitions/1", {"priority": 1}, "admin"),
    ("GET", "/v1/symbols?q=A", None, "read"),
    ("POST", "/v1/forecasts", FORECAST, "write"),
    ("GET", "/v1/events?after=0:0", None, "read"),
    ("GET", "/metrics", None, "read"),
]
RANK = {"read": 0, "write": 1, "admin": 2}


@pytest.fixture
def app(db: Database):
    a = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())}, api_rate_limit="100000/60")
    yield a
    a.close()


def _keys(app: App) -> dict[str, str]:
    with app.db.write() as conn:
        return {scope: create_key(conn, f"k-{scope}", scope)[1] for scope in ("read", "write", "admin")}


def _call(c: httpx.Client, method: str, path: str, body: object, headers: dict[str, str]) -> int:
    if path.startswith("/v1/events"):
        with c.stream(method, path, headers=headers) as r:
            return r.status_code
    return c.request(method, path, json=body, headers=headers).status_code


def test_every_route_by_scope(app: App) -> None:
    report = ensure(app, ["AAPL"], "d1", days=30)
    from barfill.server.v1 import encode_job

    keys = _keys(app)
    with app.db.read() as conn:
        stored = [tuple(r) for r in conn.execute(sa.select(api_keys.c.salt, api_keys.c.secret_hash))]
    assert all(
        k.split("_")[-1] not in (s + h) for k in keys.values() for s, h in stored
    )  # never stored plain
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        for method, template, body, needed in ROUTES:
            path = template.replace("{job}", encode_job(report.job))
            assert _call(c, method, path, body, {}) == 401, path
            assert (
                _call(c, method, path, body, {"Authorization": "Bearer bfk_000000000000_" + "x" * 43}) == 401
            )
            for scope, key in keys.items():
                header = {"Authorization": f"Bearer {key}"} if scope != "write" else {"X-API-Key": key}
                code = _call(c, method, path, body, header)
                if RANK[scope] < RANK[needed]:
                    assert code == 403, (path, scope)
                else:
                    assert code in (200, 404), (path, scope, code)
        assert c.get("/healthz").status_code == 200  # liveness needs no key
        with app.db.write() as conn:
            assert revoke_key(conn, "k-admin")
        server.fastapi_app.state.barfill_auth._keys.clear()  # skip the few-second cache
        assert c.post("/v1/tick", headers={"X-API-Key": keys["admin"]}).status_code == 401


def test_loopback_without_keys_is_open_other_addresses_refused(app: App) -> None:
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
        assert c.post("/v1/tick").status_code == 200
        assert c.get("/v1/status").status_code == 200
    with pytest.raises(ConfigError, match="keys create"):
        check_bind(app, "0.0.0.0")
    check_bind(app, "127.0.0.1")
    check_bind(app, "::1")
    _keys(app)
    check_bind(app, "0.0.0.0")  # with keys it may listen anywhere


def test_per_key_rate_limit(db: Database) -> None:
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())}, api_rate_limit="3/60")
    try:
        key = _keys(app)["read"]
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            codes = [c.get("/v1/status", headers={"X-API-Key": key}).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = c.get("/v1/status", headers={"X-API-Key": key})
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    finally:
        app.close()


BAD = [
    ("GET", "/v1/bars/AAPL", {"timeframe": "m7"}, None, 422, "timeframe"),
    ("GET", "/v1/bars/AAPL", {}, None, 422, "timeframe"),
    (
        "GET",
        "/v1/bars/AAPL",
        {"timeframe": "d1", "start": "2024-05-01", "end": "2024-01-01"},
        None,
        422,
        "end",
    ),
    ("GET", "/v1/bars/AAPL", {"timeframe": "d1", "start": "yesterday"}, None, 422, "start"),
    ("GET", "/v1/bars/AAPL", {"timeframe": "d1", "start": "99999999999"}, None, 422, "start"),
    ("GET", "/v1/bars/AAPL", {"timeframe": "m1", "start": "0", "end": "1700000000"}, None, 422, "start"),
    ("GET", "/v1/bars/AAPL", {"timeframe": "d1", "layers": "past"}, None, 422, "layers"),
    ("GET", "/v1/bars/AAPL", {"timeframe": "d1", "limit": "0"}, None, 422, "limit"),
    ("GET", "/v1/bars/AAPL", {"timeframe": "d1", "format": "xml"}, None, 422, "format"),
    ("GET", "/v1/bars/NOPE", {"timeframe": "d1"}, None, 404, None),
    ("GET", "/v1/bars/not%20a%20ticker", {"timeframe": "d1"}, None, 422, "ticker"),
    ("GET", "/v1/coverage/NOPE", {"timeframe": "d1"}, None, 404, None),
    ("GET", "/v1/progress/garbage", {}, None, 422, "job"),
    ("GET", "/v1/jobs", {"status": "done"}, None, 422, "status"),
    ("GET", "/v1/jobs/abc", {}, None, 422, "job_id"),
    ("GET", "/v1/jobs/424242", {}, None, 404, None),
    ("POST", "/v1/ensure", {}, {"symbol": "AAPL", "timeframe": "h7"}, 422, "timeframe"),
    (
        "POST",
        "/v1/ensure",
        {},
        {"symbol": "AAPL", "timeframe": "d1", "window_days": "30"},
        422,
        "window_days",
    ),
    ("POST", "/v1/ensure", {}, {"symbol": "AAPL", "timeframe": "d1", "window_days": 0}, 422, "window_days"),
    (
        "POST",
        "/v1/ensure",
        {},
        {"symbol": "AAPL", "timeframe": "d1", "start": "2024-02-01", "end": "2024-01-01"},
        422,
        "end",
    ),
    ("POST", "/v1/ensure", {}, {"timeframe": "d1"}, 422, "symbols"),
    ("POST", "/v1/ensure", {}, {"symbol": 5, "timeframe": "d1"}, 422, "symbol"),
    ("POST", "/v1/ensure", {}, {"symbol": "AAPL", "timeframe": "d1", "priority": 10**6}, 422, "priority"),
    ("POST", "/v1/ensure", {}, {"symbol": "AAPL", "timeframe": "d1", "provider": "nobody"}, 422, "provider"),
    ("POST", "/v1/ensure", {}, {"symbol": "AAPL", "timeframe": "d1", "colour": "red"}, 422, "colour"),
    ("PATCH", "/v1/definitions/999", {}, {"enabled": False}, 404, None),
    ("PATCH", "/v1/definitions/1", {}, {"enabled": "maybe"}, 422, "enabled"),
    (
        "POST",
        "/v1/forecasts",
        {},
        {**FORECAST, "bars": {"t": [1], "o": [], "h": [], "l": [], "c": []}},
        422,
        "bars.o",
    ),
    ("GET", "/v1/events", {"after": "not-an-id"}, None, 422, "Last-Event-ID"),
]


def test_bad_input_names_the_field(app: App) -> None:
    ensure(app, ["AAPL"], "d1", days=30)
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
        for method, path, params, body, status, field in BAD:
            r = c.request(method, path, params=params, json=body)
            assert r.status_code == status, (path, params, body, r.text)
            payload = r.json()
            assert isinstance(payload["error"], str) and payload["error"]
            if field is not None:
                assert field in [d["field"] for d in payload["detail"]] or field in payload["error"], r.text
        r = c.post("/v1/ensure", content=b'{"symbol": "AAPL",', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "JSON" in r.json()["error"]
        r = c.get("/v1/bars/AAPL", params={"timeframe": "m7"})
        assert "m1 m5 m15 m30 h1 h4 d1 w1" in r.json()["error"]  # lists the valid ones
        big = b'{"symbol": "' + b"A" * (app.settings.api_max_body_bytes + 10) + b'"}'
        r = c.post("/v1/ensure", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
