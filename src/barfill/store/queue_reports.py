"""The queue's read-only reports: progress, counts, errors, stuck slices, throughput, open work.

Kept apart from :mod:`barfill.store.queue` (which changes slices) so each
file holds one responsibility; :class:`~barfill.store.queue.SqlQueue`
inherits these, so callers see one object.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from barfill.domain import intervals as iv
from barfill.domain.backoff import failed_cooldown
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe
from barfill.store.db import Database, db_now
from barfill.store.schema import JOB_STATUSES, job_definitions, job_runs


@dataclass(frozen=True)
class Progress:
    """Slice counts of one definition, by status, and the bars written so far."""

    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    rows_written: int = 0

    @property
    def fraction(self) -> float:
        """Share of the live (not cancelled) slices that succeeded; 1.0 when there are none."""
        live = self.total - self.cancelled
        return 1.0 if live == 0 else self.succeeded / live

    @property
    def finished(self) -> bool:
        """True when nothing is queued or running."""
        return self.queued == 0 and self.running == 0


@dataclass(frozen=True)
class StuckSlice:
    """A running slice that has shown no sign of life (heartbeat) for longer than the grace period."""

    id: int
    definition_id: int
    symbol_id: int
    timeframe: Timeframe
    start: int
    end: int
    provider: str
    worker_id: str | None
    attempts: int
    lease_until: float | None
    silent_s: float


class QueueReports:
    """Reads over ``job_runs``; the database clock (``_now``) judges ages."""

    db: Database
    _now: ColumnElement[float]

    def progress(self, definition_ids: Sequence[int]) -> dict[int, Progress]:
        """Per definition, its slices by status and the bars written (zeros for one without slices)."""
        wanted = sorted(set(definition_ids))
        counts: dict[int, dict[str, int]] = {d: {} for d in wanted}
        if wanted:
            query = (
                sa.select(
                    job_runs.c.definition_id,
                    job_runs.c.status,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(job_runs.c.rows_written), 0),
                )
                # A job's progress is its hydration: re-verification is background work.
                .where(job_runs.c.definition_id.in_(wanted), job_runs.c.purpose == "fill")
                .group_by(job_runs.c.definition_id, job_runs.c.status)
            )
            with self.db.read() as conn:
                for definition_id, status, n, rows in conn.execute(query):
                    by_status = counts[int(definition_id)]
                    by_status[str(status)] = int(n)
                    by_status["rows_written"] = by_status.get("rows_written", 0) + int(rows)
        return {
            d: Progress(
                total=sum(v for k, v in c.items() if k in JOB_STATUSES),
                **{k: v for k, v in c.items() if k in (*JOB_STATUSES, "rows_written")},
            )
            for d, c in counts.items()
        }

    def counts(self) -> dict[str, int]:
        """Slices by status, every status present."""
        query = sa.select(job_runs.c.status, sa.func.count()).group_by(job_runs.c.status)
        with self.db.read() as conn:
            found = {str(s): int(n) for s, n in conn.execute(query)}
        return {s: found.get(s, 0) for s in JOB_STATUSES}

    def runnable(self) -> dict[str, int]:
        """Queued slices whose ``not_before`` has come on the database clock, by provider.

        What a worker could claim now (rate limits aside); ``Worker.run(until_idle=True)``
        stops when this is empty.
        """
        query = (
            sa.select(job_runs.c.provider, sa.func.count())
            .where(job_runs.c.status == "queued", job_runs.c.not_before <= self._now)
            .group_by(job_runs.c.provider)
        )
        with self.db.read() as conn:
            return {str(p): int(n) for p, n in conn.execute(query)}

    def errors(self, limit: int = 20) -> list[tuple[str, str, int]]:
        """Failed slices grouped by (error code, message), most frequent first."""
        n = sa.func.count().label("n")
        query = (
            sa.select(job_runs.c.error_code, job_runs.c.error_message, n)
            .where(job_runs.c.status == "failed")
            .group_by(job_runs.c.error_code, job_runs.c.error_message)
            .order_by(n.desc(), job_runs.c.error_code)
            .limit(limit)
        )
        with self.db.read() as conn:
            return [(str(code or ""), str(msg or ""), int(k)) for code, msg, k in conn.execute(query)]

    def stuck(self, now_grace_s: float) -> list[StuckSlice]:
        """Running slices with no heartbeat (or start) for more than ``now_grace_s`` seconds.

        Usually their lease has expired too and the next :meth:`reap` takes
        them back; one that keeps its lease while silent points at a worker
        that heartbeats without making progress.
        """
        last_sign = sa.func.coalesce(job_runs.c.heartbeat_at, job_runs.c.started_at)
        query = (
            sa.select(job_runs, (self._now - last_sign).label("silent_s"))
            .where(job_runs.c.status == "running", last_sign < self._now - float(now_grace_s))
            .order_by(last_sign)
        )
        with self.db.read() as conn:
            return [
                StuckSlice(
                    id=r.id,
                    definition_id=r.definition_id,
                    symbol_id=r.symbol_id,
                    timeframe=Timeframe(r.timeframe),
                    start=r.start,
                    end=r.end,
                    provider=r.provider,
                    worker_id=r.worker_id,
                    attempts=r.attempts,
                    lease_until=r.lease_until,
                    silent_s=float(r.silent_s),
                )
                for r in conn.execute(query)
            ]

    def throughput(self, window_s: float = 3600) -> tuple[int, int]:
        """(slices, bars) completed in the last ``window_s`` seconds of the database clock."""
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(job_runs.c.rows_written), 0)).where(
            job_runs.c.status == "succeeded", job_runs.c.finished_at >= self._now - float(window_s)
        )
        with self.db.read() as conn:
            slices, rows = conn.execute(query).one()
        return int(slices), int(rows)


WorkKey = tuple[int, Timeframe]  # (symbol id, timeframe)


class QueueReader(QueueReports):
    """The reports alone, over a database: for a caller that never changes slices.

    ``barfill status`` uses it so that it loads neither the queue's write path
    nor the bar store (and with them NumPy and pandas).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._now = db_now(db)  # the database clock, as SqlQueue judges ages


