"""A provider's request limit as a sliding log of grants, as pure arithmetic.

Why a sliding log: providers state their limits as "N requests per period"
and count *arrivals* in a sliding window (at most N in any ``period_s``). The
exact rule that never breaks such a limit, and never waits longer than it
must, is to remember when the last N requests were granted:

* grant ``k`` (0-based, in the order granted) is due at
  ``max(not_before, grant[k - N] + window_s)``; the first N grants of an idle
  provider go at once;
* and no sooner than ``grant[k - 1] + stagger_s`` (below);
* a penalty (HTTP 429, ``Retry-After``) of ``s`` seconds sets
  ``not_before = max(not_before, now + s)``.

So any N + 1 consecutive grants are at least ``window_s`` apart, and over a
long job the pace is N per ``window_s``.

Why a stagger: N requests sent at the same instant reach the provider
together, and the last one it handles is counted later than it left, by the
time the others took; counted late, it can share a window with the next N.
Measured on the 4/s bench (client departures against the server's arrival
stamps, one monotonic clock, a 2-core box at load 10-16): stamps up to 260 ms
after departure, and with grants 30 ms apart 2-3 answers of 429 per run;
with grants half the mean pace apart, 0-1 (GCRA's even spacing: 0-2). So
consecutive grants are at least ``stagger_s`` apart: half the mean pace, at
most :data:`MAX_STAGGER_S` (129 ms at 4/s, 26 ms at 20/s, 5 ms at 100/s,
0.25 s at 5/min). A job's first N requests then take ``(N - 1) * stagger_s``
instead of GCRA's ``(N - 1) * pace_s``; the long-run pace is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from barfill.domain.capabilities import RateLimit

SEND_MARGIN = 0.03
"""The send margin as a fraction of the limit's period (see the module docstring)."""
MAX_STAGGER_S = 0.25
"""The stagger's cap: a provider's queueing is at most a fraction of a second, whatever its period."""


@dataclass(frozen=True)
class Decision:
    """The outcome of one request for a slot: granted now, or the seconds until it would be (> 0)."""

    granted: bool
    wait_s: float


def send_margin_s(limit: RateLimit) -> float:
    """``m``: the longest a granted request may take to reach the provider (seconds)."""
    return SEND_MARGIN * limit.period_s


def window_s(limit: RateLimit) -> float:
    """Seconds between grant ``k`` and grant ``k + N`` at the least: the period plus the send margin."""
    return limit.period_s + send_margin_s(limit)


def pace_s(limit: RateLimit) -> float:
    """The mean seconds between grants over a long job at the limit (``window_s / N``)."""
    return window_s(limit) / limit.requests


def stagger_s(limit: RateLimit) -> float:
    """The least time between two consecutive grants (see the module docstring)."""
    return min(pace_s(limit) / 2, MAX_STAGGER_S)


def slot_of(seq: int, limit: RateLimit) -> int:
    """The ring slot that holds grant ``seq`` (and, until it is taken, grant ``seq - N``)."""
    return seq % limit.requests


def anchor(
    seq: int, limit: RateLimit, slot_seq: int | None, slot_at: float | None, latest: float | None
) -> float | None:
    """When grant ``seq - N`` was sent, or a stand-in no earlier than it; None if there was none.

    Args:
        seq: the number of the grant asked for (grants so far).
        limit: the limit; ``N`` is ``limit.requests``.
        slot_seq, slot_at: the grant stored in slot :func:`slot_of` (``seq``),
            if any: which grant it is and when it was sent.
        latest: the latest grant instant of all (used when the slot does not
            hold grant ``seq - N``: N changed since; assuming the last N grants
            all went then over-waits once, never over-sends).
    """
    n = limit.requests
    if slot_seq is not None and slot_seq == seq - n:
        return slot_at
    if seq < n and slot_seq is None:
        return None  # fewer than N grants ever
    return latest


def previous(
    seq: int, limit: RateLimit, prev_seq: int | None, prev_at: float | None, latest: float | None
) -> float | None:
    """When grant ``seq - 1`` was sent (or a later stand-in: the latest grant); None for the first grant.

    ``prev_seq, prev_at`` is what slot :func:`slot_of` (``seq - 1``) holds.
    """
    if seq == 0:
        return None
    if prev_seq is not None and prev_seq == seq - 1:
        return prev_at
    return latest


def due(
    anchor_at: float | None, previous_at: float | None, not_before: float | None, limit: RateLimit
) -> float | None:
    """The earliest instant the next grant may be made; None: at once.

    ``anchor_at`` is :func:`anchor`, ``previous_at`` is :func:`previous`.
    """
    candidates = [
        *(() if anchor_at is None else (anchor_at + window_s(limit),)),
        *(() if previous_at is None else (previous_at + stagger_s(limit),)),
        *(() if not_before is None else (not_before,)),
    ]
    return max(candidates, default=None)


def decide(
    anchor_at: float | None, previous_at: float | None, not_before: float | None, now: float, limit: RateLimit
) -> Decision:
    """Ask for the next grant at ``now``, given :func:`anchor`, :func:`previous` and the penalty floor."""
    at = due(anchor_at, previous_at, not_before, limit)
    if at is None or at <= now:
        return Decision(True, 0.0)
    return Decision(False, at - now)


def penalize(not_before: float | None, now: float, seconds: float) -> float:
    """The floor after a penalty: nothing is granted before ``now + seconds`` (never moved back)."""
    target = now + max(seconds, 0.0)
    return target if not_before is None else max(not_before, target)


@dataclass
class Log:
    """The whole state in memory: the model the database version is checked against, and a reference.

    Attributes:
        slots: ring slot → (grant number, instant sent).
        seq: grants made so far.
        not_before: the penalty floor, if any.
    """

    slots: dict[int, tuple[int, float]]
    seq: int = 0
    not_before: float | None = None

    def take(self, now: float, limit: RateLimit) -> tuple[Decision, int]:
        """Ask for a grant at ``now``; returns the decision and, if granted, the grant's number (else -1)."""
        d = decide(*self.anchors(limit), self.not_before, now, limit)
        if not d.granted:
            return d, -1
        seq, self.seq = self.seq, self.seq + 1
        self.slots[slot_of(seq, limit)] = (seq, now)
        return d, seq

    def anchors(self, limit: RateLimit) -> tuple[float | None, float | None]:
        """:func:`anchor` and :func:`previous` for the next grant."""
        latest = max((at for _, at in self.slots.values()), default=None)
        held = self.slots.get(slot_of(self.seq, limit))
        slot_seq, slot_at = (None, None) if held is None else held
        before = self.slots.get(slot_of(self.seq - 1, limit))
        prev_seq, prev_at = (None, None) if before is None else before
        return (
            anchor(self.seq, limit, slot_seq, slot_at, latest),
            previous(self.seq, limit, prev_seq, prev_at, latest),
        )

    def defer(self, seq: int, seconds: float) -> None:
        """Grant ``seq`` was sent ``seconds`` after it was granted: the grant N after it waits that too.

        Wherever the ring holds it (N may have changed since); nothing if the ring moved past it.
        """
        for slot, (held, at) in self.slots.items():
            if held == seq:
                self.slots[slot] = (held, at + max(seconds, 0.0))

    def penalize(self, now: float, seconds: float) -> None:
        """A 429 / ``Retry-After``: nothing is granted before ``now + seconds``."""
        self.not_before = penalize(self.not_before, now, seconds)
