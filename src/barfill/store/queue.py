"""The slice queue, in the database: :class:`SqlQueue` implements :class:`barfill.ports.JobQueue`.

The rules, each a bug another queue shipped (DESIGN decision 4):

* **Claiming is one atomic statement**: ``UPDATE ... WHERE id IN (SELECT ...
  ORDER BY priority DESC, not_before, id LIMIT n FOR UPDATE SKIP LOCKED)
  RETURNING ...``. PostgreSQL's ``SKIP LOCKED`` lets many workers claim side
  by side; on SQLite the same statement runs in a ``BEGIN IMMEDIATE``
  transaction (SQLAlchemy renders no ``FOR UPDATE`` there). The only dialect
  difference is how the per-row uuid4 lease token is generated in SQL.
* **Every change after a claim presents the lease**: heartbeat, complete,
  fail and release match ``id AND status='running' AND lease_token``; no
  match raises :class:`~barfill.errors.LeaseLost`. A slice reaped from a
  stalled worker and claimed again can't be completed by the stale owner.
* **One transaction per completion**: the status change, the bars and the
  coverage commit together or not at all. :meth:`SqlQueue.complete_many`
  commits many completions in one transaction (one status ``UPDATE``, one
  batched coverage merge): a worker that claimed 50 slices pays for one
  commit, not 50, and a slice whose lease is gone is skipped, not fatal.
* **The database clock only**: ``not_before``, leases and backoff are
  computed in SQL from :func:`barfill.store.db.db_now`, never a worker's clock.
* **Finished rows don't bloat the claim**: the claim scans a partial index of
  queued rows; :meth:`SqlQueue.archive_finished` deletes old succeeded rows
  (coverage, not the queue, is the durable record of what was fetched).

Times are Unix seconds UTC; durations are seconds (``lease_s``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from barfill.domain.backoff import backoff_delay, failed_cooldown
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.slices import (
    ClaimedSlice,
    CompleteManyResult,
    CompletionItem,
    CoverageSpan,
    EnqueueResult,
    NewSlice,
    Purpose,
)
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, LeaseLost
from barfill.store.bars import upsert_bars
from barfill.store.coverage import CoverageKey, add_coverage_many
from barfill.store.db import Database, db_now
from barfill.store.queue_reports import Progress, QueueReports, StuckSlice
from barfill.store.schema import job_runs, symbols
from barfill.store.symbols import insert_on_conflict

_ENQUEUE_CHUNK = 500
# Inlined, not bound: a generic (prepared) plan can use the partial indexes on status
# only when the predicate is a literal the planner can match.
_QUEUED = sa.literal_column("'queued'", sa.String)
_RUNNING = sa.literal_column("'running'", sa.String)
_MAX_ERROR_MESSAGE = 4_000
_MAX_ERROR_CODE = 64
__all__ = ["QUEUE_CHANNEL", "Progress", "SqlQueue", "StuckSlice"]
_RUNNABLE_KEY = ["definition_id", "start", "end", "provider", "layer", "purpose"]
# PostgreSQL channel notified when an enqueue commits new work: idle workers listen (SQLite's
# workers watch its data_version instead; see barfill.store.changes).
QUEUE_CHANNEL = "barfill_queue"

# A uuid4 in SQLite SQL: random hex with the version nibble and the variant bits set.
_SQLITE_UUID4 = (
    "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || "
    "substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"
)


class SqlQueue(QueueReports):
    """The job queue on SQLite or PostgreSQL (see the module docstring for the rules).

    Args:
        db: the database; every write goes through :meth:`Database.write`.
        backoff_base_s, backoff_cap_s: exponential backoff with full jitter
            between retries, when the failure carries no ``Retry-After``.
        failed_cooldown_s, failed_cooldown_max_s: how long a failed slice
            rests before :meth:`enqueue` without ``revive`` (the scheduler)
            queues it again: ``min(base * 2**revivals, max)`` since it failed.
        rng: the jitter's random source (seed it in tests).
    """

    def __init__(
        self,
        db: Database,
        *,
        backoff_base_s: float = 2.0,
        backoff_cap_s: float = 600.0,
        failed_cooldown_s: float = 3600.0,
        failed_cooldown_max_s: float = 86_400.0,
        rng: random.Random | None = None,
    ) -> None:
        if backoff_base_s < 0 or backoff_cap_s < 0:
            raise InvalidInput("backoff", "non-negative seconds", (backoff_base_s, backoff_cap_s))
        if not 0 <= failed_cooldown_s <= failed_cooldown_max_s:
            raise InvalidInput(
                "failed_cooldown",
                "0 <= cooldown_s <= cooldown_max_s",
                (failed_cooldown_s, failed_cooldown_max_s),
            )
        self.db = db
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.failed_cooldown_s = failed_cooldown_s
        self.failed_cooldown_max_s = failed_cooldown_max_s
        self.rng = rng or random.Random()
        self._now = db_now(db)  # follows the Database's clock, evaluated per execution
        # The hot statements are built once, with bound parameters.
        self._claim_any = self._build_claim(filtered=False)
        self._claim_filtered = self._build_claim(filtered=True)
        self._complete_many = self._build_complete_many()
        self._heartbeat = (
            sa.update(job_runs)
            .where(_owned())
            .values(
                lease_until=self._now + sa.bindparam("b_lease_s", type_=sa.Double),
                heartbeat_at=self._now,
                updated_at=self._now,
            )
        )

    # -- claim ---------------------------------------------------------------------------------

    def _build_claim(self, *, filtered: bool) -> Any:
        now = sa.select(self._now).scalar_subquery()
        pick = (
            sa.select(job_runs.c.id)
            .where(job_runs.c.status == _QUEUED, job_runs.c.not_before <= now)
            .order_by(job_runs.c.priority.desc(), job_runs.c.not_before, job_runs.c.id)
            .limit(sa.bindparam("b_limit", type_=sa.Integer))
            .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
        )
        if filtered:
            pick = pick.where(job_runs.c.provider.in_(sa.bindparam("b_providers", expanding=True)))
        if self.db.is_postgres:
            token: ColumnElement[str] = sa.cast(sa.func.gen_random_uuid(), sa.String)
        else:
            token = sa.literal_column(_SQLITE_UUID4, sa.String)
        ticker = sa.select(symbols.c.ticker).where(symbols.c.id == job_runs.c.symbol_id).scalar_subquery()
        return (
            sa.update(job_runs)
            .where(job_runs.c.id.in_(pick.scalar_subquery()))
            .values(
                status="running",
                lease_token=token,
                lease_until=now + sa.bindparam("b_lease_s", type_=sa.Double),
                attempts=job_runs.c.attempts + 1,
                worker_id=sa.bindparam("b_worker_id", type_=sa.String),
                started_at=now,
                heartbeat_at=now,
                updated_at=now,
            )
            .returning(
                job_runs.c.id,
                job_runs.c.definition_id,
                job_runs.c.symbol_id,
                ticker.label("ticker"),
                job_runs.c.timeframe,
                job_runs.c.start,
                job_runs.c.end,
                job_runs.c.provider,
                job_runs.c.layer,
                job_runs.c.purpose,
                job_runs.c.attempts,
                job_runs.c.max_attempts,
                job_runs.c.lease_token,
                job_runs.c.priority,
                job_runs.c.not_before,
            )
        )

    def claim(
        self,
        worker_id: str,
        limit: int,
        lease_s: float,
        providers: Collection[str] | None = None,
    ) -> list[ClaimedSlice]:
        """Atomically take up to ``limit`` runnable slices, highest priority first.

        Runnable: ``queued`` with ``not_before`` reached on the database clock,
        and from one of ``providers`` when given. Each claimed slice gets its own
        uuid4 lease token, valid ``lease_s`` seconds (extend with
        :meth:`heartbeat`), and its ``attempts`` counts this claim.
        """
        if limit < 0:
            raise InvalidInput("limit", "a number of slices >= 0", limit)
        if not lease_s > 0:
            raise InvalidInput("lease_s", "a lease longer than 0 seconds", lease_s)
        if limit == 0 or (providers is not None and not providers):
            return []
        params: dict[str, Any] = {
            "b_limit": limit,
            "b_lease_s": float(lease_s),
            "b_worker_id": worker_id[:64],
        }
        stmt = self._claim_any
        if providers is not None:
            params["b_providers"] = sorted(providers)
            stmt = self._claim_filtered
        with self.db.write() as conn:
            claimed = conn.execute(stmt, params).all()
        rows = sorted(claimed, key=lambda r: (-r.priority, r.not_before, r.id))
        return [
            ClaimedSlice(
                id=r.id,
                definition_id=r.definition_id,
                symbol_id=r.symbol_id,
                symbol=r.ticker,
                timeframe=Timeframe(r.timeframe),
                start=r.start,
                end=r.end,
                provider=r.provider,
                attempts=r.attempts,
                max_attempts=r.max_attempts,
                lease_token=r.lease_token,
                layer=Layer(r.layer),
                purpose=Purpose(r.purpose),
            )
            for r in rows
        ]

    def _build_complete_many(self) -> Any:
        """The one conditional ``UPDATE`` that marks a batch of slices succeeded.

        The slices come as one parameter whatever their number, so the
        statement is compiled (and, on PostgreSQL, prepared) once: three
        arrays expanded with ``unnest`` on PostgreSQL, one JSON array of
        ``[id, token, rows]`` expanded with ``json_each`` on SQLite. The
        database clock is read once, in a CTE, so every slice of the batch
        finishes at the same instant (their bars' ``fetched_at``).
        """
        if self.db.is_postgres:
            given: Any = (
                sa.func.unnest(
                    sa.bindparam("b_ids", type_=ARRAY(sa.Integer)),
                    sa.bindparam("b_tokens", type_=ARRAY(sa.String)),
                    sa.bindparam("b_rows", type_=ARRAY(sa.Integer)),
                )
                .table_valued("id", "token", "rows")
                .render_derived(name="given")
            )
        else:
            each = sa.func.json_each(sa.bindparam("b_items", type_=sa.String)).table_valued("value")
            given = sa.select(
                *(
                    sa.func.json_extract(each.c.value, sa.literal_column(f"'$[{k}]'")).label(name)
                    for k, name in enumerate(("id", "token", "rows"))
                )
            ).subquery("given")
        clock = sa.select(self._now.label("now")).cte("clock")
        now = sa.select(clock.c.now).scalar_subquery()
        return (
            sa.update(job_runs)
            .add_cte(clock)
            .where(
                job_runs.c.id == given.c.id,
                job_runs.c.lease_token == given.c.token,
                job_runs.c.status == _RUNNING,
            )
            .values(status="succeeded", rows_written=given.c.rows, finished_at=now, updated_at=now)
            .returning(job_runs.c.id, job_runs.c.finished_at)
        )

    # -- enqueue -------------------------------------------------------------------------------

    def enqueue(self, slices: Sequence[NewSlice], *, revive: bool = False) -> EnqueueResult:
        """Insert slices idempotently on (definition, start, end, provider, layer); say what happened to each.

        For a slice whose row exists already:

        * ``queued`` or ``running``: left alone (``already_pending``);
        * ``succeeded``: queued again, its range being a gap again (``requeued``);
        * ``failed``: queued again (``revived``) when ``revive`` (an explicit
          ``ensure``: the user asks for the range now), or else once its
          cool-down has passed since it failed, ``min(cooldown_s *
          2**revivals, cooldown_max_s)`` on the database clock (the
          scheduler); otherwise ``held``;
        * ``cancelled``: queued again only when ``revive`` (an operator's
          explicit request; the scheduler never undoes a cancel); else ``held``.

        A slice queued again gets fresh attempts, no error, no lease and
        ``not_before`` = now; its ``revivals`` count grows by one when the
        scheduler revives it from ``failed`` and restarts at zero otherwise.
        Each row is changed only if its status is still the one read (a
        concurrent change wins and the slice counts as already pending).

        Raises:
            InvalidInput: for an empty or inverted range, or ``max_attempts < 1``.
        """
        rows = _enqueue_rows(slices)
        if not rows:
            return EnqueueResult()
        with self.db.write() as conn:
            return self._insert_rows(conn, rows, revive)

    def enqueue_in(
        self, conn: Connection, slices: Sequence[NewSlice], *, revive: bool = False
    ) -> EnqueueResult:
        """:meth:`enqueue` inside the caller's write transaction (from :meth:`Database.write`).

        The slices commit with whatever else that transaction writes, or not
        at all: ``ensure`` commits each piece's definitions and their slices
        together.
        """
        rows = _enqueue_rows(slices)
        return self._insert_rows(conn, rows, revive) if rows else EnqueueResult()

    def _insert_rows(self, conn: Connection, rows: list[dict[str, Any]], revive: bool) -> EnqueueResult:
        tally = _Tally()
        now = _read_clock(conn)
        for i in range(0, len(rows), _ENQUEUE_CHUNK):
            self._enqueue_chunk(conn, rows[i : i + _ENQUEUE_CHUNK], now, revive, tally)
        if tally.queued and self.db.is_postgres:
            # Delivered when this transaction commits (never if it rolls back).
            conn.execute(sa.text(f"SELECT pg_notify('{QUEUE_CHANNEL}', '')"))
        return tally.result()

    def _enqueue_chunk(
        self, conn: Connection, rows: list[dict[str, Any]], now: float, revive: bool, tally: _Tally
    ) -> None:
        # The unique key's leading columns as two IN lists: both databases seek the unique
        # index for each pair (a row-value IN list scans the table on SQLite); exact keys
        # are picked in Python.
        found = conn.execute(
            sa.select(
                *(job_runs.c[k] for k in _RUNNABLE_KEY),
                job_runs.c.id,
                job_runs.c.status,
                job_runs.c.finished_at,
                job_runs.c.revivals,
            ).where(
                job_runs.c.definition_id.in_(sorted({r["definition_id"] for r in rows})),
                job_runs.c.start.in_(sorted({r["start"] for r in rows})),
            )
        ).all()
        wanted = {_key(r) for r in rows}
        existing = {k: f for f in found if (k := tuple(getattr(f, c) for c in _RUNNABLE_KEY)) in wanted}
        fresh = [r for r in rows if _key(r) not in existing]
        if fresh:
            stamped = [
                r | {"status": "queued", "not_before": now, "created_at": now, "updated_at": now}
                for r in fresh
            ]
            insert = (
                insert_on_conflict(conn, job_runs)
                .values(stamped)
                .on_conflict_do_nothing(index_elements=_RUNNABLE_KEY)
                .returning(*(job_runs.c[k] for k in _RUNNABLE_KEY))
            )
            won = {tuple(r) for r in conn.execute(insert)}
            for r in fresh:
                # A row inserted concurrently (between our read and insert) is someone else's, pending.
                tally.add(r["definition_id"], "inserted" if _key(r) in won else "already_pending")
        # (outcome, status read, priority, max_attempts) -> [(id, definition)]: one UPDATE per group.
        groups: dict[tuple[str, str, int, int], list[tuple[int, int]]] = {}
        for r in rows:
            f = existing.get(_key(r))
            if f is None:
                continue
            outcome = self._outcome(f.status, f.finished_at, f.revivals, now, revive)
            if outcome in ("already_pending", "held"):
                tally.add(r["definition_id"], outcome)
                continue
            group = (outcome, str(f.status), int(r["priority"]), int(r["max_attempts"]))
            groups.setdefault(group, []).append((int(f.id), int(r["definition_id"])))
        for (outcome, status, priority, max_attempts), members in groups.items():
            revivals: Any = job_runs.c.revivals + 1 if outcome == "revived_by_tick" else 0
            stmt = (
                sa.update(job_runs)
                .where(job_runs.c.id.in_([m[0] for m in members]), job_runs.c.status == status)
                .values(
                    **_RESET,
                    status="queued",
                    worker_id=None,
                    attempts=0,
                    rows_written=0,
                    error_code=None,
                    error_message=None,
                    started_at=None,
                    finished_at=None,
                    priority=priority,
                    max_attempts=max_attempts,
                    not_before=now,
                    updated_at=now,
                    revivals=revivals,
                )
                .returning(job_runs.c.id)
            )
            changed = {int(i) for (i,) in conn.execute(stmt)}
            counted = "requeued" if outcome == "requeued" else "revived"
            for slice_id, definition_id in members:
                tally.add(definition_id, counted if slice_id in changed else "already_pending")

    def _outcome(
        self, status: str, finished_at: float | None, revivals: int, now: float, revive: bool
    ) -> str:
        """What enqueue does with an existing row: see :meth:`enqueue`."""
        if status in ("queued", "running"):
            return "already_pending"
        if status == "succeeded":
            return "requeued"
        if revive:
            return "revived"
        if status == "failed":
            rest = failed_cooldown(int(revivals), self.failed_cooldown_s, self.failed_cooldown_max_s)
            if finished_at is None or float(finished_at) + rest <= now:
                return "revived_by_tick"
        return "held"

    # -- changes under a lease ------------------------------------------------------------------

    def heartbeat(self, claimed: ClaimedSlice, lease_s: float) -> None:
        """Extend the lease to ``lease_s`` seconds from now (database clock).

        Raises:
            LeaseLost: if the slice is no longer running under this lease.
        """
        if not lease_s > 0:
            raise InvalidInput("lease_s", "a lease longer than 0 seconds", lease_s)
        with self.db.write() as conn:
            result = conn.execute(self._heartbeat, _lease(claimed) | {"b_lease_s": float(lease_s)})
            _require(result.rowcount, claimed)

    def complete(
        self,
        claimed: ClaimedSlice,
        batches: Sequence[BarBatch],
        coverage: Sequence[CoverageSpan],
        *,
        layer: Layer = Layer.historical,
        also: Callable[[Connection], object] | None = None,
    ) -> int:
        """In one transaction: mark succeeded, upsert the bars, add the coverage. Returns bars written.

        ``also(conn)`` runs last inside the same transaction: derived data
        (resampled bars) lands with its source or not at all.

        The status change comes first and is conditional on the lease, so a
        stale owner is refused before anything is written; any later error
        (a constraint, ``also``) rolls everything back and leaves the slice
        running under its lease. :meth:`complete_many` with one item.

        Raises:
            LeaseLost: the lease is gone; nothing was written.
            InvalidInput: a batch is not of the slice's symbol and timeframe, or
                forecast bars come with coverage (forecasts never cover); nothing was written.
        """
        hook = None if also is None else (lambda conn, _claimed: also(conn))
        result = self.complete_many([(claimed, batches, coverage)], layer=layer, also=hook)
        if result.lost:
            raise _lost(claimed)
        return result.rows

    def complete_many(
        self,
        items: Sequence[CompletionItem],
        *,
        layer: Layer = Layer.historical,
        also: Callable[[Connection, ClaimedSlice], object] | None = None,
        before: Callable[[Connection, ClaimedSlice], object] | None = None,
    ) -> CompleteManyResult:
        """Complete many claimed slices in one transaction; returns which were committed and which lost.

        Each item is ``(claimed, batches, coverage)`` as :meth:`complete`
        takes them. In one :meth:`Database.write` transaction:

        1. one ``UPDATE`` marks succeeded the slices still ``running`` under
           the lease presented (id and token), on the database clock; the
           others are *lost* (reaped, re-claimed, cancelled) and nothing at
           all is written for them;
        2. the bars of each won slice are upserted (``fetched_at`` is the
           completion time), each slice's after ``before(conn, claimed)``
           (a look at the store as it was, for ``also``);
        3. the coverage of the won slices is merged with
           :func:`~barfill.store.coverage.add_coverage_many`, leaving the same
           rows as one :meth:`complete` per slice in item order;
        4. ``also(conn, claimed)`` runs for each won slice, in item order,
           after every won slice's bars and coverage (derived data).

        Why: per completion, a transaction of its own costs a commit and
        four or five statements; batched, the cost of a batch is a fixed
        handful of statements plus the bars. All or nothing: an error in any
        step rolls back every slice of the batch, which all stay running
        under their leases (retry them, or fail them one by one). A lost
        lease is not an error: it is reported in ``lost`` so the others still
        commit.

        Raises:
            InvalidInput: the same slice twice, a batch not of its slice's
                symbol and timeframe, forecast bars with coverage, or a bad
                span of a won slice; nothing was written.
        """
        layer = Layer(layer)
        seen: set[int] = set()
        for claimed, batches, spans in items:
            if claimed.id in seen:
                raise InvalidInput("items", "each slice at most once", claimed.id)
            seen.add(claimed.id)
            if spans and layer is Layer.forecast:
                raise InvalidInput(
                    "coverage", "no coverage for forecast bars (forecasts never count as fetched)"
                )
            for batch in batches:
                if batch.symbol != claimed.symbol or batch.timeframe != claimed.timeframe:
                    raise InvalidInput(
                        "batches",
                        f"bars of {claimed.symbol} {claimed.timeframe.value} (the claimed slice)",
                        f"{batch.symbol} {batch.timeframe.value}",
                    )
        if not items:
            return CompleteManyResult(rows=0, done=[], lost=[])
        counts = [sum(len(b) for b in batches) for _, batches, _ in items]
        if self.db.is_postgres:
            params: dict[str, Any] = {
                "b_ids": [c.id for c, _, _ in items],
                "b_tokens": [c.lease_token for c, _, _ in items],
                "b_rows": counts,
            }
        else:
            params = {
                "b_items": json.dumps(
                    [[c.id, c.lease_token, n] for (c, _, _), n in zip(items, counts, strict=True)]
                )
            }
        with self.db.write() as conn:
            finished = {int(i): float(t) for i, t in conn.execute(self._complete_many, params)}
            won = [item for item in items if item[0].id in finished]
            if won:
                now = max(finished.values())
                for claimed, batches, _ in won:
                    if before is not None:
                        before(conn, claimed)
                    for batch in batches:
                        upsert_bars(conn, claimed.symbol_id, batch, layer=layer, fetched_at=now)
                covered: list[tuple[CoverageKey, Sequence[CoverageSpan]]] = [
                    ((c.symbol_id, c.timeframe), cov) for c, _, cov in won if cov
                ]
                add_coverage_many(conn, covered, now=now)
                if also is not None:
                    for claimed, _, _ in won:
                        also(conn, claimed)
                if self.db.is_postgres:
                    # Wakes every API process's event stream when this commits (none if it rolls back).
                    notice = json.dumps({"slices": sorted(finished), "at": now})[:7900]
                    conn.execute(sa.text("SELECT pg_notify('barfill', :p)"), {"p": notice})
        return CompleteManyResult(
            rows=sum(n for (c, _, _), n in zip(items, counts, strict=True) if c.id in finished),
            done=[c.id for c, _, _ in items if c.id in finished],
            lost=[c.id for c, _, _ in items if c.id not in finished],
        )

    def fail(
        self,
        claimed: ClaimedSlice,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> str:
        """Record a failure; returns the new status, ``queued`` or ``failed``.

        A retryable failure with attempts left is queued again after
        ``retry_after_s`` (the provider's ``Retry-After``) or else an
        exponential backoff with full jitter; otherwise the slice is
        ``failed``. Either way the error code and message are kept.

        Raises:
            LeaseLost: if the slice is no longer running under this lease.
        """
        error = {"error_code": code[:_MAX_ERROR_CODE], "error_message": message[:_MAX_ERROR_MESSAGE]}
        if retryable and claimed.attempts < claimed.max_attempts:
            if retry_after_s is not None:
                delay = max(0.0, float(retry_after_s))
            else:
                delay = backoff_delay(claimed.attempts, self.backoff_base_s, self.backoff_cap_s, self.rng)
            status = "queued"
            values: dict[str, Any] = {"not_before": self._now + delay}
        else:
            status = "failed"
            values = {"finished_at": self._now}
        stmt = (
            sa.update(job_runs)
            .where(_owned())
            .values(status=status, updated_at=self._now, **_RESET, **error, **values)
        )
        with self.db.write() as conn:
            _require(conn.execute(stmt, _lease(claimed)).rowcount, claimed)
        return status

    def release(self, claimed: ClaimedSlice, *, not_before: float | None = None) -> None:
        """Give a slice back untouched: queued again, this attempt not counted.

        Graceful shutdown releases with ``not_before`` None (runnable at once);
        a worker that finds a final slice's range not final yet for its
        provider releases it until the time it becomes final (database-clock
        Unix seconds; see :func:`barfill.domain.finality.final_at`).

        Raises:
            LeaseLost: if the slice is no longer running under this lease.
        """
        values: dict[str, Any] = {} if not_before is None else {"not_before": float(not_before)}
        stmt = (
            sa.update(job_runs)
            .where(_owned())
            .values(
                status="queued",
                attempts=sa.case((job_runs.c.attempts > 0, job_runs.c.attempts - 1), else_=0),
                updated_at=self._now,
                **_RESET,
                **values,
            )
        )
        with self.db.write() as conn:
            _require(conn.execute(stmt, _lease(claimed)).rowcount, claimed)

    def supersede(self, claimed: ClaimedSlice, message: str) -> None:
        """Finish a slice without fetching: its range is served by another slice now.

        An ``intraday`` slice whose range became final meanwhile: the final
        slice is planned on its own, so this one is ``succeeded`` with
        ``error_code`` ``superseded``, 0 rows, and nothing written.

        Raises:
            LeaseLost: if the slice is no longer running under this lease.
        """
        stmt = (
            sa.update(job_runs)
            .where(_owned())
            .values(
                status="succeeded",
                rows_written=0,
                error_code="superseded",
                error_message=message[:_MAX_ERROR_MESSAGE],
                finished_at=self._now,
                updated_at=self._now,
                **_RESET,
            )
        )
        with self.db.write() as conn:
            _require(conn.execute(stmt, _lease(claimed)).rowcount, claimed)

    def reap(self) -> int:
        """Re-queue running slices whose lease expired (database clock); returns how many.

        Attempts are kept: a slice whose last attempt's worker vanished becomes
        ``failed`` with error code ``lease_expired`` instead.
        """
        out_of_attempts = job_runs.c.attempts >= job_runs.c.max_attempts
        stmt = (
            sa.update(job_runs)
            .where(job_runs.c.status == _RUNNING, job_runs.c.lease_until < self._now)
            .values(
                status=sa.case((out_of_attempts, "failed"), else_="queued"),
                finished_at=sa.case((out_of_attempts, self._now), else_=None),
                error_code="lease_expired",
                error_message="lease expired: worker "
                + sa.func.coalesce(job_runs.c.worker_id, "?")
                + " stopped heartbeating",
                updated_at=self._now,
                **_RESET,
            )
        )
        with self.db.write() as conn:
            return int(conn.execute(stmt).rowcount)

    # -- operator actions -------------------------------------------------------------------------

    def cancel(self, ids: Iterable[int] | None = None, *, definition_ids: Iterable[int] | None = None) -> int:
        """Cancel queued and running slices (all of them when both filters are None); returns how many.

        A cancelled running slice's worker finds its lease gone at its next
        heartbeat or completion. Only an explicit request brings a cancelled
        slice back: :meth:`enqueue` with ``revive`` (``ensure``) or :meth:`retry`.
        """
        stmt = sa.update(job_runs).where(job_runs.c.status.in_(("queued", "running")))
        if ids is not None:
            stmt = stmt.where(job_runs.c.id.in_(sorted(set(ids))))
        if definition_ids is not None:
            stmt = stmt.where(job_runs.c.definition_id.in_(sorted(set(definition_ids))))
        stmt = stmt.values(status="cancelled", finished_at=self._now, updated_at=self._now, **_RESET)
        with self.db.write() as conn:
            return int(conn.execute(stmt).rowcount)

    def retry(self, ids: Iterable[int] | None = None, *, status: str = "failed") -> int:
        """Queue failed and/or cancelled slices again with fresh attempts; returns how many.

        Args:
            ids: only these slices (None: every slice in ``status``).
            status: ``failed``, ``cancelled`` or ``all`` (both).

        An operator's explicit request: the cool-down is ignored and the
        slice's ``revivals`` count restarts at zero.
        """
        wanted = _RETRY_STATUSES.get(status)
        if wanted is None:
            raise InvalidInput("status", "failed, cancelled or all", status)
        stmt = sa.update(job_runs).where(job_runs.c.status.in_(wanted))
        if ids is not None:
            stmt = stmt.where(job_runs.c.id.in_(sorted(set(ids))))
        stmt = stmt.values(
            status="queued",
            attempts=0,
            revivals=0,
            not_before=self._now,
            error_code=None,
            error_message=None,
            finished_at=None,
            updated_at=self._now,
            **_RESET,
        )
        with self.db.write() as conn:
            return int(conn.execute(stmt).rowcount)

    def retry_failed(self, ids: Iterable[int] | None = None) -> int:
        """:meth:`retry` of failed slices only (kept for existing callers)."""
        return self.retry(ids, status="failed")

    def archive_finished(self, older_than_s: float) -> int:
        """Delete succeeded slices finished more than ``older_than_s`` ago; returns how many.

        Coverage, not the queue, is the durable record of what was fetched, so
        old successes carry no information the planner needs; deleting them
        keeps the table (and PostgreSQL's indexes) small. Failed and cancelled
        rows stay: they are the operator's to see, a failed row's cool-down
        and a cancelled row keep the scheduler from planning their range. :meth:`throughput` only
        sees what is not yet archived.
        """
        if older_than_s < 0:
            raise InvalidInput("older_than_s", "seconds >= 0", older_than_s)
        stmt = sa.delete(job_runs).where(
            job_runs.c.status == "succeeded", job_runs.c.finished_at < self._now - float(older_than_s)
        )
        with self.db.write() as conn:
            return int(conn.execute(stmt).rowcount)


_RETRY_STATUSES = {"failed": ("failed",), "cancelled": ("cancelled",), "all": ("failed", "cancelled")}


def completion_time(conn: Connection, slice_id: int) -> float | None:
    """When a slice was completed (``finished_at``, database clock); inside :meth:`SqlQueue.complete_many`'s
    transaction this is the ``fetched_at`` its bars were written with."""
    value = conn.execute(sa.select(job_runs.c.finished_at).where(job_runs.c.id == slice_id)).scalar()
    return None if value is None else float(value)


def _enqueue_rows(slices: Sequence[NewSlice]) -> list[dict[str, Any]]:
    """The rows :meth:`SqlQueue.enqueue` inserts, one per unique key (the last one given wins).

    Raises:
        InvalidInput: for an empty or inverted range, or ``max_attempts < 1``.
    """
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in slices:
        if s.end <= s.start:
            raise InvalidInput("slice", "start < end", s)
        if s.max_attempts < 1:
            raise InvalidInput("max_attempts", "at least 1", s.max_attempts)
        row = {
            "definition_id": s.definition_id,
            "symbol_id": s.symbol_id,
            "timeframe": Timeframe.parse(s.timeframe).value,
            "start": int(s.start),
            "end": int(s.end),
            "provider": s.provider,
            "layer": Layer(s.layer).value,
            "purpose": Purpose(s.purpose).value,
            "priority": s.priority,
            "max_attempts": s.max_attempts,
        }
        unique[_key(row)] = row
    return list(unique.values())


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in _RUNNABLE_KEY)


class _Tally:
    """Counts for :class:`EnqueueResult`, overall and per definition."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("inserted", "requeued", "revived", "already_pending", "held"), 0)
        self.queued: dict[int, int] = {}
        self.pending: dict[int, int] = {}

    def add(self, definition_id: int, outcome: str) -> None:
        self.counts[outcome] += 1
        if outcome in ("inserted", "requeued", "revived"):
            self.queued[definition_id] = self.queued.get(definition_id, 0) + 1
        elif outcome == "already_pending":
            self.pending[definition_id] = self.pending.get(definition_id, 0) + 1

    def result(self) -> EnqueueResult:
        return EnqueueResult(
            **self.counts, queued_by_definition=dict(self.queued), pending_by_definition=dict(self.pending)
        )


# Columns cleared whenever a slice leaves the running state.
_RESET: dict[str, Any] = {"lease_until": None, "lease_token": None, "heartbeat_at": None}


def _owned() -> ColumnElement[bool]:
    return sa.and_(
        job_runs.c.id == sa.bindparam("b_id", type_=sa.Integer),
        job_runs.c.status == "running",
        job_runs.c.lease_token == sa.bindparam("b_token", type_=sa.String),
    )


def _lease(claimed: ClaimedSlice) -> dict[str, Any]:
    return {"b_id": claimed.id, "b_token": claimed.lease_token}


def _lost(claimed: ClaimedSlice) -> LeaseLost:
    return LeaseLost(
        f"slice {claimed.id} ({claimed.symbol} {claimed.timeframe.value}): lease {claimed.lease_token} "
        "is no longer held (reaped, cancelled or finished)"
    )


def _require(rowcount: int, claimed: ClaimedSlice) -> None:
    if rowcount == 0:
        raise _lost(claimed)


def _read_clock(conn: Connection) -> float:
    return float(conn.execute(sa.select(db_now(conn))).scalar_one())
