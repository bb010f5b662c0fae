"""The generic cell rate algorithm (GCRA), as pure arithmetic.

Why GCRA: its whole state is one number per provider, the *theoretical
arrival time* ``tat`` (when the next request would be due if requests came
exactly at the limit). That single number fits in one database row and is
advanced by one conditional ``UPDATE``, so every worker process on every
machine shares the same budget (:mod:`barfill.store.ratelimit` is the SQL
twin of these functions and must stay consistent with them).

The rules, with ``I = spacing_s(limit)`` (seconds between requests at the
limit, widened by a send margin, below) and ``tau = I * (burst - 1)`` (the
burst tolerance):

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

Why a send margin: a provider counts *arrivals* in a strict sliding window
("at most N in any ``period_s``"), and a request arrives some time ``d``
after its grant. With ``I = period_s / N`` exactly, grants ``k`` and
``k + N`` are one period apart, so grant ``k`` arriving a few milliseconds
late puts N + 1 arrivals inside one window: the 429 seen at 4/s. Spacing
grants by ``(period_s + m) / N`` keeps any N + 1 grants ``period_s + m``
apart, so no window holds N + 1 arrivals as long as each request is sent
within ``m`` of its grant; :func:`barfill.store.ratelimit.acquire` enforces
that bound: a grant that reached its worker ``L > m`` late pushes every later
grant back by ``L`` before it is sent (or is dropped: never over-spent), and a
loop's first request counts as 0.05 s late (its first connection).
``m`` is :data:`SEND_MARGIN` of the period: 30 ms at 4/s,
1.8 s at 5/min, a 3 % cost in pace (jitter of 20-30 ms was measured on a loaded
2-core machine: the margin must cover it). The other cause of a late
arrival, a process's first request importing httpx's connection backend
(~0.1 s), is paid before the first grant
(:func:`barfill.providers.http.warm_http_stack`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from barfill.domain.capabilities import RateLimit

SEND_MARGIN = 0.03
"""The send margin as a fraction of the limit's period (see the module docstring)."""


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


def send_margin_s(limit: RateLimit) -> float:
    """``m``: the longest a granted request may take to reach the provider (seconds)."""
    return SEND_MARGIN * limit.period_s


def spacing_s(limit: RateLimit) -> float:
    """``I``: seconds between two grants at the limit, the send margin included."""
    return (limit.period_s + send_margin_s(limit)) / limit.requests


def burst_tolerance_s(limit: RateLimit) -> float:
    """``tau``: how far ``tat`` may run ahead of ``now`` and still grant (0 for burst 1)."""
    return spacing_s(limit) * (max(limit.burst, 1) - 1)


def decide(tat: float | None, now: float, limit: RateLimit) -> Decision:
    """Ask for one slot at ``now``. ``tat`` None means the provider was never used."""
    current = now if tat is None else tat
    tolerance = burst_tolerance_s(limit)
    if current - tolerance <= now:
        return Decision(True, max(current, now) + spacing_s(limit), 0.0)
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
    return math.floor(window_s / spacing_s(limit) + 1e-9) + max(limit.burst, 1)
