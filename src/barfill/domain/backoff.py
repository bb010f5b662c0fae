"""Retry delays: exponential backoff with full jitter.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads
the retries of many workers that failed together, e.g. on one provider outage,
instead of bringing them back in lock-step. Pure: the random source is passed
in, so tests and simulations are deterministic.
"""

from __future__ import annotations

import random

# 2**60 times any sane base is far beyond any cap; stops float overflow for silly attempts.
_MAX_EXPONENT = 60


def backoff_ceiling(attempt: int, base_s: float, cap_s: float) -> float:
    """The largest delay :func:`backoff_delay` may return: ``min(cap_s, base_s * 2**(attempt-1))``."""
    if attempt < 1:
        raise ValueError(f"attempt: expected >= 1 (the attempt that just failed), got {attempt}")
    if base_s < 0 or cap_s < 0:
        raise ValueError(f"base_s and cap_s: expected >= 0, got base_s={base_s} cap_s={cap_s}")
    return float(min(cap_s, base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT)))


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (1-based).

    Uniform in ``[0, min(cap_s, base_s * 2**(attempt-1))]``: the ceiling doubles
    with each attempt and never exceeds ``cap_s``.

    Raises:
        ValueError: if ``attempt < 1`` or a duration is negative.
    """
    return rng.uniform(0.0, backoff_ceiling(attempt, base_s, cap_s))


def failed_cooldown(revivals: int, base_s: float, cap_s: float) -> float:
    """Seconds a failed slice rests before the scheduler tries it again: ``min(base_s * 2**revivals, cap_s)``.

    ``revivals`` counts the times the scheduler already brought the slice
    back: a range that keeps failing is asked about ever less often (capped),
    yet never given up on. No jitter: the slices of one failure wave come
    back in one wave, which the rate limiter spreads.

    Raises:
        ValueError: if ``revivals < 0`` or a duration is negative.
    """
    if revivals < 0:
        raise ValueError(f"revivals: expected >= 0, got {revivals}")
    if base_s < 0 or cap_s < 0:
        raise ValueError(f"base_s and cap_s: expected >= 0, got base_s={base_s} cap_s={cap_s}")
    return float(min(cap_s, base_s * 2.0 ** min(revivals, _MAX_EXPONENT)))
