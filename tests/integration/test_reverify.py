"""Vendor corrections and bad bars through the engine, on SQLite and PostgreSQL (issue 10).

A local Polygon server answers from a :class:`Vendor` whose bars the test
edits between fetches (a corrected close, a bar removed, a late bar added, a
spike fixed). A :class:`SimClock` moves from one session's evening to the
next: each final session is re-fetched exactly once, three sessions after it
became final, and only the differences are written and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from barfill.bootstrap import App, build
from barfill.client import Client
from barfill.config import load_settings
from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.resample import resample
from barfill.domain.timeframes import Timeframe
from barfill.service import admin
from barfill.service.orchestrator import TickResult, tick
from barfill.service.worker import Worker
from barfill.store.bar_reads import read_bars
from barfill.store.coverage import read_coverage
from barfill.store.db import Database
from barfill.store.definitions import upsert_definition
from barfill.store.schema import bars, corrections, job_runs, verifications
from barfill.store.symbols import ensure_symbols
from barfill.testing.clock import SimClock
from tests.e2e.browser_support import live_server
from tests.integration.providers.servers import FakeServer, PolygonWire, Truth, ny

CAL = get_calendar("XNYS")
M15, H1 = Timeframe.m15, Timeframe.h1
KEY = "pk-test"


@dataclass
class Edit:
    close: float | None = None  # new close (high/low widened to hold it)
    volume: float | None = None


class Vendor(Truth):
    """The truth, as a vendor serves it today: ``edits`` applied, ``missing`` bars left out."""

    def __init__(self) -> None:
        super().__init__(CAL)
        self.edits: dict[int, Edit] = {}
        self.missing: set[int] = set()

    def bars(self, symbol: str, tf: Timeframe, start: int, end: int, *, extended: bool = False) -> BarBatch:
        b = super().bars(symbol, tf, start, end, extended=extended)
        if tf != M15:
            return b
        close, high, low, volume = b.close.copy(), b.high.copy(), b.low.copy(), b.volume.copy()
        for t, e in self.edits.items():
            at = b.ts == t
            if e.close is not None:
                close[at] = e.close
                high[at] = np.maximum(high[at], e.close)
                low[at] = np.minimum(low[at], e.close)
            if e.volume is not None:
                volume[at] = e.volume
        out = BarBatch(
            b.symbol, tf, b.provider, b.ts, b.open, high, low, close, volume, b.vwap, b.trade_count
        )
        return out.take(~np.isin(out.ts, sorted(self.missing)))


def _regular(day: tuple[int, int, int], n: int) -> list[int]:
    """The first ``n`` traded m15 labels of a session from 10:00 New York."""
    lo = ny(*day, 10, 0)
    labels = Truth(CAL).labels("AAPL", M15, lo, ny(*day, 16, 0), extended=False)
    return [int(t) for t in labels[:n]]


MAR = (2024, 3)
FRI8, MON11, TUE12 = (*MAR, 8), (*MAR, 11), (*MAR, 12)


def _day(d: tuple[int, int, int]) -> tuple[int, int]:
    """[local midnight, extended close) of a session."""
    return ny(*d), ny(*d, 20, 0)


@pytest.fixture
def vendor() -> Vendor:
    return Vendor()


@pytest.fixture
def server(vendor: Vendor) -> Iterator[FakeServer]:
    with FakeServer(PolygonWire(vendor, KEY)) as s:
        yield s


@pytest.fixture
def clock() -> SimClock:
    return SimClock(ny(*TUE12, 21, 0))


def _build(db: Database, server: FakeServer, clock: SimClock, after_sessions: int) -> App:
    settings = load_settings(
        database_url=db.url,
        polygon_api_key=KEY,
        polygon_base_url=server.url,
        polygon_rate_limit="1000/1",
        historical_providers=["polygon"],
        realtime_providers=["polygon"],
        derivations=["m15->h1"],
        reverify_after_sessions=after_sessions,
        archive_after_s=14 * 86_400.0,  # keeps finished slices and checked sessions through the test
    )
    return build(settings, clock=clock)


@pytest.fixture
def app(db: Database, server: FakeServer, clock: SimClock) -> Iterator[App]:
    a = _build(db, server, clock, 3)
    yield a
    a.close()


def _step(app: App, clock: SimClock, day: tuple[int, int, int]) -> TickResult:
    """Move to 21:00 New York of ``day``, tick, and work until idle."""
    clock.advance_to(ny(*day, 21, 0))
    result = tick(app)
    assert result.errors == []
    app.run(Worker(app, concurrency=2, poll_s=0.05, lease_s=3600).run(until_idle=True))
    return result


def _stored(app: App, sid: int, day: tuple[int, int, int]) -> BarBatch:
    with app.db.read() as conn:
        return read_bars(conn, sid, M15, *_day(day), provider="polygon", include_flagged=True)


def _fetched_at(app: App, sid: int, day: tuple[int, int, int]) -> dict[int, float]:
    lo, hi = _day(day)
    b = bars.c
    q = sa.select(b.ts, b.fetched_at).where(
        b.symbol_id == sid, b.timeframe == "m15", b.provider == "polygon", b.ts >= lo, b.ts < hi
    )
    with app.db.read() as conn:
        return {int(t): float(f) for t, f in conn.execute(q)}


def _flags(app: App, sid: int) -> dict[int, str]:
    b = bars.c
    q = sa.select(b.ts, b.flag).where(b.symbol_id == sid, b.flag.is_not(None))
    with app.db.read() as conn:
        return {int(t): str(f) for t, f in conn.execute(q)}


def _requests_over(server: FakeServer, day: tuple[int, int, int]) -> int:
    """Requests whose range reached into ``day``'s session."""
    lo, hi = _day(day)
    n = 0
    for seen in server.seen:
        parts = seen.path.strip("/").split("/")
        start, end = int(parts[7]) // 1000, int(parts[8]) // 1000
        n += start < hi and end >= lo
    return n


