"""The original macOS client's Codable models (contract §4.3), as data, and a strict decoder.

``decode(value, model)`` does what Swift's plain ``JSONDecoder`` (no key
strategy) does with these models: every required key present and non-null,
every value of the declared type (``Int`` refuses a fraction and a bool,
``Double`` takes any number but a bool), optional keys may be missing or
null. It returns the problems found, so an assertion shows them all.

``SERVER_KEYS_*`` are the exact key sets of what the original server sent
(the chart-data-v2 v6 superset, chart-read's answer): the tests check those
too, key for key, so a renamed key cannot hide behind an optional field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Opt:
    """An optional property (``T?``): the key may be missing or null."""

    inner: Any


@dataclass(frozen=True)
class Arr:
    inner: Any


Int, Double, String, Bool = "Int", "Double", "String", "Bool"
ISO = "ISO8601"  # a String the client parses as a date (with or without fractional seconds)

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def decode(value: Any, model: Any, path: str = "$") -> list[str]:
    """Problems decoding ``value`` as ``model`` (empty when it decodes)."""
    if isinstance(model, Opt):
        return [] if value is None else decode(value, model.inner, path)
    if value is None:
        return [f"{path}: null for non-optional {model if isinstance(model, str) else type(model).__name__}"]
    if isinstance(model, Arr):
        if not isinstance(value, list):
            return [f"{path}: expected an array, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in decode(v, model.inner, f"{path}[{i}]")]
    if isinstance(model, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        problems = []
        for key, inner in model.items():
            if key not in value and not isinstance(inner, Opt):
                problems.append(f"{path}.{key}: missing")
            else:
                problems += decode(value.get(key), inner, f"{path}.{key}")
        return problems
    ok = {
        Int: isinstance(value, int) and not isinstance(value, bool),
        Double: isinstance(value, int | float) and not isinstance(value, bool),
        String: isinstance(value, str),
        Bool: isinstance(value, bool),
        ISO: isinstance(value, str) and _ISO.fullmatch(value) is not None,
    }[model]
    return [] if ok else [f"{path}: expected {model}, got {value!r}"]


# OHLCBar, newest client: close required, open/high/low/volume fall back when missing.
OHLC_BAR = {
    "ts": ISO,
    "open": Opt(Double),
    "high": Opt(Double),
    "low": Opt(Double),
    "close": Double,
    "volume": Opt(Double),
    "upper_band": Opt(Double),
    "lower_band": Opt(Double),
    "confidence_score": Opt(Double),
}
# OHLCBar of the older clients (e89c9a56 and earlier): all six required and non-null.
OHLC_BAR_STRICT = OHLC_BAR | {"open": Double, "high": Double, "low": Double, "volume": Double}

LAYER_DATA = {
    "count": Int,
    "provider": String,
    "data": Arr(OHLC_BAR_STRICT),
    "oldestBar": Opt(ISO),
    "newestBar": Opt(ISO),
}
CHART_METADATA = {"total_bars": Int, "start_date": ISO, "end_date": ISO}
DATA_QUALITY = {
    "dataAgeHours": Opt(Int),
    "isStale": Bool,
    "hasRecentData": Bool,
    "historicalDepthDays": Int,
    "sufficientForML": Bool,
    "barCount": Int,
}
ML_SUMMARY = {"overallLabel": Opt(String), "confidence": Double, "srDensity": Opt(Int)}
INDICATOR_DATA = {
    k: Opt(Double)
    for k in ("supertrend_factor", "supertrend_performance", "rsi", "adx", "macd_histogram", "kdj_j")
} | {
    "supertrend_signal": Opt(Int),
    "trend_label": Opt(String),
    "trend_confidence": Opt(Int),
    "stop_level": Opt(Double),
    "trend_duration_bars": Opt(Int),
}
SUPERTREND_AI = {"factor": Opt(Double), "signals": Opt(Arr({"date": String, "type": String}))}

CHART_DATA_V2_RESPONSE = {
    "symbol": String,
    "symbol_id": Opt(String),
    "timeframe": String,
    "layers": {"historical": LAYER_DATA, "intraday": LAYER_DATA, "forecast": LAYER_DATA},
    "metadata": CHART_METADATA,
    "dataQuality": Opt(DATA_QUALITY),
    "mlSummary": Opt(ML_SUMMARY),
    "indicators": Opt(INDICATOR_DATA),
    "superTrendAI": Opt(SUPERTREND_AI),
}

CHART_READ_REFRESH = {
    "attempted": Bool,
    "timeframe": String,
    "symbol": String,
    "enqueuedTimeframes": Opt(Arr(String)),
    "insertedSlices": Opt(Int),
    "error": Opt(String),
}
CHART_RESPONSE = {
    "symbol": String,
    "assetType": String,
    "timeframe": String,
    "bars": Arr(OHLC_BAR_STRICT),
    "mlSummary": Opt(ML_SUMMARY),
    "indicators": Opt(INDICATOR_DATA),
    "supertrend_ai": Opt(SUPERTREND_AI),
    "dataQuality": Opt(DATA_QUALITY),
    "refresh": Opt(CHART_READ_REFRESH),
}

BACKFILL_PROGRESS = {
    k: Int
    for k in (
        "total_slices",
        "completed_slices",
        "running_slices",
        "queued_slices",
        "failed_slices",
        "progress_percent",
        "bars_written",
    )
}
ENSURE_COVERAGE_RESPONSE = {
    "job_def_id": String,
    "symbol": String,
    "timeframe": String,
    "status": String,
    "coverage_status": {
        "from_ts": Opt(ISO),
        "to_ts": Opt(ISO),
        "last_success_at": Opt(ISO),
        "gaps_found": Int,
    },
    "backfill_progress": Opt(BACKFILL_PROGRESS),
}

# What the original server sent (chart-data-v2 v6, §1.3; chart-read, §1.5; orchestrator, §2).
SERVER_KEYS_V6 = {
    "symbol",
    "symbol_id",
    "asset_type",
    "timeframe",
    "layers",
    "metadata",
    "futures",
    "dataQuality",
    "mlSummary",
    "indicators",
    "superTrendAI",
}
SERVER_KEYS_V6_BAR = {
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "provider",
    "is_intraday",
    "is_forecast",
    "data_status",
    "confidence_score",
    "upper_band",
    "lower_band",
}
SERVER_KEYS_LAYER = {"count", "provider", "data", "oldestBar", "newestBar"}
SERVER_KEYS_V6_METADATA = {
    "total_bars",
    "start_date",
    "end_date",
    "requested_days",
    "forecast_days",
    "forecast_steps",
}
SERVER_KEYS_DATA_QUALITY = set(DATA_QUALITY)
SERVER_KEYS_READ = {
    "symbol",
    "assetType",
    "timeframe",
    "bars",
    "mlSummary",
    "indicators",
    "supertrend_ai",
    "metadata",
    "dataQuality",
    "refresh",
}
SERVER_KEYS_READ_PAGE = SERVER_KEYS_READ - {"metadata"}
SERVER_KEYS_READ_BAR = set(OHLC_BAR)
SERVER_KEYS_READ_METADATA = {"total_bars", "requested_days", "max_bars"}
SERVER_KEYS_REFRESH = {
    "attempted",
    "timeframe",
    "symbol",
    "enqueuedTimeframes",
    "insertedSlices",
    "error",
    "diagnostics",
}
SERVER_KEYS_ENSURE = set(ENSURE_COVERAGE_RESPONSE)
SERVER_KEYS_COVERAGE_STATUS = {"from_ts", "to_ts", "last_success_at", "gaps_found"}
SERVER_KEYS_JOB_RUN = {
    "id",
    "job_def_id",
    "symbol",
    "timeframe",
    "job_type",
    "slice_from",
    "slice_to",
    "status",
    "progress_percent",
    "rows_written",
    "provider",
    "attempt",
    "error_message",
    "error_code",
    "triggered_by",
    "started_at",
    "finished_at",
    "created_at",
    "updated_at",
}
# Not decoded by the client (pg_cron and operators read these): the original's column types.
JOB_RUN = {
    "id": String,
    "job_def_id": String,
    "symbol": String,
    "timeframe": String,
    "job_type": String,
    "slice_from": ISO,
    "slice_to": ISO,
    "status": String,
    "progress_percent": Double,
    "rows_written": Int,
    "provider": Opt(String),
    "attempt": Int,
    "error_message": Opt(String),
    "error_code": Opt(String),
    "triggered_by": String,
    "started_at": Opt(ISO),
    "finished_at": Opt(ISO),
    "created_at": ISO,
    "updated_at": ISO,
}
ORCHESTRATOR_STATUS = {
    "queued": Int,
    "running": Int,
    "queued_jobs": Arr(JOB_RUN),
    "running_jobs": Arr(JOB_RUN),
    "recent_jobs": Arr(JOB_RUN),
}
TICK_RESULTS = {"scanned": Int, "slices_created": Int, "jobs_dispatched": Int, "errors": Arr(String)}
