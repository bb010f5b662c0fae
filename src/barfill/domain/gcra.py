"""The generic cell rate algorithm (GCRA), as pure arithmetic: the HTTP API's per-key limit.

Why GCRA here: its whole state is one number per key, the *theoretical
arrival time* ``tat``, cheap to keep in memory for every API key a server
process sees (:class:`barfill.server.deps.Auth`), and with ``burst = N`` a
client may spend a whole period's budget at once, then one request per
``period / N``. (Provider limits are a sliding log in the database instead,
:mod:`barfill.domain.sliding_log`: exact against a provider's strict window.)

With ``I = period_s / N`` and ``tau = I * (burst - 1)``, a request at ``now``
is granted iff ``tat - tau <= now``, and the new ``tat`` is
``max(tat, now) + I``; else it may ask again after ``tat - tau - now``
seconds. Times are seconds on one clock; this module never reads one.
"""

from __future__ import annotations

from dataclasses import dataclass

from barfill.domain.capabilities import RateLimit


@dataclass(frozen=True)
class Decision:
    """The outcome of one request for a slot.

    Attributes:
        granted: whether the request may be served now.
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
    """Ask for one slot at ``now``. ``tat`` None means the key was never used."""
    current = now if tat is None else tat
    tolerance = burst_tolerance_s(limit)
    if current - tolerance <= now:
        return Decision(True, max(current, now) + limit.interval_s, 0.0)
    return Decision(False, current, current - tolerance - now)
