"""Configuration: environment variables ``BARFILL_*`` over an optional TOML file.

Precedence: explicit arguments > environment > TOML file > defaults. The TOML
file is ``$BARFILL_CONFIG`` if set, else ``./barfill.toml`` if present; its
keys are the field names below (``database_url = "..."``). Only
:mod:`barfill.bootstrap` and the CLI read configuration; everything else is
handed what it needs.

Secrets (API keys) are :class:`pydantic.SecretStr`: they never show in a
``repr``, a log line or an error message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from barfill.domain.timeframes import Timeframe
from barfill.errors import ConfigError


def default_database_url() -> str:
    """``$XDG_DATA_HOME/barfill/barfill.db`` (``~/.local/share/barfill/barfill.db``)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'barfill' / 'barfill.db'}"


def _config_file() -> Path | None:
    explicit = os.environ.get("BARFILL_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"BARFILL_CONFIG: expected a readable TOML file, got {explicit!r}")
        return path
    local = Path("barfill.toml")
    return local if local.is_file() else None


def _rate(value: str | None, field: str) -> str | None:
    """Validate ``"N/SECONDS"`` (e.g. ``"5/60"``: 5 requests a minute)."""
    if value is None:
        return None
    try:
        n, _, per = value.partition("/")
        if int(n) > 0 and float(per) > 0:
            return value
    except ValueError:
        pass
    raise ValueError(f"expected 'REQUESTS/SECONDS' such as '5/60', got {value!r}")


class Settings(BaseSettings):
    """All of barfill's settings, with their defaults."""

    model_config = SettingsConfigDict(env_prefix="BARFILL_", extra="forbid", frozen=True)

    database_url: str = Field(default_factory=default_database_url)
    calendar: str = "XNYS"

    # Providers. Base URLs are configurable so tests and proxies can stand in.
    polygon_api_key: SecretStr | None = None
    polygon_base_url: str = "https://api.polygon.io"
    polygon_adjusted: bool = False  # store raw, adjust on read
    polygon_rate_limit: str | None = None
    alpaca_key_id: SecretStr | None = None
    alpaca_secret_key: SecretStr | None = None
    alpaca_base_url: str = "https://data.alpaca.markets"
    alpaca_feed: str = "iex"
    alpaca_adjustment: str = "raw"
    alpaca_rate_limit: str | None = None
    tradier_token: SecretStr | None = None
    tradier_base_url: str = "https://api.tradier.com"
    tradier_rate_limit: str | None = None
    yahoo_enabled: bool = False  # unofficial API: opt in
    yahoo_base_url: str = "https://query2.finance.yahoo.com"
    yahoo_rate_limit: str | None = None
    flatfiles_dir: Path | None = None
    synthetic_latency_ms: float = Field(default=0.0, ge=0)
    synthetic_failure_rate: float = Field(default=0.0, ge=0, le=1)
    synthetic_rate_limit: str | None = None
    http_timeout_s: float = Field(default=30.0, gt=0)

    # Router: provider names in order of preference.
    historical_providers: list[str] = ["polygon", "alpaca", "yahoo", "flatfiles", "synthetic"]
    realtime_providers: list[str] = ["tradier", "alpaca", "polygon", "synthetic"]

    # Workers and scheduler.
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    lease_s: float = Field(default=60.0, gt=0)
    worker_poll_s: float = Field(default=0.5, gt=0, le=60)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_cap_s: float = Field(default=600.0, gt=0)
    tick_interval_s: float = Field(default=30.0, gt=0)
    intraday_refresh_s: float = Field(default=300.0, gt=0)
    # Succeeded slices older than this are deleted by the tick (coverage is the record).
    archive_after_s: float = Field(default=7 * 86_400.0, ge=0)
    # Derived timeframes: "SOURCE->TARGET", e.g. "m15->h1".
    derivations: list[str] = ["m15->h1", "m15->h4", "m1->m5", "d1->w1"]

    # HTTP API (``barfill serve``).
    api_cors_origins: list[str] = []  # e.g. ["https://charts.example.com"]; "*" for any
    api_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    api_rate_limit: str = "6000/60"  # per API key, per server process
    api_max_range_bars: int = Field(default=3_000_000, ge=1000)  # widest bar read, in bar lengths

    @field_validator(
        "polygon_rate_limit",
        "alpaca_rate_limit",
        "tradier_rate_limit",
        "yahoo_rate_limit",
        "synthetic_rate_limit",
        "api_rate_limit",
    )
    @classmethod
    def _check_rate(cls, v: str | None) -> str | None:
        return _rate(v, "rate_limit")

    @field_validator("alpaca_feed")
    @classmethod
    def _check_feed(cls, v: str) -> str:
        if v not in ("iex", "sip"):
            raise ValueError(f"expected 'iex' or 'sip', got {v!r}")
        return v

    @field_validator("alpaca_adjustment")
    @classmethod
    def _check_adjustment(cls, v: str) -> str:
        if v not in ("raw", "split", "dividend", "all"):
            raise ValueError(f"expected raw, split, dividend or all, got {v!r}")
        return v

    @field_validator("derivations")
    @classmethod
    def _check_derivations(cls, v: list[str]) -> list[str]:
        for item in v:
            source, sep, target = item.partition("->")
            src, dst = Timeframe.parse(source), Timeframe.parse(target)
            if not sep or dst.seconds <= src.seconds:
                raise ValueError(f"expected 'SOURCE->TARGET' with a coarser target, got {item!r}")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings; an invalid value is one :class:`ConfigError` naming the key."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "config"
            lines.append(
                f"{key}: {err['msg']} (got {err.get('input')!r})"
                if "api_key" not in key and "secret" not in key and "token" not in key
                else f"{key}: {err['msg']}"
            )
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
    except ValueError as e:  # e.g. TOML syntax errors
        raise ConfigError(f"invalid configuration: {e}") from None
