"""The original backend's JSON shapes, built from barfill's values (pure: no I/O, ``now`` passed in).

The keys and types here are what the original macOS client decodes (see
``shared/contracts/seed-api.md``, §1.3, §1.5, §2, §4.3): full bar field names,
``ts`` as ISO-8601 UTC with ``Z``, integer counts. Request fields are parsed
here too, once, into typed values; a bad one raises :class:`CompatError` with
status 400 and a message naming the field.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.service.ensure import parse_time
from barfill.store.compat_reads import ChartBars

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
}

# chart-data-v2 v5-v6: min(per-timeframe maximum, PostgREST's 1000, the 950 soft cap).
_MAX_BARS_BY_TIMEFRAME = {"m15": 2000, "h1": 1500, "h4": 950, "d1": 2000, "w1": 2000}
_POSTGREST_CAP = 1000
_SOFT_CAP = 950
FORECAST_LIMIT = 20
D1_INTRADAY_H1_BARS = 24
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 400, 950
DAYS_MAX = 36_500
HOUR_S, DAY_S = 3_600, 86_400

# The client's alias initialiser (Timeframe.swift) on top of barfill's own aliases (1h, 15m...).
_CLIENT_ALIASES = {
    "15min": "m15",
    "1hour": "h1",
    "hour": "h1",
    "day": "d1",
    "daily": "d1",
    "week": "w1",
    "weekly": "w1",
}


class CompatError(Exception):
    """An answer other than 200, rendered as ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


def uuid_of(n: int) -> str:
    """A barfill integer id as a UUID-shaped string whose last group is the id in decimal.

    The original's ids were UUIDs; a client model typed ``UUID`` as well as one
    typed ``String`` decodes this, and a person still reads the id (``...-000000000042``
    is 42).
    """
    return f"00000000-0000-4000-8000-{n:012d}"


def bar_cap(timeframe: Timeframe) -> int:
    """How many bars the chart routes return at most for ``timeframe`` (950 for every one today)."""
    return min(_MAX_BARS_BY_TIMEFRAME.get(timeframe.value, _SOFT_CAP), _POSTGREST_CAP, _SOFT_CAP)


# chart-data-v2 (v5-v6) refreshed a timeframe whose newest bar was older than this.
_STALE_AFTER_S = {
    Timeframe.m1: 5 * 60,
    Timeframe.m5: 10 * 60,
    Timeframe.m15: 25 * 60,
    Timeframe.m30: 50 * 60,
    Timeframe.h1: 2 * 3600,
    Timeframe.h4: 5 * 3600,
    Timeframe.d1: 72 * 3600,
    Timeframe.w1: 10 * 86_400,
}


def is_stale(
    newest: int | None, timeframe: Timeframe, *, now: float, market_open: bool, last_close: int
) -> bool:
    """Whether a chart read should queue a refresh (the original's age limits, made calendar-aware).

    Stale when nothing is stored, or the newest bar (open time ``newest``) is
    older than the timeframe's limit, except while the market is closed and
    the stored bars already reach its last close: nothing newer can exist then.
    """
    if newest is None:
        return True
    if now - newest <= _STALE_AFTER_S[timeframe]:
        return False
    return market_open or newest + timeframe.seconds < last_close


def iso(ts: float | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds), as the original formatted ``ts``."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


# -- request fields ---------------------------------------------------------------------------------


def parse_timeframe(value: object, default: str = "d1") -> Timeframe:
    """A canonical timeframe from either spelling (``m15``/``15m``...); 400 listing the valid ones."""
    if value is None or value == "":
        value = default
    if not isinstance(value, str):
        raise CompatError(400, f"Invalid timeframe: {value!r}; expected a string such as h1 or 1h")
    token = _CLIENT_ALIASES.get(value.strip().lower(), value)
    try:
        return Timeframe.parse(token)
    except InvalidInput as e:
        raise CompatError(400, f"Invalid timeframe: {value}; {e.expected}") from None


