"""What a provider declares about itself. The planner and router use only this.

Nothing outside a provider's module hard-codes that provider's facts: its
module builds a :class:`Capabilities` and every decision reads from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from barfill.domain.bars import Basis
from barfill.domain.timeframes import Timeframe

_DAY = 86_400


class PageUnit(StrEnum):
    """What a provider's per-request limit counts."""

    bars = "bars"  # rows returned (Alpaca, Tradier, Yahoo, synthetic)
    base_minutes = "base_minutes"  # minute aggregates behind the answer (Polygon m1..h4)


class HourAlignment(StrEnum):
    """Where a provider's intraday bars of an hour or more start."""

    clock = "clock"  # 09:00, 10:00 ... in the exchange's time zone (Polygon, Alpaca)
    session_open = "session_open"  # 09:30, 10:30 ... (Yahoo): never stored as-is


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` in any ``period_s`` seconds.

    A provider's limit is kept as a sliding log (:mod:`barfill.domain.sliding_log`):
    up to ``requests`` may go at once. ``burst`` is read only by GCRA limits
    (:mod:`barfill.domain.gcra`, the HTTP API's per-key limit): requests back to back.
    """

    requests: int
    period_s: float
    burst: int = 1

    @property
    def interval_s(self) -> float:
        """Emission interval of the GCRA: seconds between two requests at the limit."""
        return self.period_s / self.requests


@dataclass(frozen=True)
class Capabilities:
    """A provider's declared abilities.

    Attributes:
        name: the provider's name, as stored on bars and slices.
        timeframes: native timeframes it serves.
        page_limit: the most units one request can return.
        page_unit: what ``page_limit`` counts; for ``base_minutes`` the
            planner counts extended-hours minutes for intraday timeframes and
            sessions for d1/w1.
        extended_hours: whether intraday answers include pre/post-market bars.
        history_days: how far back each timeframe reaches, in calendar days
            (absent: unlimited).
        max_span_days: the widest [start, end) one request may ask for, per
            timeframe, in calendar days (Yahoo: 7 for m1).
        max_symbols: symbols per request (1 unless multi-symbol).
        rate_limit: the default limit, overridable in configuration.
        hour_alignment: where h1/h4 bars start.
        realtime: whether it serves today's forming session.
        basis: the price adjustment of the bars it returns (Polygon
            ``adjusted=false``, Tradier, flat files, synthetic: ``raw``; Yahoo's
            chart prices: ``split``; Alpaca: its ``adjustment`` setting). The
            router stamps it on every batch, so each stored bar records it.
        realtime: whether it serves the session that is not final yet: bars
            that are complete but may still change (e.g. IEX volume, the
            16:00-20:00 window), stored provisionally in the ``intraday``
            layer. Never a forming bar.
        history_start: the earliest bar it has, Unix seconds UTC (Alpaca:
            2016-01-01); None when unknown or unlimited. Ranges before it are
            served by another provider or reported unfillable.
        published_at_local_s: for providers that publish a session's data
            later than its extended close (flat files: the next morning),
            seconds after local midnight of the session *date* at which the
            session is published (07:00 the next calendar day = 111600).
            None: final at the session's extended close, as HTTP providers
            are. See :mod:`barfill.domain.finality`.
    """

    name: str
    timeframes: frozenset[Timeframe]
    page_limit: int
    page_unit: PageUnit = PageUnit.bars
    extended_hours: bool = False
    history_days: dict[Timeframe, int] = field(default_factory=dict)
    max_span_days: dict[Timeframe, int] = field(default_factory=dict)
    max_symbols: int = 1
    rate_limit: RateLimit = RateLimit(requests=60, period_s=60.0)
    hour_alignment: HourAlignment = HourAlignment.clock
    realtime: bool = False
    basis: Basis = Basis.raw
    history_start: int | None = None
    published_at_local_s: int | None = None

    def supports(self, timeframe: Timeframe) -> bool:
        return timeframe in self.timeframes

    def reach_start(self, timeframe: Timeframe, now: float) -> int | None:
        """The earliest ``start`` (Unix seconds UTC) this provider can serve for ``timeframe`` at ``now``.

        The later of ``history_start`` and ``now - history_days`` (rolling
        depth); None when neither limits it. ``now`` is the database clock.
        """
        limits: list[int] = []
        if self.history_start is not None:
            limits.append(int(self.history_start))
        days = self.history_days.get(timeframe)
        if days is not None:
            limits.append(int(now) - days * _DAY)
        return max(limits) if limits else None