def test_each_session_is_reverified_once_and_only_differences_are_written(
    app: App, vendor: Vendor, server: FakeServer, clock: SimClock
) -> None:
    spike_ts, *_ = _regular(MON11, 1)
    empty_ts, *_ = _regular(TUE12, 1)
    changed_a, changed_b, removed, added = _regular(FRI8, 4)
    vendor.edits[spike_ts] = Edit(close=100 * vendor.bars("AAPL", M15, spike_ts, spike_ts + 1).close[0])
    vendor.edits[empty_ts] = Edit(volume=0.0)
    vendor.missing.add(added)  # published late: not there at the first fetch
    with app.db.write() as conn:
        sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
        upsert_definition(conn, sid, M15, window_days=10)

    # Tue Mar 12, 21:00: Mar 4..12 hydrated in one request. Sessions due (3 sessions after
    # they became final) before now need no check; Mar 8, 11 and 12 are scheduled.
    _step(app, clock, TUE12)
    with app.db.read() as conn:
        scheduled = {int(s) for (s,) in conn.execute(sa.select(verifications.c.session))}
    assert scheduled == {ny(*FRI8), ny(*MON11), ny(*TUE12)}
    # Flagged at commit: the 100x spike and the empty bar of a busy session; kept, hidden, no gap.
    assert _flags(app, sid) == {spike_ts: "spike", empty_ts: "zero_volume"}
    with app.db.read() as conn:
        shown = read_bars(conn, sid, M15, *_day(MON11))
        covered = read_coverage(conn, sid, M15)
    assert spike_ts not in shown.ts and spike_ts in _stored(app, sid, MON11).ts
    assert any(c.start <= spike_ts and spike_ts + 900 <= c.end for c in covered)

    # The vendor corrects Friday Mar 8: two closes, one bar withdrawn, one late bar published.
    before = _fetched_at(app, sid, FRI8)
    old_a = _stored(app, sid, FRI8).close[_stored(app, sid, FRI8).ts == changed_a][0]
    vendor.edits[changed_a] = Edit(close=float(old_a) + 1.25)
    vendor.edits[changed_b] = Edit(volume=123_456.0)
    vendor.missing = {removed}
    result = _step(app, clock, (*MAR, 13))  # Wed: Mar 8 is 3 sessions past final (Mon, Tue, Wed)
    assert result.verify_planned == 1

    truth = vendor.bars("AAPL", M15, *_day(FRI8))
    now = _stored(app, sid, FRI8)
    np.testing.assert_array_equal(now.ts, truth.ts)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(now, col), getattr(truth, col), err_msg=col)
    after = _fetched_at(app, sid, FRI8)
    rewritten = {t for t in after if after[t] != before.get(t)}
    assert rewritten == {changed_a, changed_b, added}
    assert removed not in after
    with app.db.read() as conn:
        found = conn.execute(sa.select(corrections.c.ts, corrections.c.kind).order_by(corrections.c.ts)).all()
        checked = conn.execute(
            sa.select(verifications.c.verified_at, verifications.c.corrections).where(
                verifications.c.session == ny(*FRI8)
            )
        ).one()
        # Derived h1 over the corrected session is rebuilt from the corrected m15 bars.
        m15 = read_bars(conn, sid, M15, *_day(FRI8))
        h1 = read_bars(conn, sid, H1, *_day(FRI8), provider="resample:m15")
    assert [(int(t), k) for t, k in found] == sorted(
        [(changed_a, "changed"), (changed_b, "changed"), (removed, "removed"), (added, "added")]
    )
    assert checked.verified_at is not None and checked.corrections == 4
    expected = resample(m15, H1, CAL, provider="resample:m15")
    assert (h1.ts <= changed_a).any() and (h1.ts <= changed_b).any()
    for col in ("close", "high", "low", "volume"):
        np.testing.assert_array_equal(getattr(h1, col), getattr(expected, col)[np.isin(expected.ts, h1.ts)])
    assert admin.status(app)["corrections"]["last_day"] == 4

    # Thu Mar 14: Mar 11 is re-fetched, and the vendor has fixed the spike: no flag any more.
    del vendor.edits[spike_ts]
    assert _step(app, clock, (*MAR, 14)).verify_planned == 1
    assert _flags(app, sid) == {empty_ts: "zero_volume"}
    with app.db.read() as conn:
        assert spike_ts in read_bars(conn, sid, M15, *_day(MON11)).ts

    # Fri Mar 15: Mar 12 is re-fetched during an outage that answers no bars: nothing is deleted.
    kept = _stored(app, sid, TUE12)
    vendor.missing = set(kept.ts.tolist())
    assert _step(app, clock, (*MAR, 15)).verify_planned == 1
    np.testing.assert_array_equal(_stored(app, sid, TUE12).close, kept.close)
    vendor.missing = set()
    # The next week: one check per day, each session once, never again.
    for day in ((*MAR, 18), (*MAR, 19), (*MAR, 20), (*MAR, 21)):
        assert _step(app, clock, day).verify_planned == 1
    assert _flags(app, sid) == {empty_ts: "zero_volume"}  # unchanged by its check: still flagged
    for d in (FRI8, MON11, TUE12, (*MAR, 13), (*MAR, 14), (*MAR, 15)):
        assert _requests_over(server, d) == 2, d  # its fill and its one check
    for d in ((*MAR, 4), (*MAR, 5), (*MAR, 6), (*MAR, 7)):
        assert _requests_over(server, d) == 1, d  # fetched after they were due: no check
    with app.db.read() as conn:
        n_verified = conn.execute(
            sa.select(sa.func.count()).where(verifications.c.verified_at.is_not(None))
        ).scalar_one()
    assert n_verified == 7  # Mar 8 .. Mar 18, one check each
    listed_slices = admin.list_slices(app, status="succeeded", limit=1000)
    assert sum(r["purpose"] == "verify" for r in listed_slices) == 7
    assert tick(app).verify_planned == 0

    # Reported over HTTP: /v1/status, /v1/corrections, and bars with and without flagged ones.
    with live_server(app, workers=False) as srv, httpx.Client(base_url=srv.base, timeout=30) as c:
        status = c.get("/v1/status").json()
        assert status["corrections"]["last_day"] == 0  # a week ago on the simulated clock
        listed = c.get("/v1/corrections", params={"since": str(ny(*MAR, 13))}).json()
        assert listed["count"] == 5
        assert {x["kind"] for x in listed["corrections"]} == {"changed", "added", "removed"}
        fixed = next(x for x in listed["corrections"] if x["ts"] == spike_ts)
        assert fixed["old"]["close"] == pytest.approx(100 * fixed["new"]["close"])
        assert c.get("/v1/corrections", params={"since": "soon"}).status_code == 422
        params = {"timeframe": "m15", "start": str(ny(*TUE12)), "end": str(ny(*TUE12, 20))}
        hidden = c.get("/v1/bars/AAPL", params=params)
        everything = c.get("/v1/bars/AAPL", params={**params, "include_flagged": "true"})
        assert empty_ts not in hidden.json()["layers"]["historical"]["t"]
        assert empty_ts in everything.json()["layers"]["historical"]["t"]
        assert hidden.headers["etag"] != everything.headers["etag"]
        overview = c.get("/web/api/overview").json()
        assert overview["corrections"] == {"last_day": 0, "latest": []}
        with Client(srv.base, use_cache=False) as client:
            lo, hi = params["start"], params["end"]
            plain = client.bars("AAPL", "m15", start=lo, end=hi)
            flagged = client.bars("AAPL", "m15", start=lo, end=hi, include_flagged=True)
        assert len(flagged) == len(plain) + 1

    # Checked sessions are forgotten with the archive (corrections stay); none is checked again:
    # only Mar 19..21, filled but not yet due at the last step, are planned, in one request.
    clock.advance(15 * 86_400)
    assert tick(app).verify_planned == 1
    with app.db.read() as conn:
        planned = conn.execute(
            sa.select(job_runs.c.start, job_runs.c.end).where(
                job_runs.c.purpose == "verify", job_runs.c.status == "queued"
            )
        ).one()
        assert (planned.start, planned.end) == (ny(*MAR, 19), ny(*MAR, 21, 20))
        left = conn.execute(
            sa.select(verifications.c.session).where(verifications.c.verified_at.is_not(None))
        ).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(corrections)).scalar_one() == 5
    assert left == []