def _number(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise CompatError(400, f"{name}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise CompatError(400, f"{name}: expected a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise CompatError(400, f"{name}: expected a number, got {value!r}")
    return float(value)


def int_field(
    data: Mapping[str, Any], name: str, default: int, *, lo: int, hi: int, clamp: bool = False
) -> int:
    """A whole number in ``[lo, hi]``: clamped (as chart-read did) or refused with a 400."""
    value = _number(data, name)
    if value is None:
        return default
    if clamp:
        return int(min(max(value, lo), hi))
    if value != int(value) or not lo <= value <= hi:
        raise CompatError(400, f"{name}: expected a whole number from {lo} to {hi}, got {data[name]!r}")
    return int(value)


def optional_int_field(data: Mapping[str, Any], name: str, *, lo: int, hi: int) -> int | None:
    if _number(data, name) is None:
        return None
    return int_field(data, name, 0, lo=lo, hi=hi)


def bool_field(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise CompatError(400, f"{name}: expected true or false, got {value!r}")


def symbol_field(data: Mapping[str, Any]) -> str | None:
    """The raw ``symbol`` (validated later), or None when missing or empty."""
    value = data.get("symbol")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise CompatError(400, f"symbol: expected a ticker string, got {value!r}")
    return value


def before_field(data: Mapping[str, Any]) -> int | None:
    """chart-read's ``before``: Unix seconds, or an ISO-8601 time with an offset (a date: New York)."""
    value = data.get("before")
    if value is None or value == "":
        return None
    if isinstance(value, str) and not value.strip().lstrip("-").replace(".", "", 1).isdigit():
        try:
            return parse_time(value, "before", tz="America/New_York")
        except InvalidInput as e:
            raise CompatError(400, f"before: expected Unix seconds or {e.expected}, got {value!r}") from None
    number = _number(data, "before")
    assert number is not None
    if not 0 <= number < 2**40:
        raise CompatError(400, f"before: expected Unix seconds, got {value!r}")
    return int(number)


# -- bars and layers --------------------------------------------------------------------------------


def bar(
    chart: ChartBars,
    i: int,
    *,
    final: bool,
    is_intraday: bool = False,
    is_forecast: bool = False,
) -> dict[str, Any]:
    """One ``OHLCBar`` with every field of the v6 bar (bands and confidence: none stored)."""
    return {
        "ts": iso(chart.ts[i]),
        "open": chart.open[i],
        "high": chart.high[i],
        "low": chart.low[i],
        "close": chart.close[i],
        "volume": chart.volume[i],
        "provider": chart.provider[i],
        "is_intraday": is_intraday,
        "is_forecast": is_forecast,
        "data_status": "forecast" if is_forecast else "verified" if final else "provisional",
        "confidence_score": None,
        "upper_band": None,
        "lower_band": None,
    }


def layer(data: list[dict[str, Any]], *, provider: str | None = None) -> dict[str, Any]:
    """``LayerData``: provider of the newest bar (or ``none``), the bars, their ``ts`` bounds."""
    return {
        "count": len(data),
        "provider": provider or (str(data[-1]["provider"]) if data else "none"),
        "data": data,
        "oldestBar": data[0]["ts"] if data else None,
        "newestBar": data[-1]["ts"] if data else None,
    }


def data_quality(ts: Sequence[int], *, now: float) -> dict[str, Any]:
    """``DataQuality`` from the oldest and newest bar returned (v3-v6 rules)."""
    if not ts:
        return {
            "dataAgeHours": None,
            "isStale": True,
            "hasRecentData": False,
            "historicalDepthDays": 0,
            "sufficientForML": False,
            "barCount": 0,
        }
    age_s = max(now - ts[-1], 0.0)
    return {
        "dataAgeHours": int(age_s // HOUR_S),
        "isStale": age_s > 24 * HOUR_S,
        "hasRecentData": age_s < 4 * HOUR_S,
        "historicalDepthDays": int((ts[-1] - ts[0]) // DAY_S),
        "sufficientForML": len(ts) >= 250,
        "barCount": len(ts),
    }


def split_layers(
    chart: ChartBars, timeframe: Timeframe, final: set[int], *, now: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(historical, intraday) by the bar's UTC date against today's, as the original split them.

    Every d1 bar is historical (the caller puts the latest h1 bars in intraday);
    a bar dated today (UTC) is intraday, an earlier one historical.
    """
    today = int(now) - int(now) % DAY_S
    historical: list[dict[str, Any]] = []
    intraday: list[dict[str, Any]] = []
    for i, t in enumerate(chart.ts):
        if timeframe is not Timeframe.d1 and t >= today:
            intraday.append(bar(chart, i, final=t in final, is_intraday=timeframe.intraday))
        else:
            historical.append(bar(chart, i, final=t in final))
    return historical, intraday


def read_bar(b: Mapping[str, Any]) -> dict[str, Any]:
    """chart-read's bar: the v6 bar cut to the keys chart-read sent."""
    keys = ("ts", "open", "high", "low", "close", "volume", "upper_band", "lower_band", "confidence_score")
    return {k: b[k] for k in keys}


# -- queue ---------------------------------------------------------------------------------------

_STATUS = {"succeeded": "success"}


def job_run(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``job_runs`` row in the original's columns (§5.2) from a barfill slice."""
    tf = Timeframe(row["timeframe"])
    status = _STATUS.get(str(row["status"]), str(row["status"]))
    return {
        "id": uuid_of(int(row["id"])),
        "job_def_id": uuid_of(int(row["definition_id"])),
        "symbol": row["symbol"],
        "timeframe": tf.value,
        "job_type": "fetch_intraday" if tf.intraday else "fetch_historical",
        "slice_from": iso(row["start"]),
        "slice_to": iso(row["end"]),
        "status": status,
        "progress_percent": 100 if status == "success" else 0,
        "rows_written": int(row["rows_written"]),
        "provider": row["provider"],
        "attempt": int(row["attempts"]),
        "error_message": row["error_message"],
        "error_code": row["error_code"],
        "triggered_by": "system",
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def backfill_progress(
    *, total: int, succeeded: int, running: int, queued: int, failed: int, rows_written: int
) -> dict[str, int] | None:
    """``BackfillProgress`` over every slice of the definition; None (key omitted) when it has none."""
    if total == 0:
        return None
    return {
        "total_slices": total,
        "completed_slices": succeeded,
        "running_slices": running,
        "queued_slices": queued,
        "failed_slices": failed,
        "progress_percent": math.floor(100 * succeeded / total + 0.5),
        "bars_written": rows_written,
    }
