"""The generic cell rate algorithm (GCRA), as pure arithmetic.

Why GCRA: its whole state is one number per provider, the *theoretical
arrival time* ``tat`` (when the next request would be due if requests came
exactly at the limit). That single number fits in one database row and is
advanced by one conditional ``UPDATE``, so every worker process on every
machine shares the same budget (:mod:`barfill.store.ratelimit` is the SQL
twin of these functions and must stay consistent with them).

The rules, with ``I = limit.interval_s`` (seconds between requests at the
limit) and ``tau = I * (burst - 1)`` (the burst tolerance):

* a request at ``now`` is granted iff ``tat - tau <= now``; the new
  ``tat`` is ``max(tat, now) + I``;
* otherwise it is refused and may ask again after ``tat - tau - now``
  seconds (always > 0);
* a penalty (HTTP 429, ``Retry-After``) of ``s`` seconds sets
  ``tat = max(tat, now + s + tau)``, so the first request granted afterwards
  comes no earlier than ``now + s`` even with a burst allowance.

Consequence: in any window of length ``T`` at most ``floor(T / I) + burst``
requests are granted. Times are seconds on one clock (the database's); this
module never reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from barfill.domain.capabilities import RateLimit


@dataclass(frozen=True)
class Decision:
    """The outcome of one request for a slot.

    Attributes:
        granted: whether the request may be sent now.
        tat: the theoretical arrival time to store afterwards.
        wait_s: 0.0 if granted, else seconds until a request would be granted.
    """

    granted: bool
    tat: float
    wait_s: float


def burst_tolerance_s(limit: RateLimit) -> float:
    """``tau``: how far ``tat`` may run ahead of ``now`` and still grant (0 for burst 1)."""
    return limit.interval_s * (max(limit.burst, 1) - 1)


def decide(tat: float | None, now: float, limit: RateLimit) -> Decision:
    """Ask for one slot at ``now``. ``tat`` None means the provider was never used."""
    current = now if tat is None else tat
    tolerance = burst_tolerance_s(limit)
    if current - tolerance <= now:
        return Decision(True, max(current, now) + limit.interval_s, 0.0)
    return Decision(False, current, current - tolerance - now)


def penalize(tat: float | None, now: float, seconds: float, limit: RateLimit | None = None) -> float:
    """The ``tat`` after a penalty: nothing is granted before ``now + seconds``.

    Without ``limit`` the burst tolerance is taken as 0 (correct for burst 1;
    with a larger burst the first grant could then come ``tau`` early).
    """
    tolerance = 0.0 if limit is None else burst_tolerance_s(limit)
    target = now + max(seconds, 0.0) + tolerance
    return target if tat is None else max(tat, target)


def max_granted_in_window(window_s: float, limit: RateLimit) -> int:
    """The most requests GCRA can grant inside any closed window of ``window_s`` seconds."""
    # The epsilon keeps 1.0 / 0.05 from flooring to 19 in binary floating point.
    return math.floor(window_s / limit.interval_s + 1e-9) + max(limit.burst, 1)
