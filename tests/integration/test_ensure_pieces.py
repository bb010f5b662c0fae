"""A many-symbol ``ensure`` commits in pieces: the first slices are queued while the rest are planned.

Each piece is one transaction (its definitions and their slices), so the answer
must be the one a single transaction gives, a failure midway must leave whole
pieces and nothing else, and asking again must complete the work.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

import barfill.service.ensure as ensure_module
from barfill.bootstrap import App
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.service import planning
from barfill.service.ensure import EnsureResult, ensure
from barfill.store.db import Database
from barfill.store.definitions import list_definitions
from barfill.store.schema import job_runs, symbols
from tests.e2e.helpers import make_app

CAL = get_calendar()
N = 9  # pieces of 1, 2, 4 and 2 symbols below
START, END = "2024-01-02", "2025-06-30"


@pytest.fixture
def app(db: Database) -> Any:
    # A small page: several slices per symbol, so a piece holds more than one slice each.
    app = make_app(db, {"synthetic": SyntheticProvider(calendar=CAL, page_limit=5_000)})
    yield app
    app.close()


def _pieces_of(monkeypatch: pytest.MonkeyPatch, first: int, largest: int) -> None:
    monkeypatch.setattr(ensure_module, "_smallest_piece", lambda app, ask, now: first)
    monkeypatch.setattr(ensure_module, "MAX_PIECE", largest)


def _tickers(prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(N)]


def _prepare(app: App, prefix: str) -> None:
    """Make the symbols' answers differ: one has work queued by another requester in its window."""
    ensure(app, [f"{prefix}3"], "m15", start="2025-03-03", end="2025-03-31", requester="other")


def _answer(r: EnsureResult) -> tuple[Any, ...]:
    """An answer without what names the symbol (its ticker and ids)."""
    return (
        r.created,
        r.window_start,
        r.window_end,
        r.has_coverage,
        r.gaps,
        r.bars_missing,
        r.slices_queued,
        r.slices_pending,
        r.provider,
        tuple(r.gap_spans),
        tuple(r.pending),
        tuple(r.unfillable),
    )


def _queue(app: App, prefix: str) -> dict[int, list[tuple[Any, ...]]]:
    """Each symbol's slices (by its number), as ranges, provider, layer and status."""
    query = (
        sa.select(symbols.c.ticker, job_runs.c.start, job_runs.c.end, job_runs.c.provider, job_runs.c.layer)
        .join(symbols, symbols.c.id == job_runs.c.symbol_id)
        .where(symbols.c.ticker.like(f"{prefix}%"))
    )
    out: dict[int, list[tuple[Any, ...]]] = {}
    with app.db.read() as conn:
        for ticker, *rest in conn.execute(query):
            out.setdefault(int(ticker[len(prefix) :]), []).append(tuple(rest))
    return {k: sorted(v) for k, v in out.items()}


def test_pieces_answer_as_one_transaction(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    _prepare(app, "A")
    _pieces_of(monkeypatch, first=10_000, largest=10_000)
    told_a: list[int] = []
    whole = ensure(app, _tickers("A"), "m15", start=START, end=END, on_enqueued=lambda: told_a.append(1))
    assert len(told_a) == 1  # one transaction, one wake-up

    _prepare(app, "B")
    _pieces_of(monkeypatch, first=1, largest=4)
    queued_when_told: list[int] = []
    defined_when_told: list[int] = []

    def told() -> None:
        queued_when_told.append(sum(len(v) for v in _queue(app, "B").values()))
        with app.db.read() as conn:
            mine = [d for d in list_definitions(conn) if d.symbol.startswith("B") and d.requester != "other"]
        defined_when_told.append(len(mine))

    pieces = ensure(app, _tickers("B"), "m15", start=START, end=END, on_enqueued=told)

    assert [_answer(r) for r in pieces.results] == [_answer(r) for r in whole.results]
    assert [r.symbol for r in pieces.results] == _tickers("B")
    assert _queue(app, "B") == _queue(app, "A")
    # One wake-up per piece (1, 2, 4, then 2 symbols), each once the piece's slices were committed
    # and before the next piece's were.
    per_symbol = [r.slices_queued for r in pieces.results]
    assert all(n >= 2 for n in per_symbol)
    prior = len(_queue(app, "B")[3]) - per_symbol[3]  # the other requester's slices of B3
    assert prior > 0 and pieces.results[3].slices_pending == prior
    ends = [1, 3, 7, 9]
    assert queued_when_told == [prior + sum(per_symbol[:e]) for e in ends]
    assert defined_when_told == ends
    assert pieces.progress.total_slices == whole.progress.total_slices > 0


def test_a_failure_midway_leaves_whole_pieces_and_a_retry_completes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pieces_of(monkeypatch, first=10_000, largest=10_000)
    whole = ensure(app, _tickers("A"), "m15", start=START, end=END)

    _pieces_of(monkeypatch, first=1, largest=4)
    plan = planning.plan_definition

    def failing(defn: Any, *args: Any, **kwargs: Any) -> Any:
        if defn.symbol == "B5":  # in the third piece (B3..B6)
            raise RuntimeError("planner crashed")
        return plan(defn, *args, **kwargs)

    monkeypatch.setattr("barfill.service.ensure.plan_definition", failing)
    with pytest.raises(RuntimeError, match="planner crashed"):
        ensure(app, _tickers("B"), "m15", start=START, end=END)

    # The first two pieces (B0; B1, B2) are whole: their definitions and every slice of them.
    # Nothing of the third piece, nor of the ones after it, was written.
    with app.db.read() as conn:
        defined = sorted(d.symbol for d in list_definitions(conn) if d.symbol.startswith("B"))
        known = {t for (t,) in conn.execute(sa.select(symbols.c.ticker).where(symbols.c.ticker.like("B%")))}
    assert defined == ["B0", "B1", "B2"]
    assert known == {"B0", "B1", "B2"}
    partial, reference = _queue(app, "B"), _queue(app, "A")
    assert partial == {i: reference[i] for i in (0, 1, 2)}

    monkeypatch.setattr("barfill.service.ensure.plan_definition", plan)
    retry = ensure(app, _tickers("B"), "m15", start=START, end=END)
    assert _queue(app, "B") == reference
    for i, (r, w) in enumerate(zip(retry.results, whole.results, strict=True)):
        if i < 3:  # committed before the failure: already queued, nothing new
            assert (r.slices_queued, r.slices_pending, r.created) == (0, w.slices_queued, False)
        else:
            assert _answer(r) == _answer(w)
    # Asked once more: idempotent.
    again = ensure(app, _tickers("B"), "m15", start=START, end=END)
    assert [r.slices_queued for r in again.results] == [0] * N
    assert _queue(app, "B") == reference


def test_the_first_piece_holds_one_request_of_a_multi_symbol_provider(app: App) -> None:
    # The synthetic provider answers up to 50 symbols per request: the first 50 are queued together.
    width = app.providers["synthetic"].capabilities.max_symbols
    queued_when_told: list[int] = []
    tickers = [f"M{i:03d}" for i in range(width + 10)]
    report = ensure(
        app,
        tickers,
        "d1",
        start="2025-01-02",
        end="2025-03-31",
        on_enqueued=lambda: queued_when_told.append(sum(len(v) for v in _queue(app, "M").values())),
    )
    assert [r.slices_queued for r in report.results] == [1] * len(tickers)
    assert queued_when_told == [width, width + 10]
