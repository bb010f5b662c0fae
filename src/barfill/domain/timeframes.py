"""Bar timeframes: the canonical tokens, their aliases, durations and alignment.

Times are Unix seconds, UTC. Intraday timeframes (m1..h4) are aligned on the
clock of the exchange's time zone (Polygon and Alpaca stamp an hour bar at
09:00 New York time, not at the 09:30 open); d1 bars are stamped at the
session's date, w1 at the Monday of the week. Those calendar-dependent rules
live in :mod:`barfill.domain.calendar`; this module knows only durations.
"""

from __future__ import annotations

from enum import StrEnum

from barfill.errors import InvalidInput


class Timeframe(StrEnum):
    """A bar length. The value is the canonical token stored in the database."""

    m1 = "m1"
    m5 = "m5"
    m15 = "m15"
    m30 = "m30"
    h1 = "h1"
    h4 = "h4"
    d1 = "d1"
    w1 = "w1"

    @property
    def seconds(self) -> int:
        """Nominal length in seconds (a d1 bar is 86,400 s, though a session is shorter)."""
        return _SECONDS[self]

    @property
    def minutes(self) -> int:
        return _SECONDS[self] // 60

    @property
    def intraday(self) -> bool:
        """True for m1..h4: bars inside a session, aligned on the exchange's clock."""
        return _SECONDS[self] < 86_400

    @classmethod
    def parse(cls, value: str | Timeframe) -> Timeframe:
        """Accept a canonical token (``h1``) or an alias (``1h``), case-insensitive.

        Raises:
            InvalidInput: naming the valid tokens.
        """
        if isinstance(value, Timeframe):
            return value
        token = str(value).strip().lower()
        found = _ALIASES.get(token)
        if found is None:
            valid = " ".join(t.value for t in cls)
            aliases = " ".join(_ALIAS_TOKENS)
            raise InvalidInput("timeframe", f"one of {valid} (or {aliases})", value)
        return found


_SECONDS: dict[Timeframe, int] = {
    Timeframe.m1: 60,
    Timeframe.m5: 300,
    Timeframe.m15: 900,
    Timeframe.m30: 1_800,
    Timeframe.h1: 3_600,
    Timeframe.h4: 14_400,
    Timeframe.d1: 86_400,
    Timeframe.w1: 604_800,
}

_ALIAS_TOKENS = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w")
_ALIASES: dict[str, Timeframe] = {t.value: t for t in Timeframe} | dict(
    zip(_ALIAS_TOKENS, Timeframe, strict=True)
)