def test_zero_sessions_turns_reverification_off(db: Database, server: FakeServer, clock: SimClock) -> None:
    app = _build(db, server, clock, 0)
    try:
        with app.db.write() as conn:
            sid = ensure_symbols(conn, ["AAPL"])["AAPL"]
            upsert_definition(conn, sid, M15, window_days=10)
        _step(app, clock, TUE12)
        for day in ((*MAR, 13), (*MAR, 14), (*MAR, 15), (*MAR, 18)):
            assert _step(app, clock, day).verify_planned == 0
        with app.db.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(verifications)).scalar_one() == 0
        assert _requests_over(server, FRI8) == 1
    finally:
        app.close()


def test_status_shows_the_last_days_corrections(
    db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the real clock: one correction found now appears in ``barfill status`` and the dashboard."""
    from barfill.cli import main
    from barfill.providers.synthetic import SyntheticProvider
    from barfill.store.verifications import write_corrections
    from tests.e2e.helpers import make_app

    app = make_app(db, {"synthetic": SyntheticProvider(calendar=CAL)})
    try:
        with app.db.write() as conn:
            sid = ensure_symbols(conn, ["FIXD"])["FIXD"]
            old = {
                "open": 1.0,
                "high": 2.0,
                "low": 0.5,
                "close": 1.5,
                "volume": 10.0,
                "vwap": None,
                "trade_count": None,
            }
            write_corrections(
                conn,
                [
                    {
                        "symbol_id": sid,
                        "timeframe": "m15",
                        "ts": ny(*TUE12, 10),
                        "provider": "polygon",
                        "kind": "changed",
                        "old": old,
                        "new": old | {"close": 1.75},
                        "detected_at": db.now(),
                    }
                ],
            )
        with live_server(app, workers=False) as srv, httpx.Client(base_url=srv.base, timeout=30) as c:
            overview = c.get("/web/api/overview").json()["corrections"]
            status = c.get("/v1/status").json()["corrections"]
        assert overview["last_day"] == status["last_day"] == 1
        assert overview["latest"][0]["new"]["close"] == 1.75 and status["latest"][0]["symbol"] == "FIXD"
    finally:
        app.close()
    for key in [k for k in __import__("os").environ if k.startswith("BARFILL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BARFILL_DATABASE_URL", db.url)
    try:
        main(["status"])
    except SystemExit as e:
        assert not e.code
    out = capsys.readouterr().out
    assert "corrections (last day): 1" in out
    assert "FIXD m15 2024-03-12 14:00 UTC polygon: changed" in out