@dataclass(frozen=True)
class OpenWork:
    """Slice ranges the planner must not plan again, per (symbol id, timeframe), any definition.

    ``pending``: queued or running slices, one interval each (not merged),
    sorted by start: someone is fetching them. ``held``: failed slices still
    cooling down, and cancelled slices: the scheduler leaves them be (an
    explicit ``ensure`` revives them instead).
    """

    pending: dict[WorkKey, list[Interval]]
    held: dict[WorkKey, list[Interval]]

    def blocked(self, key: WorkKey) -> list[Interval]:
        """Pending and held ranges of ``key``, normalized: what the scheduler leaves out of a plan."""
        return iv.normalize([*self.pending.get(key, ()), *self.held.get(key, ())])


def open_work(
    conn: Connection,
    *,
    now: float,
    cooldown_s: float,
    cooldown_max_s: float,
    symbol_ids: Collection[int] | None = None,
    timeframe: Timeframe | None = None,
    purpose: str = "fill",
) -> OpenWork:
    """One query: the queued, running, failed and cancelled slices' ranges, sorted into :class:`OpenWork`.

    A failed slice is held while ``now`` (database clock, Unix seconds) is
    before ``finished_at + min(cooldown_s * 2**revivals, cooldown_max_s)``;
    after that it is neither pending nor held, so the scheduler plans its
    range again and :meth:`~barfill.store.queue.SqlQueue.enqueue` revives it.
    Call it before reading coverage in the same pass: a slice that completes
    in between is then either pending or covered, never planned twice.
    ``purpose``: the slices of this purpose only (``fill`` plans gaps,
    ``verify`` plans re-verification; neither blocks the other).
    """
    r = job_runs.c
    query = sa.select(r.symbol_id, r.timeframe, r.start, r.end, r.status, r.finished_at, r.revivals).where(
        r.status.in_(("queued", "running", "failed", "cancelled")), r.purpose == purpose
    )
    if symbol_ids is not None or timeframe is not None:
        # Through the definitions: job_runs is indexed on (definition_id, status).
        d = job_definitions.c
        defs = sa.select(d.id)
        if symbol_ids is not None:
            defs = defs.where(d.symbol_id.in_(sorted(set(symbol_ids))))
        if timeframe is not None:
            defs = defs.where(d.timeframe == Timeframe.parse(timeframe).value)
        query = query.where(r.definition_id.in_(defs.scalar_subquery()))
    pending: dict[WorkKey, list[Interval]] = {}
    held: dict[WorkKey, list[Interval]] = {}
    for row in conn.execute(query.order_by(r.symbol_id, r.timeframe, r.start, r.end)):
        key = (int(row.symbol_id), Timeframe(row.timeframe))
        span = Interval(int(row.start), int(row.end))
        if row.status in ("queued", "running"):
            pending.setdefault(key, []).append(span)
        elif row.status == "cancelled" or (
            row.finished_at is not None
            and float(row.finished_at) + failed_cooldown(int(row.revivals), cooldown_s, cooldown_max_s) > now
        ):
            held.setdefault(key, []).append(span)
    return OpenWork(pending, held)
