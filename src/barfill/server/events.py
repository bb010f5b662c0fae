"""``GET /v1/events``: server-sent events of hydration progress and bars landing.

Events (``event:`` name, JSON ``data:``, and an ``id:`` on every one):

* ``bars`` — ``{symbol, timeframe, start, end, rows, slice, definition_id}``
  (Unix seconds, ``[start, end)``) each time a slice's bars commit;
* ``progress`` — with ``?job=``: ``{job, percent, bars_written, eta_s, done,
  ...slice counts}`` whenever it changes;
* ``queue`` — without ``job``: slice counts by status whenever they change.

With ``job`` and no resume id the stream starts at the job's own start, so a
client that connects after the first bars landed still sees them.

The feed is read from the database (committed slices ordered by
``(finished_at, id)``), so every API process serves the same stream and a
client that reconnects with ``Last-Event-ID`` (or ``?after=``) resumes from
its last event. Delivery is at least once: on PostgreSQL, where concurrent
transactions may commit out of ``finished_at`` order, a resume re-reads a
short look-back (``PG_LAG_S``) and may repeat an event; handle ``bars``
idempotently (re-read the range).

How fresh: PostgreSQL wakes every stream with ``LISTEN barfill`` (the queue
issues ``pg_notify`` in each completion's transaction), so an event reaches
every process's clients well within a second of the commit; SQLite (one
machine) is polled cheaply every ``SQLITE_POLL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from barfill.bootstrap import App
from barfill.errors import BarfillError, InvalidInput
from barfill.server.deps import ERROR_RESPONSES, get_app, require
from barfill.server.read_cache import DataVersion
from barfill.service.progress import JobRef, job_progress
from barfill.store import http_reads

log = logging.getLogger("barfill.events")
router = APIRouter(prefix="/v1", tags=["v1"], responses=ERROR_RESPONSES)
SQLITE_POLL_S = 0.25
PG_POLL_S = 2.0
PG_LAG_S = 10.0
KEEPALIVE_S = 15.0


class EventHub:
    """One per server process: wakes event streams when new data may be there.

    On PostgreSQL it also moves ``version`` (the process's
    :class:`~barfill.server.read_cache.DataVersion`) on every notification,
    and tells it when notifications may have been missed.
    """

    def __init__(self, app: App, version: DataVersion | None = None) -> None:
        self.app = app
        self.version = version
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.notifications = 0

    @property
    def poll_s(self) -> float:
        return PG_POLL_S if self.app.db.is_postgres else SQLITE_POLL_S

    @property
    def lag_s(self) -> float:
        # SQLite serializes writers, and the clock is read inside the write: commit order is id order.
        return PG_LAG_S if self.app.db.is_postgres else 0.0

    async def start(self) -> None:
        self._wake = asyncio.Event()
        if self.app.db.is_postgres:
            self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self.version is not None:
            self.version.listening(False)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait(self, timeout: float) -> None:
        """Return on the next notification, or after ``timeout`` seconds."""
        event = self._wake
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _bump(self) -> None:
        self.notifications += 1
        if self.version is not None:
            self.version.bump()
        event, self._wake = self._wake, asyncio.Event()
        event.set()

    async def _listen(self) -> None:
        dsn = make_url(self.app.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute("LISTEN barfill")
                    backoff = 0.5
                    if self.version is not None:
                        self.version.listening(True)
                    self._bump()  # anything missed while (re)connecting is read by the next poll
                    async for _ in conn.notifies():
                        self._bump()
            except (psycopg.Error, OSError) as e:
                if self.version is not None:
                    self.version.listening(False)
                log.warning("LISTEN connection lost (%s); polling until it is back", type(e).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


def format_event(name: str, event_id: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def parse_cursor(text: str | None) -> tuple[float, int] | None:
    """``"<finished_at>:<slice id>"`` → (finished_at, id); 422 naming ``Last-Event-ID`` otherwise."""
    if text is None or not text.strip():
        return None
    at, _, sid = text.strip().partition(":")
    try:
        cursor = (float(at), int(sid or 0))
    except ValueError:
        raise InvalidInput("Last-Event-ID", "an id from a previous event", text[:80]) from None
    if not 0 <= cursor[0] < 1e11:
        raise InvalidInput("Last-Event-ID", "an id from a previous event", text[:80])
    return cursor


def _cursor_id(cursor: tuple[float, int]) -> str:
    return f"{cursor[0]!r}:{cursor[1]}"


class _Stream:
    """One client's stream state: the cursor, what was sent, the last progress sent."""

    def __init__(self, app: App, hub: EventHub, job: JobRef | None, job_text: str | None) -> None:
        self.app, self.hub, self.job, self.job_text = app, hub, job, job_text
        self.cursor: tuple[float, int] = (0.0, 0)
        self.sent: dict[int, float] = {}
        self.last_state: dict[str, Any] | None = None

    def start_at(self, resume: tuple[float, int] | None) -> None:
        if resume is not None:
            self.cursor = resume
            if self.hub.lag_s == 0:
                self.sent = {}
        elif self.job is not None:
            self.cursor = (self.job.since, 0)  # a job's stream starts where the job did
        else:
            # A fresh stream shows what lands from now on: what already committed is marked sent.
            self.cursor = (self.app.db.now(), 0)
            if self.hub.lag_s > 0:
                with self.app.db.read() as conn:
                    recent = http_reads.landed_since(conn, self.cursor[0] - self.hub.lag_s, limit=100_000)
                self.sent = {e.slice_id: e.finished_at for e in recent}

    def poll(self) -> list[bytes]:
        """New events since the cursor (blocking: run in a thread)."""
        out: list[bytes] = []
        with self.app.db.read() as conn:
            landed = http_reads.landed_since(conn, self.cursor[0] - self.hub.lag_s)
        wanted = None if self.job is None else set(self.job.definition_ids)
        for e in landed:
            key = (e.finished_at, e.slice_id)
            if e.slice_id in self.sent or (self.hub.lag_s == 0 and key <= self.cursor):
                continue
            self.sent[e.slice_id] = e.finished_at
            self.cursor = max(self.cursor, key)
            if wanted is not None and e.definition_id not in wanted:
                continue
            data = {
                "symbol": e.symbol,
                "timeframe": e.timeframe,
                "start": e.start,
                "end": e.end,
                "rows": e.rows,
                "slice": e.slice_id,
                "definition_id": e.definition_id,
            }
            out.append(format_event("bars", _cursor_id(key), data))
        horizon = self.cursor[0] - self.hub.lag_s - 1.0
        self.sent = {k: v for k, v in self.sent.items() if v >= horizon}
        state = self._state()
        if state != self.last_state:
            self.last_state = state
            out.append(format_event("progress" if self.job else "queue", _cursor_id(self.cursor), state))
        return out

    def _state(self) -> dict[str, Any]:
        if self.job is None:
            return {"counts": self.app.queue.counts()}
        from barfill.server.v1 import progress_out

        return {"job": self.job_text, **progress_out(job_progress(self.app.db, self.job))}


