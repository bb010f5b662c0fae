"""The fetch-bars worker: claim slices, fetch within the shared rate limit, validate, commit.

asyncio with ``concurrency`` slices (or multi-symbol groups) in flight; any
number of processes on any number of machines share the queue and the rate
limiter through the database. Store calls are synchronous and run in threads.

A slice's life here: claimed under a lease → heartbeat every lease/3 → rate
token (waiting if needed) → fetch through the planned provider, falling back
to the router's next choice when it cannot serve → validate → one transaction
(bars + coverage + derived bars + status). Errors are recorded on the slice;
retryable ones back off (honouring Retry-After, pushing the shared limiter
for everyone on a 429). On stop: no new claims; in-flight slices get
``grace_s`` to finish, then are released untouched.

Layers: a slice carries its layer (``historical`` = final, ``intraday`` =
provisional), decided by the planner; the worker never picks one from its own
clock. Before fetching it re-checks the live-edge rule
(:mod:`barfill.domain.finality`) on the database clock: a final slice whose
range is not final yet for its provider is released until it is (no attempt
counted); a provisional slice whose range has become final is finished as
``superseded`` unfetched. Committing a final slice removes the provisional
bars and coverage of its range in the same transaction.

Bad bars (:mod:`barfill.domain.badbars`) are flagged in the committing
transaction. A committed final slice schedules its sessions' one
re-verification; a ``verify`` slice re-fetches from the provider whose bars
are stored and commits only the differences (:mod:`barfill.service.verification`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from barfill import telemetry
from barfill.bootstrap import App
from barfill.domain import sliding_log
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import TradingCalendar, get_calendar
from barfill.domain.capabilities import RateLimit
from barfill.domain.finality import Finality, classify, final_at, final_until
from barfill.domain.intervals import Interval
from barfill.domain.planner import estimate_units, observed_ratio, whole_sessions
from barfill.domain.slices import (
    ClaimedSlice,
    CompleteManyResult,
    CompletionItem,
    CoverageSpan,
    NewSlice,
    Purpose,
)
from barfill.domain.validate import validate_bars
from barfill.errors import BarfillError, DatabaseError, InvalidBars, LeaseLost, ProviderError
from barfill.ports import RateLimiter
from barfill.providers import usage
from barfill.providers.http import next_grant, on_send, warm_http_stack
from barfill.providers.usage import AnswerCost
from barfill.service.derive import (
    Derivation,
    derive_after,
    drop_provisional_after,
    fresh_spans,
    parse_derivations,
    read_layers,
)
from barfill.service.verification import VerifyCounts, apply_verification, record_after_fill
from barfill.store.bars import nothing_stored
from barfill.store.changes import Changes
from barfill.store.definitions import get_definition
from barfill.store.densities import base_of, record_densities
from barfill.store.flags import reflag
from barfill.store.queue import QUEUE_CHANNEL, completion_time
from barfill.store.ratelimit import acquire, record_send
from barfill.store.symbols import symbol_calendars

log = logging.getLogger("barfill.worker")
# The shortest wait for a provider's next slot: Unix seconds near 1.8e9 resolve to ~0.2 us, so a
# shorter sleep on a simulated clock could leave the time unchanged and the loop polling forever.
_MIN_SLOT_WAIT_S = 0.001
# A group this many times smaller than a page is started alone (see Worker.run).
SMALL_FRACTION = 10
# After a newest screen lands, the pages claimed with it wait this long before they start (see
# Worker._start): the chart's read of those bars goes first.
NEWEST_READ_S = 0.05
# The GIL switch interval while a worker runs on SQLite (Python's default is 5 ms): see
# _short_switch. Measured in the unthrottled ingest: the writer waited ~0.8 s less (of ~10 s).
WRITER_SWITCH_S = 0.0005
_switch_lock = threading.Lock()
_switch_users: list[float] = []  # the interval before the first user, once per running worker


@contextlib.contextmanager
def _short_switch() -> Iterator[None]:
    """:data:`WRITER_SWITCH_S` while any worker of this process runs on SQLite.

    SQLite's one writer lets go of the GIL for each statement and must win it
    back to bind its next rows while the event loop parses pages: a short
    interval hands it back sooner. The interval is the process's; the one
    before the first worker comes back after the last one.
    """
    with _switch_lock:
        _switch_users.append(sys.getswitchinterval() if not _switch_users else _switch_users[0])
        sys.setswitchinterval(WRITER_SWITCH_S)
    try:
        yield
    finally:
        with _switch_lock:
            before = _switch_users.pop()
            if not _switch_users:
                sys.setswitchinterval(before)


@dataclass
class WorkerStats:
    """What one worker did; ``requests`` counts provider fetch calls."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lease_lost: int = 0
    reaped: int = 0
    deferred: int = 0  # final slices given back until their range is final for their provider
    superseded: int = 0  # provisional slices whose range became final before they ran
    verified: int = 0  # sessions re-verified against their provider
    corrections: int = 0  # bars those re-verifications changed, added or removed
    db_errors: int = 0
    requests: int = 0
    truncated: int = 0  # answers cut short at a provider's limit (the rest queued again)
    bars_written: int = 0
    # Seconds inside commit transactions (waits for this process's write turn excluded), and the CPU seconds
    # of the threads running them, SQLite's own work included: the single writer's load. The gap
    # between them is time the committing thread was ready but not running (the GIL, other processes).
    commit_s: float = 0.0
    commit_cpu_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker process's loop. Create, then ``await run(stop)``."""

    def __init__(
        self,
        app: App,
        *,
        concurrency: int | None = None,
        worker_id: str | None = None,
        lease_s: float | None = None,
        poll_s: float | None = None,
        derivations: Sequence[Derivation] | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.app = app
        # Set by whoever enqueues in this process (the HTTP server's ensure): an idle worker
        # claims at once instead of at its next poll.
        self.wake = wake
        self.concurrency = concurrency or app.settings.worker_concurrency
        self.worker_id = worker_id or default_worker_id()
        self.lease_s = lease_s or app.settings.lease_s
        self.poll_s = poll_s or app.settings.worker_poll_s
        self.derivations = (
            list(derivations) if derivations is not None else parse_derivations(app.settings.derivations)
        )
        self.stats = WorkerStats()
        self._calendars: dict[int, TradingCalendar] = {}
        self._pins: dict[int, str | None] = {}
        self._last_reap = 0.0
        self._slot_in_s = 0.0  # when no provider was ready to claim for: seconds until one is
        self._commit_slots = self._new_commit_slots()
        self._turns = WriteTurns(app.db.is_sqlite)
        self._limiter = _TurnLimiter(app.limiter, self._turns)
        self._changes: Changes | None = None  # set by run

    # -- main loop ------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        drain: bool = False,
        until_idle: bool = False,
        grace_s: float = 10.0,
    ) -> WorkerStats:
        """Work until ``stop`` is set, or until there is nothing to do.

        Args:
            stop: set it to stop claiming; in-flight slices get ``grace_s``.
            drain: return once nothing is queued or running at all (slices
                backing off are waited for).
            until_idle: return as soon as nothing is in flight and nothing is
                claimable *now* on the database clock: slices backing off or
                not yet runnable stay queued. A provider's rate limit is not
                idleness: its wait is slept through ``app.clock`` (instantly,
                under a simulated clock). A replay alternates this with moving
                its simulated clock.
            grace_s: seconds in-flight slices get to finish after ``stop``.
        """
        # On real time an idle worker waits for new work to be committed (by any process), not
        # for its next poll: see _idle_sleep.
        self._changes = None if self.app.clock.simulated else Changes(self.app.db, channel=QUEUE_CHANNEL)
        switch = _short_switch() if self.app.db.is_sqlite else contextlib.nullcontext()
        try:
            if self._changes is not None:
                await self._changes.wait(0)  # listening (PostgreSQL) / knows the version (SQLite) from now on
            with switch:
                return await self._run(
                    stop or asyncio.Event(), drain=drain, until_idle=until_idle, grace_s=grace_s
                )
        finally:
            if self._changes is not None:
                await self._changes.aclose()

    async def _run(
        self, stop: asyncio.Event, *, drain: bool, until_idle: bool, grace_s: float
    ) -> WorkerStats:
        self._commit_slots = self._new_commit_slots()  # bound to this run's event loop
        # Before the first slot, not between a grant and its request: httpx's lazy imports
        # and this loop's client (its TLS context) cost ~0.1 s the first time.
        await asyncio.to_thread(warm_http_stack)
        if self.app.http is not None:
            self.app.http.client()
        inflight: set[asyncio.Task[None]] = set()
        outage = 0
        while not stop.is_set():
            inflight = {t for t in inflight if not t.done()}
            free = self.concurrency - len(inflight)
            if free <= 0:
                await _wait_any(inflight, stop)
                continue
            idle_wait: float | None = None
            try:
                groups, surplus = await self._claim_groups(free)
                if not groups:
                    await self._reap_if_due()
                    if drain and not inflight and await asyncio.to_thread(self._queue_empty):
                        break
                    if until_idle and not inflight:
                        idle_wait = await asyncio.to_thread(self._wait_for_claimable)
                        if idle_wait is None:
                            break
            except DatabaseError as e:
                # Restarted or unreachable database: back off and try again; leased
                # slices of ours that cannot be finished are reaped after their lease.
                outage += 1
                self.stats.db_errors += 1
                log.warning("database unavailable (%s); retrying", e)
                await _wait_any(set(), stop, timeout=min(0.2 * 2**outage, 10.0))
                continue
            outage = 0
            if not groups:
                # Poll again after poll_s, or sooner when a provider's slot comes sooner: a
                # worker that sleeps past a free slot loses it for good (the limit's pace).
                soon = min(self.poll_s, self._slot_in_s)
                if inflight:  # our own work finishing frees room: wait for it (real time)
                    await _wait_any(inflight, stop, timeout=soon, wake=self.wake)
                else:  # idle: poll again (or after the rate-limit wait) on the app's clock
                    pause = soon if idle_wait is None else idle_wait
                    await _wait_any(set(), stop, sleeper=self._idle_sleep(pause), wake=self.wake)
                continue
            await self._start(groups, surplus, inflight, stop)
        await self._shutdown(inflight, grace_s)
        return self.stats

    async def _start(
        self,
        groups: list[list[ClaimedSlice]],
        surplus: list[ClaimedSlice],
        inflight: set[asyncio.Task[None]],
        stop: asyncio.Event,
    ) -> None:
        """Start claimed groups (adding them to ``inflight``); a newest screen first, alone.

        A small first group is a chart's newest screen (planning.split_newest):
        it lands before the big pages claimed with it compete with it for this
        process, and they start :data:`NEWEST_READ_S` after it: a chart polling
        for those bars reads them right after they land, and the pages' start
        (a clock read, a rate-limit slot and a request each) would compete
        with that read. Measured on the HTTP bench (20 paired runs each, a
        machine loaded by other work): median time beyond the round-trip 94 ms
        without the pause, 69 ms with it. If ``stop`` is set meanwhile, those
        pages go back untouched.
        """
        for i, group in enumerate(groups):
            task = asyncio.create_task(self._process(group))
            inflight.add(task)
            if i == 0:  # what was claimed beyond our room goes back once the first one is off
                for s in surplus:
                    await asyncio.to_thread(self._release_quietly, s)
            if i == 0 and len(groups) > 1 and self._is_small(group):
                await _wait_any({task}, stop)
                if not self.app.clock.simulated:
                    await _wait_any(set(), stop, timeout=NEWEST_READ_S)
                if stop.is_set():
                    for rest in groups[1:]:
                        for s in rest:
                            await asyncio.to_thread(self._release_quietly, s)
                    return

    def _idle_sleep(self, pause: float) -> Coroutine[Any, Any, None]:
        """Sleep ``pause`` seconds, or less on real time if the database changed meanwhile.

        New work committed by another process (``barfill ensure`` next to
        ``barfill serve``) is claimed within milliseconds instead of at the
        next poll: PostgreSQL notifies :data:`QUEUE_CHANNEL` on every enqueue
        that queued something; on SQLite any commit ends the wait (a claim
        that finds nothing costs one short write transaction).
        """
        if self._changes is None:
            return self.app.clock.sleep(pause)
        return self._changes.wait(pause)

    def _new_commit_slots(self) -> asyncio.Semaphore:
        """How many of this process's commits may run at once.

        SQLite takes one writer at a time: committers queued here (FIFO) get
        the write lock the moment the previous commit ends. Left to SQLite's
        busy handler, a waiting ``BEGIN IMMEDIATE`` polls with sleeps growing
        to 100 ms and the lock idles in between. PostgreSQL commits in
        parallel (the server works on each in its own process).
        """
        return asyncio.Semaphore(1 if self.app.db.is_sqlite else self.concurrency)

    def _wait_for_claimable(self) -> float | None:
        """None if no slice of ours is runnable now; else seconds until a provider has a slot."""
        runnable = [p for p in self.app.queue.runnable() if p in self.app.providers]
        if not runnable:
            return None
        return min(self.app.limiter.peek(p, self.app.providers[p].capabilities.rate_limit) for p in runnable)

    async def _reap_if_due(self) -> None:
        """An idle worker re-queues slices whose lease expired (a dead worker's).

        The scheduler reaps too; reaping is one idempotent conditional UPDATE,
        so doing it from anywhere is safe and keeps work moving when no
        scheduler runs (``worker --drain``).
        """
        now = time.monotonic()
        if now - self._last_reap < max(1.0, self.lease_s / 3):
            return
        self._last_reap = now
        self.stats.reaped += await asyncio.to_thread(self.app.queue.reap)

    def _queue_empty(self) -> bool:
        counts = self.app.queue.counts()
        return counts.get("queued", 0) == 0 and counts.get("running", 0) == 0

    async def _shutdown(self, inflight: set[asyncio.Task[None]], grace_s: float) -> None:
        if not inflight:
            return
        _, pending = await asyncio.wait(inflight, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- claiming ---------------------------------------------------------------

    async def _claim_groups(self, free: int) -> tuple[list[list[ClaimedSlice]], list[ClaimedSlice]]:
        """Claim runnable slices and group same-range ones of multi-symbol providers.

        Slices of providers whose shared rate limit is exhausted are not
        claimed: a worker does not take work it cannot start soon (see
        :meth:`_ready_providers`). Returns at most ``free`` groups, one more
        when the first is a newest screen (it runs alone, before the others:
        see :meth:`_start`), and the slices claimed beyond them, for the caller
        to release once the first group is started (a release is a write: the
        newest screen need not wait for it).
        """
        claimed = await asyncio.to_thread(self._claim_ready, free)
        self.stats.claimed += len(claimed)
        groups = self._group(claimed)
        room = free + 1 if len(groups) > 1 and self._is_small(groups[0]) else free
        return groups[:room], [s for group in groups[room:] for s in group]

    def _claim_ready(self, free: int) -> list[ClaimedSlice]:
        """The claim in one thread hop: ready providers, their slices, and what starting them reads.

        Every hop back to the event loop waits behind whatever else the loop
        runs (in ``barfill serve``: the ensure's answer, the chart's first
        polls), and the newest screen's fetch starts only after the last one.
        So the claimed symbols' calendars and definition pins are read here
        too (both cached for the worker's life), not on the loop or in a hop
        of their own.
        """
        ready = self._ready_providers(free)
        if not ready:
            return []
        claimed = self._claim(free, ready)
        # A multi-symbol provider answers same-range slices of many symbols in one request:
        # take more of its slices (enqueue order puts same-range ones together), unless the
        # first claim already found fewer than it asked for (nothing more is runnable).
        multi = sorted({s.provider for s in claimed if self._max_symbols(s.provider) > 1})
        if multi and len(claimed) == free:
            extra_n = free * (max(self._max_symbols(p) for p in multi) - 1)
            claimed += self._claim(extra_n, multi)
        for s in claimed:
            self._calendar(s.symbol_id)
            self._pinned(s.definition_id)
        return claimed

    def _claim(self, n: int, providers: list[str]) -> list[ClaimedSlice]:
        with self._turns(urgent=True):
            return self.app.queue.claim(self.worker_id, n, self.lease_s, providers)

    def _is_small(self, group: Sequence[ClaimedSlice]) -> bool:
        """Whether a group is a small fraction of its provider's page (a newest-screen slice)."""
        first = group[0]
        provider = self.app.providers.get(first.provider)
        if provider is None:
            return False
        caps = provider.capabilities
        units = estimate_units(first.timeframe, caps, self._calendar(first.symbol_id), first.start, first.end)
        return units * SMALL_FRACTION <= caps.page_limit

    def _max_symbols(self, provider: str) -> int:
        p = self.app.providers.get(provider)
        return 1 if p is None else p.capabilities.max_symbols

    def _ready_providers(self, free: int) -> list[str]:
        """Providers with a slot free within ``free`` request spacings.

        Claiming a little ahead of the slot keeps a slice ready to send the
        instant the slot opens (it waits in :func:`acquire`), instead of the
        slot passing unused while this loop polls. The look-ahead stays well
        inside the lease. Also sets ``_slot_in_s``: how soon the first
        provider not ready now will be.
        """
        ready: list[str] = []
        soonest = float("inf")
        for name, p in self.app.providers.items():
            limit = p.capabilities.rate_limit
            ahead = min(sliding_log.pace_s(limit) * free, self.lease_s / 4)
            wait = self.app.limiter.peek(name, limit)
            if wait <= ahead:
                ready.append(name)
            else:  # at least a millisecond: a sleep below the clock's resolution would never end the wait
                soonest = min(soonest, max(wait - ahead, _MIN_SLOT_WAIT_S))
        self._slot_in_s = soonest
        return ready

    def _group(self, claimed: Sequence[ClaimedSlice]) -> list[list[ClaimedSlice]]:
        by_range: dict[tuple[str, str, int, int, str, str], list[ClaimedSlice]] = defaultdict(list)
        for s in claimed:
            by_range[(s.provider, s.timeframe.value, s.start, s.end, s.layer.value, s.purpose.value)].append(
                s
            )
        groups: list[list[ClaimedSlice]] = []
        for (provider_name, *_), same in by_range.items():
            caps = self.app.providers[provider_name].capabilities
            group: list[ClaimedSlice] = []
            units = 0
            for s in same:
                cost = estimate_units(s.timeframe, caps, self._calendar(s.symbol_id), s.start, s.end)
                if group and (len(group) >= caps.max_symbols or units + cost > caps.page_limit):
                    groups.append(group)
                    group, units = [], 0
                group.append(s)
                units += cost
            groups.append(group)
        return groups

    def _calendar(self, symbol_id: int) -> TradingCalendar:
        cal = self._calendars.get(symbol_id)
        if cal is None:
            with self.app.db.read() as conn:
                names = symbol_calendars(conn, [symbol_id])
            cal = get_calendar(names.get(symbol_id, self.app.settings.calendar))
            self._calendars[symbol_id] = cal
        return cal

    # -- one group --------------------------------------------------------------

    async def _process(self, group: list[ClaimedSlice]) -> None:
        lost: set[int] = set()
        beat = asyncio.create_task(self._heartbeat(group, lost))
        try:
            await self._fetch_and_commit(group, lost)
        except asyncio.CancelledError:
            for s in group:
                await asyncio.to_thread(self._release_quietly, s)
            raise
        except DatabaseError as e:
            # The slices stay leased to us; once the lease expires they are reaped.
            self.stats.db_errors += 1
            log.warning("slices %s: database error (%s); left to lease expiry", [s.id for s in group], e)
        except Exception as e:  # the loop must survive anything one slice does
            log.exception("slice group %s failed unexpectedly", [s.id for s in group])
            for s in group:
                await self._fail(s, "internal", f"{type(e).__name__}: {e}", retryable=True)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _heartbeat(self, group: list[ClaimedSlice], lost: set[int]) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            for s in group:
                if s.id in lost:
                    continue
                try:
                    await asyncio.to_thread(self._heartbeat_one, s)
                except LeaseLost:
                    lost.add(s.id)
                except DatabaseError as e:  # try again next beat; the lease has slack
                    log.warning("slice %s: heartbeat failed (%s)", s.id, e)

    def _heartbeat_one(self, s: ClaimedSlice) -> None:
        # Urgent: behind back-to-back commits a beat polling SQLite's busy handler could miss every gap.
        with self._turns(urgent=True):
            self.app.queue.heartbeat(s, self.lease_s)

    async def _fetch_and_commit(self, group: list[ClaimedSlice], lost: set[int]) -> None:
        first = group[0]  # a group shares one range, provider, layer and purpose
        cal = self._calendar(first.symbol_id)
        attempted: list[str] = []
        # The pin and the database clock (the rule runs on it) in one thread hop.
        pinned, now = await asyncio.to_thread(self._pin_and_now, first)
        if await self._not_due(group, cal, pinned, now):
            return

        async def take_slot(name: str) -> None:
            attempted.append(name)
            t0 = time.monotonic()
            await acquire(
                self._limiter,
                name,
                self.app.providers[name].capabilities.rate_limit,
                sleep=self.app.clock.sleep,
                clock=self.app.clock.now if self.app.clock.simulated else None,
            )
            on_send.set(record_send)  # the request's real departure is checked against the grant
            next_grant.set(lambda: take_slot(name))  # a next page of this fetch takes its own slot
            telemetry.RATE_LIMIT_WAIT.labels(name).observe(time.monotonic() - t0)
            telemetry.PROVIDER_REQUESTS.labels(name).inc()
            self.stats.requests += 1

        try:
            with usage.collect() as costs:
                served_by, batches = await self.app.router.fetch(
                    [s.symbol for s in group],
                    first.timeframe,
                    first.start,
                    first.end,
                    now=int(now),
                    layer=first.layer,
                    pinned=pinned,
                    prefer=first.provider,
                    on_attempt=take_slot,
                )
        except ProviderError as e:
            await self._record_errors(attempted)
            telemetry.PROVIDER_ERRORS.labels(attempted[-1] if attempted else first.provider, e.code).inc()
            if e.code == "http_429" and attempted:
                name = attempted[-1]
                wait = e.retry_after_s or 2 * self.app.providers[name].capabilities.rate_limit.interval_s
                await asyncio.to_thread(self._limiter.penalize, name, wait)
            for s in group:
                await self._fail(s, e.code, str(e), retryable=e.retryable, retry_after_s=e.retry_after_s)
            return
        await self._record_errors([n for n in attempted if n != served_by])
        densities, ends = await self._learn(group, [c for c in costs if c.provider == served_by], cal)
        await self._commit(group, batches, cal, lost, ends=ends, densities=densities)

    async def _learn(
        self, group: list[ClaimedSlice], costs: list[AnswerCost], cal: TradingCalendar
    ) -> tuple[dict[tuple[int, str, str], float], dict[int, int]]:
        """What the answers' costs teach: each symbol's density, and slices cut short by a limit.

        Returns the densities to record with the commit, and the end of each
        slice whose answer stopped at the provider's limit (its bars end
        there). The rest of such a slice is queued again, as its own slice,
        before the commit: a crash in between fetches it twice, never loses it.
        """
        by_symbol = {s.symbol: s for s in group}
        densities: dict[tuple[int, str, str], float] = {}
        ends: dict[int, int] = {}
        rest: list[NewSlice] = []
        for c in costs:
            s = by_symbol.get(c.symbol)
            provider = self.app.providers.get(c.provider)
            if s is None or provider is None:
                continue
            upto = c.end if c.truncated_at is None else c.truncated_at
            lo, hi = (c.start, upto) if c.outside_rows else whole_sessions(cal, c.start, upto)
            ratio = observed_ratio(
                c.base_read, estimate_units(c.timeframe, provider.capabilities, cal, lo, hi)
            )
            if ratio is not None:
                key = (s.symbol_id, c.provider, base_of(c.timeframe))
                densities[key] = max(ratio, densities.get(key, 0.0))
            if c.truncated_at is not None and c.truncated_at < s.end:
                log.warning("slice %s: %s stopped at its limit at %s; rest queued", s.id, c.provider, upto)
                self.stats.truncated += 1
                ends[s.id] = c.truncated_at
                rest.append(
                    NewSlice(
                        s.definition_id,
                        s.symbol_id,
                        s.timeframe,
                        c.truncated_at,
                        s.end,
                        s.provider,
                        max_attempts=s.max_attempts,
                        layer=s.layer,
                        purpose=s.purpose,
                    )
                )
        if rest:
            await asyncio.to_thread(self.app.queue.enqueue, rest)
        return densities, ends

    async def _record_errors(self, failed: list[str]) -> None:
        """Count one failed call per provider in ``failed`` in the shared limiter counters.

        The router moves to the next provider only after a provider's call
        failed, so each distinct name attempted but not the one that served
        stands for exactly one failed call. A counter that cannot be written is
        logged, never allowed to fail the slice.
        """
        for name in dict.fromkeys(failed):
            try:
                await asyncio.to_thread(self._limiter.record_error, name)
            except DatabaseError as e:
                log.warning("%s: error counter not updated (%s)", name, e)

    async def _not_due(
        self, group: list[ClaimedSlice], cal: TradingCalendar, pinned: str | None, now: float
    ) -> bool:
        """Re-check the live-edge rule at fetch time; True when the group was handled without fetching.

        * A final (historical) slice whose range is not final yet for its
          provider (planned early, or a clock moved back) is given back until
          the moment it becomes final: no attempt counted, nothing failed.
        * A provisional (intraday) slice whose range has become final for its
          preferred historical provider meanwhile is finished as
          ``superseded`` without a request: the final slice is planned on its own.
        """
        first = group[0]
        tf, start, end = first.timeframe, first.start, first.end
        if first.layer is Layer.historical:
            provider = self.app.providers.get(first.provider)
            if provider is None:
                return False  # no longer configured: the router falls back or explains
            caps = provider.capabilities
            if classify(caps, cal, tf, start, end, now) is Finality.final:
                return False
            when = final_at(caps, cal, end)
            for s in group:
                await asyncio.to_thread(self._release_quietly, s, when)
                self.stats.deferred += 1
            return True
        if first.layer is not Layer.intraday:
            return False
        assigned, _ = self.app.router.assign(tf, [Interval(start, end)], now=int(now), pinned=pinned)
        if not assigned:
            return False
        name = assigned[0][0]
        caps = self.app.router.capabilities(name)
        if classify(caps, cal, tf, start, end, now) is not Finality.final:
            return False
        for s in group:
            try:
                await asyncio.to_thread(
                    self.app.queue.supersede, s, f"superseded: range is final for {name}; fetched as final"
                )
                self.stats.superseded += 1
            except LeaseLost:
                self.stats.lease_lost += 1
        return True

    def _pin_and_now(self, first: ClaimedSlice) -> tuple[str | None, float]:
        # A re-check asks the provider whose bars are stored.
        pinned = first.provider if first.purpose is Purpose.verify else self._pinned(first.definition_id)
        return pinned, self.app.db.now()

    def _pinned(self, definition_id: int) -> str | None:
        """The provider a definition is pinned to (cached: pins change rarely)."""
        if definition_id not in self._pins:
            with self.app.db.read() as conn:
                defn = get_definition(conn, definition_id)
            self._pins[definition_id] = defn.provider if defn is not None else None
        return self._pins[definition_id]

    async def _commit(
        self,
        group: list[ClaimedSlice],
        batches: dict[str, BarBatch],
        cal: TradingCalendar,
        lost: set[int],
        *,
        ends: dict[int, int] | None = None,
        densities: dict[tuple[int, str, str], float] | None = None,
    ) -> None:
        """Validate each slice's bars, then commit the whole group in one transaction.

        Times come from the database clock: whether the range is still trading
        (bars provisional), when provisional coverage expires.
        """
        now = await asyncio.to_thread(self.app.db.now)
        first = group[0]  # a group shares one range, provider and layer
        layer = first.layer
        live = layer is Layer.intraday
        expires = now + self.app.settings.intraday_refresh_s if live else None
        provider = self.app.providers.get(first.provider)
        until = None
        if not live and provider is not None:
            until = final_until(provider.capabilities, cal, now, first.timeframe)
        verify = first.purpose is Purpose.verify
        items: list[CompletionItem] = []
        fetched: dict[int, BarBatch] = {}
        for s in group:
            if s.id in lost:
                self.stats.lease_lost += 1
                continue
            batch = batches.get(s.symbol)
            if batch is None:
                await self._fail(s, "bad_payload", f"provider answered without {s.symbol}", retryable=True)
                continue
            reasons = validate_bars(
                batch, start=s.start, end=s.end, calendar=cal, now=now, final=True, final_until=until
            )
            if reasons:
                await self._fail(s, "invalid_bars", str(InvalidBars(reasons)), retryable=True)
                continue
            fetched[s.id] = batch
            end = (ends or {}).get(s.id, s.end)  # an answer cut short at the limit ends early
            if verify:
                # Writes only what changed (in ``check``), and checks only what was fetched.
                items.append((dataclasses.replace(s, end=end), [], []))
            else:
                items.append((s, [batch], [CoverageSpan(s.start, end, expires)]))
        if not items:
            return
        if verify:
            await self._commit_verify(items, fetched, cal)
            return
        fresh = {s.id: batches[0] for s, batches, _ in items}
        alone: set[int] = set()  # slices whose derivation ranges held no bar before their upsert

        def probe(conn: Connection, s: ClaimedSlice) -> None:
            spans = fresh_spans(s.timeframe, s.start, s.end, self.derivations, cal)
            if spans and nothing_stored(conn, s.symbol_id, s.timeframe, spans, layers=read_layers(layer)):
                alone.add(s.id)

        def derived(conn: Connection, s: ClaimedSlice) -> None:
            record_densities(conn, {k: v for k, v in (densities or {}).items() if k[0] == s.symbol_id})
            batch = fetched[s.id]
            flagged = reflag(conn, s.symbol_id, batch, layer=layer, calendar=cal)
            served = self.app.providers.get(batch.provider)
            if not live and served is not None:
                record_after_fill(
                    conn,
                    s,
                    batch.provider,
                    served.capabilities,
                    cal,
                    after_sessions=self.app.settings.reverify_after_sessions,
                    now=now,
                )
            if not live:  # final bars landed: nothing provisional may outlive them
                drop_provisional_after(
                    conn,
                    symbol_id=s.symbol_id,
                    source=s.timeframe,
                    start=s.start,
                    end=s.end,
                    derivations=self.derivations,
                    calendar=cal,
                )
            derive_after(
                conn,
                symbol_id=s.symbol_id,
                source=s.timeframe,
                start=s.start,
                end=s.end,
                derivations=self.derivations,
                calendar=cal,
                layer=layer,
                coverage_expires_at=expires,
                precedence=self.app.precedence,
                # Flagged bars are not read, so they are not derived from: then read the store.
                fresh=None if flagged else fresh[s.id],
                fresh_at=completion_time(conn, s.id),
                fresh_alone=s.id in alone,
            )

        async with self._commit_slots:
            result = await self._complete(items, layer, derived, before=probe)
        self.stats.succeeded += len(result.done)
        self.stats.lease_lost += len(result.lost)
        self.stats.bars_written += result.rows
        telemetry.SLICES_DONE.inc(len(result.done))
        telemetry.BARS_WRITTEN.inc(result.rows)

    async def _complete(
        self,
        items: list[CompletionItem],
        layer: Layer,
        also: Callable[[Connection, ClaimedSlice], object],
        *,
        before: Callable[[Connection, ClaimedSlice], object] | None = None,
    ) -> CompleteManyResult:
        """Complete ``items`` in one transaction (in a thread), counting its time in the stats."""
        result, seconds, cpu_s = await asyncio.to_thread(self._complete_timed, items, layer, also, before)
        self.stats.commit_s += seconds
        self.stats.commit_cpu_s += cpu_s
        return result

    def _complete_timed(
        self,
        items: list[CompletionItem],
        layer: Layer,
        also: Callable[[Connection, ClaimedSlice], object],
        before: Callable[[Connection, ClaimedSlice], object] | None = None,
    ) -> tuple[CompleteManyResult, float, float]:
        with self._turns(urgent=False):
            t0, cpu0 = time.perf_counter(), time.thread_time()
            result = self.app.queue.complete_many(items, layer=layer, also=also, before=before)
            return result, time.perf_counter() - t0, time.thread_time() - cpu0

    async def _commit_verify(
        self, items: list[CompletionItem], fetched: dict[int, BarBatch], cal: TradingCalendar
    ) -> None:
        """Commit verify slices: in one transaction, each slice's differences, corrections and check."""
        counts = VerifyCounts()

        def check(conn: Connection, s: ClaimedSlice) -> None:
            apply_verification(
                conn,
                s,
                fetched[s.id],
                cal,
                derivations=self.derivations,
                precedence=self.app.precedence,
                counts=counts,
            )

        async with self._commit_slots:
            result = await self._complete(items, Layer.historical, check)
        self.stats.succeeded += len(result.done)
        self.stats.lease_lost += len(result.lost)
        self.stats.verified += counts.sessions
        self.stats.corrections += counts.total
        telemetry.SLICES_DONE.inc(len(result.done))

    async def _fail(
        self,
        s: ClaimedSlice,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> None:
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        try:
            status = await asyncio.to_thread(
                self.app.queue.fail, s, code, message, retryable=retryable, retry_after_s=retry_after_s
            )
        except LeaseLost:
            self.stats.lease_lost += 1
            return
        except DatabaseError as e:
            self.stats.db_errors += 1
            log.warning("slice %s: could not record %s (%s); left to lease expiry", s.id, code, e)
            return
        if status == "failed":
            self.stats.failed += 1
        else:
            self.stats.retried += 1

    def _release_quietly(self, s: ClaimedSlice, not_before: float | None = None) -> None:
        """Give a slice back (until ``not_before``).

        If that fails (lease gone, database down) its lease expires.
        """
        try:
            self.app.queue.release(s, not_before=not_before)
            self.stats.released += 1
        except BarfillError as e:
            log.info("slice %s not released (%s)", s.id, e)


class WriteTurns:
    """Which of this process's threads writes next to a one-writer database (SQLite).

    SQLite lets one transaction write at a time, and a writer that finds it
    taken polls with sleeps growing to 100 ms: it loses every gap between the
    slice commits queued behind one another here. A claim or a rate-limit slot
    then waits for the whole queue of commits, no page is fetched meanwhile,
    and fetching and committing take turns instead of overlapping (profiled:
    claims waited up to 0.6 s). Here a short write (``urgent``) goes next,
    between two commits. A no-op for PostgreSQL, whose writers do not exclude
    one another.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._cond = threading.Condition()
        self._busy = False
        self._urgent = 0  # urgent writers waiting
        self.waiting = 0  # every writer waiting

    @contextlib.contextmanager
    def __call__(self, *, urgent: bool) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._cond:
            self._urgent += urgent
            self.waiting += 1
            try:
                while self._busy or (self._urgent and not urgent):
                    self._cond.wait()
            finally:
                self._urgent -= urgent
                self.waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class _TurnLimiter:
    """The shared rate limiter, its writes taking urgent :class:`WriteTurns`."""

    def __init__(self, inner: RateLimiter, turns: WriteTurns) -> None:
        self._inner = inner
        self._turns = turns

    def try_acquire(self, provider: str, limit: RateLimit) -> float:
        return self.take(provider, limit)[0]

    def take(self, provider: str, limit: RateLimit) -> tuple[float, float, int]:
        with self._turns(urgent=True):
            return self._inner.take(provider, limit)

    def defer(self, provider: str, seq: int, seconds: float) -> None:
        with self._turns(urgent=True):
            self._inner.defer(provider, seq, seconds)

    def unsent(self, provider: str) -> None:
        with self._turns(urgent=True):
            self._inner.unsent(provider)

    def penalize(self, provider: str, seconds: float) -> None:
        with self._turns(urgent=True):
            self._inner.penalize(provider, seconds)

    def record_error(self, provider: str) -> None:
        with self._turns(urgent=True):
            self._inner.record_error(provider)


async def _wait_any(
    tasks: set[asyncio.Task[None]],
    stop: asyncio.Event,
    timeout: float | None = None,
    *,
    sleeper: Coroutine[Any, Any, None] | None = None,
    wake: asyncio.Event | None = None,
) -> None:
    """Return when a task finishes, ``stop`` or ``wake`` is set, ``timeout`` passes or ``sleeper`` returns.

    ``wake`` is cleared on return: it means "look again", once.
    """
    stopper = asyncio.create_task(stop.wait())
    extra: set[asyncio.Task[Any]] = {asyncio.create_task(sleeper)} if sleeper is not None else set()
    if wake is not None:
        extra.add(asyncio.create_task(wake.wait()))
    try:
        await asyncio.wait({*tasks, stopper, *extra}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for helper in (stopper, *extra):
            helper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await helper
        if wake is not None:
            wake.clear()
