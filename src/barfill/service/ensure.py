"""``ensure``: record the desired coverage, answer at once, queue what is missing.

It never waits for a provider. It answers with what is stored (coverage
bounds), what is missing (gaps, bars), what is pending (not final yet and not
servable provisionally: planned later, by the tick), what cannot be filled
(with the reason: no provider serves the timeframe, before every provider's
history) and the job's progress, then queues the slices for the workers.
Repeating it, even concurrently, gives one definition per
(symbol, timeframe, requester) and no duplicate slices (both are unique keys).

It is an explicit request, so it revives the failed and cancelled slices of
its window (with fresh attempts, no cool-down) and plans around ranges that
are already queued or running for the same (symbol, timeframe), whoever
asked. Its counts are true: ``slices_queued`` is what this call put in the
queue (new, re-queued or revived slices), ``slices_pending`` what was
already queued or running in the window; a second identical ``ensure``
reports 0 queued and N pending.

Many symbols commit in pieces, each whole (definitions and slices together),
so the first slices are claimed while the rest are planned (see :func:`ensure`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from barfill.bootstrap import App
from barfill.domain import intervals as iv
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.intervals import Interval
from barfill.domain.slices import EnqueueResult
from barfill.domain.symbols import validate_ticker
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.service.planning import DAY_S, DefinitionPlan, order_for_batching, plan_definition
from barfill.service.progress import JobRef, Progress, job_progress
from barfill.service.reference import REFERENCE_REQUESTER, missing_references
from barfill.store.coverage import CoverageView, coverage_views
from barfill.store.db import db_now
from barfill.store.definitions import (
    DEFAULT_REQUESTER,
    Definition,
    list_definitions,
    upsert_definition,
    validate_requester,
)
from barfill.store.densities import base_of, read_densities
from barfill.store.queue_reports import open_work
from barfill.store.symbols import ensure_symbols, known_symbols

DEFAULT_WINDOW_DAYS: dict[Timeframe, int] = {
    Timeframe.m1: 7,
    Timeframe.m5: 30,
    Timeframe.m15: 30,
    Timeframe.m30: 60,
    Timeframe.h1: 90,
    Timeframe.h4: 90,
    Timeframe.d1: 365,
    Timeframe.w1: 365,
}
MAX_WINDOW_DAYS = 365 * 30
# A many-symbol ensure commits in pieces of FIRST_PIECE symbols, then twice as many each time up to
# MAX_PIECE (see ensure): the first slices are claimable while the rest are still being planned.
FIRST_PIECE = 4
MAX_PIECE = 32


@dataclass(frozen=True)
class EnsureResult:
    """The answer for one (symbol, timeframe). Times are Unix seconds, UTC."""

    symbol: str
    timeframe: Timeframe
    definition_id: int
    created: bool
    window_start: int
    window_end: int
    has_coverage: bool
    coverage_from: int | None
    coverage_to: int | None
    gaps: int
    bars_missing: int
    unfillable: list[Interval]
    slices_queued: int
    provider: str | None
    slices_pending: int = 0
    requester: str = DEFAULT_REQUESTER
    gap_spans: list[Interval] = field(default_factory=list, repr=False)
    # Not servable yet (not final for its provider, none serves it provisionally): planned later.
    pending: list[Interval] = field(default_factory=list)
    # Why each ``unfillable`` interval can never be served (same order).
    unfillable_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe.value,
            "definition_id": self.definition_id,
            "window": [_iso(self.window_start), _iso(self.window_end)],
            "has_coverage": self.has_coverage,
            "coverage_from": _iso(self.coverage_from),
            "coverage_to": _iso(self.coverage_to),
            "gaps": self.gaps,
            "bars_missing": self.bars_missing,
            "unfillable": [[_iso(u.start), _iso(u.end)] for u in self.unfillable],
            "unfillable_reasons": list(self.unfillable_reasons),
            "pending": [[_iso(p.start), _iso(p.end)] for p in self.pending],
            "slices_queued": self.slices_queued,
            "slices_pending": self.slices_pending,
            "provider": self.provider,
            "requester": self.requester,
        }


@dataclass(frozen=True)
class EnsureReport:
    results: list[EnsureResult]
    job: JobRef
    progress: Progress
    notices: list[str] = field(default_factory=list)


def _iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_time(
    value: datetime | date | str | int | float, field_name: str, *, tz: str, end: bool = False
) -> int:
    """A point in time as Unix seconds (UTC); the one parser for every entry point.

    A **date** (a ``date`` or ``YYYY-MM-DD``) means that calendar day on the
    exchange: as a start it is 00:00 in the exchange's time zone ``tz`` of that
    date; as an end (``end=True``) it is **inclusive**, i.e. 00:00 exchange
    time of the *next* date, so ``--end 2024-12-31`` includes Dec 31's session
    (as Polygon, Alpaca and QuantRocket read a date-only end). An aware
    ``datetime``, an ISO 8601 time with an offset or ``Z``, or Unix seconds is
    that exact instant, and as an end it is **exclusive**. Naive times are
    refused: say which zone you mean.

    Args:
        value: the user's value.
        field_name: named in the error (``start``, ``end``...).
        tz: the exchange's IANA time zone (``TradingCalendar.tz``), for dates.
        end: whether ``value`` is the end of a range (a date then counts whole).

    Raises:
        InvalidInput: the value is not one of the forms above.
    """
    if isinstance(value, bool):
        raise InvalidInput(field_name, "a date, an aware datetime or Unix seconds", value)
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInput(field_name, "a timezone-aware datetime (naive times are ambiguous)", value)
        return int(value.timestamp())
    if isinstance(value, date):
        return _local_midnight(value, tz, end=end)
    text = str(value).strip()
    try:
        if len(text) == 10:
            return _local_midnight(date.fromisoformat(text), tz, end=end)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(field_name, "YYYY-MM-DD or an ISO 8601 time with offset", value) from None
    if parsed.tzinfo is None:
        raise InvalidInput(field_name, "an ISO 8601 time with an offset such as Z or +00:00", value)
    return int(parsed.timestamp())


def _local_midnight(day: date, tz: str, *, end: bool) -> int:
    """00:00 in ``tz`` of ``day`` (of the day after, for an inclusive end)."""
    if end:
        day += timedelta(days=1)
    return int(datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(tz)).timestamp())


@dataclass(frozen=True)
class Window:
    """Either a rolling ``days`` window ending now, or fixed [start, end) in Unix seconds."""

    days: int | None = None
    start: int | None = None
    end: int | None = None

    @classmethod
    def parse(
        cls,
        timeframe: Timeframe,
        *,
        days: int | None = None,
        start: datetime | date | str | int | None = None,
        end: datetime | date | str | int | None = None,
        tz: str,
    ) -> Window:
        """Check a user's window; dates are the exchange's (``tz``), a date-only end inclusive.

        See :func:`parse_time` for the accepted forms.
        """
        if days is not None and (start is not None or end is not None):
            raise InvalidInput("window", "either days or start/end, not both")
        if start is None and end is None:
            days = DEFAULT_WINDOW_DAYS[timeframe] if days is None else days
            if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_WINDOW_DAYS:
                raise InvalidInput("days", f"a whole number of days from 1 to {MAX_WINDOW_DAYS}", days)
            return cls(days=days)
        if start is None or end is None:
            raise InvalidInput("window", "both start and end (or days)")
        s, e = parse_time(start, "start", tz=tz), parse_time(end, "end", tz=tz, end=True)
        if e <= s:
            raise InvalidInput("end", "a time after start", end)
        return cls(start=s, end=e)


def ensure(
    app: App,
    symbols: Sequence[str],
    timeframe: Timeframe | str,
    *,
    days: int | None = None,
    start: datetime | date | str | int | None = None,
    end: datetime | date | str | int | None = None,
    priority: int = 0,
    provider: str | None = None,
    calendar: str | None = None,
    requester: str = DEFAULT_REQUESTER,
    on_enqueued: Callable[[], object] | None = None,
) -> EnsureReport:
    """Record ``requester``'s desired coverage for each symbol, queue its gaps, answer at once.

    ``start``/``end`` (or a rolling ``days``): dates are the exchange's calendar
    dates and a date-only ``end`` is inclusive (``end="2024-12-31"`` includes
    Dec 31); an ISO time or aware datetime ``end`` is exclusive. See
    :func:`parse_time`.

    Each requester has its own definition per (symbol, timeframe): asking
    again as the same requester replaces its window, priority and pin;
    other requesters' definitions are untouched.

    Many symbols commit in pieces (``FIRST_PIECE`` symbols, then twice as
    many each time up to ``MAX_PIECE``), each one transaction holding its
    definitions and their slices: workers claim the first slices while the
    rest are still planned. The answer is the one a single transaction would
    give (every piece is planned at the first piece's database clock). An
    error midway leaves the committed pieces whole and nothing of the others;
    asking again completes the work (the committed slices count as pending).

    ``on_enqueued`` runs as soon as a piece's new slices are committed to the
    queue, before the answer's progress is read: a worker in this process can
    claim the newest slice while the answer is still being made.
    """
    tf = Timeframe.parse(timeframe)
    who = validate_requester(requester)
    if not symbols:
        raise InvalidInput("symbols", "at least one ticker")
    tickers = list(dict.fromkeys(validate_ticker(s) for s in symbols))
    cal_name = calendar or app.settings.calendar
    cal = get_calendar(cal_name)
    window = Window.parse(tf, days=days, start=start, end=end, tz=cal.tz)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise InvalidInput("priority", "a whole number from -1000 to 1000", priority)
    if provider is not None and provider not in app.providers:
        raise InvalidInput("provider", f"one of {', '.join(sorted(app.providers))}", provider)
    if window.start is not None and window.end is not None:
        cal.check_range(window.start, window.end)

    ask = _Ask(tf, cal, cal_name, window, priority, provider, who)
    since: float | None = None
    results: list[EnsureResult] = []
    done = size = floor = 0
    while done < len(tickers):
        with app.db.read() as conn:
            clock = float(conn.execute(sa.select(db_now(conn))).scalar_one())
            if since is None:  # one clock for the whole answer, as if it were one transaction
                since = clock
                floor = size = _smallest_piece(app, ask, int(since))
            piece = tickers[done : done + size]
            seen = _read_piece(app, conn, piece, ask, since)
        # Planned outside any transaction: a SQLite writer lock held while planning would stall
        # every worker's claim and commit (in SQLite's busy handler, sleeping up to 100 ms).
        plans = [_plan(app, ask, known, since) for known in seen]
        with app.db.write() as conn:
            ids = ensure_symbols(conn, piece, calendar=ask.calendar_name)
            upserted = [_upsert(conn, ask, ids[t]) for t in piece]
            slices = [
                replace(s, definition_id=def_id, symbol_id=ids[t])
                for t, (def_id, _), plan in zip(piece, upserted, plans, strict=True)
                for s in plan.slices
            ]
            enqueued = EnqueueResult()
            if slices:
                enqueued = app.queue.enqueue_in(conn, order_for_batching(slices), revive=True)
        if enqueued.queued_by_definition and on_enqueued is not None:
            on_enqueued()
        results += [
            _answer(ask, known, plan, def_id, created, enqueued)
            for known, plan, (def_id, created) in zip(seen, plans, upserted, strict=True)
        ]
        done += len(piece)
        size = max(floor, min(2 * size, MAX_PIECE))
    assert since is not None, "tickers is not empty"
    def_ids = tuple(r.definition_id for r in results)
    if who != REFERENCE_REQUESTER:  # the job's reads need their dividends' closes too
        with app.db.read() as conn:
            sids = sorted(known_symbols(conn, tickers).values())
        refs = ensure_reference_closes(app, sids)
        def_ids += tuple(i for ref in refs for i in ref.definition_ids if i not in def_ids)
    job = JobRef(def_ids, since - 1e-3)
    return EnsureReport(results, job, job_progress(app.db, job), list(app.notices))


def ensure_reference_closes(app: App, symbol_ids: Sequence[int]) -> list[JobRef]:
    """Queue the reference closes the symbols' stored dividends lack (:mod:`barfill.service.reference`).

    Each symbol missing some gets one fixed d1 window under :data:`REFERENCE_REQUESTER`
    (replacing its last one); the planner skips what is covered. Returns the jobs (empty:
    nothing missing). Never waits for a provider.
    """
    jobs: list[JobRef] = []
    for ask in missing_references(app, symbol_ids):
        report = ensure(
            app,
            [ask.ticker],
            Timeframe.d1,
            start=ask.start,
            end=ask.end,
            calendar=ask.calendar,
            requester=REFERENCE_REQUESTER,
        )
        jobs.append(report.job)
    return jobs


@dataclass(frozen=True)
class _Ask:
    """One ensure call's checked arguments: what every piece is planned with."""

    timeframe: Timeframe
    calendar: TradingCalendar
    calendar_name: str
    window: Window
    priority: int
    provider: str | None
    requester: str


def _smallest_piece(app: App, ask: _Ask, now: int) -> int:
    """``FIRST_PIECE`` symbols, or as many as one request takes of the provider the window goes to.

    Same-range slices of a multi-symbol provider are claimed together and sent
    as one request: the first piece holds at least one whole request's worth.
    """
    w = ask.window
    span = Interval(now - w.days * DAY_S, now) if w.days is not None else Interval(w.start or 0, w.end or 0)
    assigned, _ = app.router.assign(ask.timeframe, [span], now=now, pinned=ask.provider)
    return max([FIRST_PIECE, *(app.router.capabilities(name).max_symbols for name, _ in assigned)])


@dataclass(frozen=True)
class _Seen:
    """What a piece's read found for one ticker: its definition as the write will leave it
    (placeholder ids where the symbol or the definition is new), and what it is planned around."""

    definition: Definition
    coverage: CoverageView
    pending: list[Interval]  # queued or running ranges of the (symbol, timeframe), anyone's
    densities: Mapping[str, float] | None


def _read_piece(
    app: App, conn: sa.Connection, tickers: Sequence[str], ask: _Ask, since: float
) -> list[_Seen]:
    """One read per kind for the whole piece: definitions, open work (first), coverage, densities."""
    tf = ask.timeframe
    sids = known_symbols(conn, tickers)
    known = sorted(sids.values())
    existing = {
        d.symbol_id: d
        for d in list_definitions(conn, symbol_ids=known)
        if d.timeframe is tf and d.requester == ask.requester
    }
    # Queued or running work first, then coverage (see open_work).
    work = open_work(
        conn,
        now=since,
        cooldown_s=app.settings.failed_cooldown_s,
        cooldown_max_s=app.settings.failed_cooldown_max_s,
        symbol_ids=known,
        timeframe=tf,
    )
    views = coverage_views(conn, known)
    densities = read_densities(conn, known, base_of(tf))
    seen: list[_Seen] = []
    for k, ticker in enumerate(tickers):
        sid = sids.get(ticker, -1 - k)  # a new symbol: inserted by the piece's write
        old = existing.get(sid)
        defn = Definition(
            id=old.id if old is not None else -1 - k,
            symbol_id=sid,
            symbol=ticker,
            timeframe=tf,
            window_days=ask.window.days,
            start=ask.window.start,
            end=ask.window.end,
            priority=ask.priority,
            enabled=True,
            provider=ask.provider,
            created_at=since,
            updated_at=since,
            requester=ask.requester,
        )
        coverage = views.get((sid, tf), CoverageView())
        # Only queued or running work is left out: failed and cancelled ranges are revived.
        seen.append(_Seen(defn, coverage, work.pending.get((sid, tf), []), densities.get(sid)))
    return seen


def _plan(app: App, ask: _Ask, seen: _Seen, since: float) -> DefinitionPlan:
    return plan_definition(
        seen.definition,
        seen.coverage,
        ask.calendar,
        app.router,
        now=int(since),
        max_attempts=app.settings.max_attempts,
        pending=seen.pending,
        densities=seen.densities,
    )


def _upsert(conn: sa.Connection, ask: _Ask, symbol_id: int) -> tuple[int, bool]:
    return upsert_definition(
        conn,
        symbol_id,
        ask.timeframe,
        window_days=ask.window.days,
        start=ask.window.start,
        end=ask.window.end,
        priority=ask.priority,
        provider=ask.provider,
        requester=ask.requester,
    )


def _answer(
    ask: _Ask, seen: _Seen, plan: DefinitionPlan, definition_id: int, created: bool, enqueued: EnqueueResult
) -> EnsureResult:
    inside = iv.intersect(seen.coverage.all, [plan.window])
    already = sum(1 for p in seen.pending if p.start < plan.window.end and plan.window.start < p.end)
    return EnsureResult(
        symbol=seen.definition.symbol,
        timeframe=ask.timeframe,
        definition_id=definition_id,
        created=created,
        window_start=plan.window.start,
        window_end=plan.window.end,
        has_coverage=not plan.gaps,
        coverage_from=inside[0].start if inside else None,
        coverage_to=inside[-1].end if inside else None,
        gaps=plan.holes,
        bars_missing=plan.bars_missing,
        unfillable=plan.unfillable,
        slices_queued=enqueued.queued_by_definition.get(definition_id, 0),
        # A slice enqueued concurrently since our read counts as pending too.
        slices_pending=already + enqueued.pending_by_definition.get(definition_id, 0),
        provider=plan.provider,
        requester=ask.requester,
        gap_spans=plan.gaps,
        pending=plan.pending,
        unfillable_reasons=plan.unfillable_reasons,
    )