async def _events(
    request: Request, stream: _Stream, resume: tuple[float, int] | None
) -> AsyncIterator[bytes]:
    await run_in_threadpool(stream.start_at, resume)
    yield f"retry: 1000\nid: {_cursor_id(stream.cursor)}\n\n".encode()
    idle = 0.0
    while not await request.is_disconnected():
        try:
            chunks = await run_in_threadpool(stream.poll)
        except BarfillError as e:  # database hiccup: say so, keep the stream
            chunks = [f": database unavailable ({type(e).__name__})\n\n".encode()]
        for chunk in chunks:
            yield chunk
        idle = 0.0 if chunks else idle + stream.hub.poll_s
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield b": keep-alive\n\n"
        await stream.hub.wait(stream.hub.poll_s)


@router.get(
    "/events",
    dependencies=[Depends(require("read"))],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def get_events(
    request: Request,
    app: Annotated[App, Depends(get_app)],
    job: Annotated[str | None, Query(max_length=8_000, description="A job id from POST /v1/ensure")] = None,
    after: Annotated[str | None, Query(max_length=64, description="Resume after this event id")] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """Server-sent events: ``bars`` as they land, and ``progress`` (of ``job``) or ``queue`` counts."""
    from barfill.server.v1 import decode_job

    ref = None if job is None else decode_job(job)
    resume = parse_cursor(last_event_id if last_event_id is not None else after)
    hub: EventHub = request.app.state.barfill_events
    stream = _Stream(app, hub, ref, job)
    return StreamingResponse(
        _events(request, stream, resume),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
