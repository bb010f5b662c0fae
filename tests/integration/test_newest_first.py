"""Newest first: the slice with a fresh ensure's most recent bars is claimed before older ones."""

from __future__ import annotations

from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service.ensure import ensure
from barfill.store.db import Database
from tests.e2e.helpers import make_app


def test_newest_slice_is_claimed_first(db: Database) -> None:
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    try:
        # Low-priority older work queued first must not get ahead of it either.
        ensure(app, ["MSFT"], "m1", days=365, priority=-5)
        report = ensure(app, ["AAPL", "NVDA"], "m1", days=730)
        assert all(r.slices_queued >= 2 for r in report.results)  # several slices each, or the test is moot
        order = []
        while claimed := app.queue.claim("w", 1, 60.0):
            order.append(claimed[0])
        fresh = [s for s in order if s.symbol in ("AAPL", "NVDA")]
        assert {s.symbol for s in order[:2]} == {"AAPL", "NVDA"}
        newest_end = max(s.end for s in fresh)
        assert order[0].end == newest_end and order[1].end == newest_end
        for symbol in ("AAPL", "NVDA", "MSFT"):
            ends = [s.end for s in order if s.symbol == symbol]
            assert ends == sorted(ends, reverse=True), symbol
        assert order[-1].symbol == "MSFT"
    finally:
        app.close()
