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

import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from barfill.domain.timeframes import Timeframe
from barfill.errors import ConfigError

log = logging.getLogger("barfill.config")
ENV_PREFIX = "BARFILL_"
# Read from the environment by barfill itself or its test suite, but not settings.
_NOT_SETTINGS = frozenset({"BARFILL_CONFIG", "BARFILL_TEST_POSTGRES_URL"})
_warned: set[str] = set()


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

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

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
    # When a session's flat files are published: "HH:MM" exchange-local time on the next
    # calendar day (Polygon: 07:00 New York). Before then the session is not final for them.
    flatfiles_published_at: str = "07:00"
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
    # A failed slice rests this long before the scheduler tries it again, doubling
    # with each revival up to the max (an explicit ensure or `jobs retry` skips it).
    failed_cooldown_s: float = Field(default=3600.0, gt=0)
    failed_cooldown_max_s: float = Field(default=86_400.0, gt=0)
    intraday_refresh_s: float = Field(default=300.0, gt=0)
    # Corporate actions (splits, dividends) are refetched per symbol this often.
    actions_refresh_s: float = Field(default=86_400.0, ge=60)
    # Succeeded slices older than this are deleted by the tick (coverage is the record).
    archive_after_s: float = Field(default=7 * 86_400.0, ge=0)
    # Each final session is re-fetched once this many sessions after it became final,
    # and the differences written and counted (vendor corrections); 0 turns it off.
    reverify_after_sessions: int = Field(default=3, ge=0, le=250)
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

    @field_validator("flatfiles_published_at")
    @classmethod
    def _check_published_at(cls, v: str) -> str:
        hh, sep, mm = v.partition(":")
        if sep and hh.isdigit() and mm.isdigit() and 0 <= int(hh) < 24 and 0 <= int(mm) < 60:
            return v
        raise ValueError(f"expected HH:MM (next calendar day, exchange-local), got {v!r}")

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

    @model_validator(mode="after")
    def _check_cooldown(self) -> Settings:
        if self.failed_cooldown_max_s < self.failed_cooldown_s:
            raise ValueError(
                "failed_cooldown_max_s: expected at least failed_cooldown_s "
                f"({self.failed_cooldown_s:g}), got {self.failed_cooldown_max_s:g}"
            )
        return self

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


def closest_setting(name: str, *, env: bool) -> str | None:
    """The valid setting name most like ``name`` (difflib), spelled as an env var or a key."""
    fields = list(Settings.model_fields)
    wanted = name.removeprefix(ENV_PREFIX).lower() if env else name.lower()
    # A setting hidden inside the name with a word added (worker_lease_s → lease_s)
    # beats a merely similar spelling (worker_poll_s).
    inside = [f for f in fields if wanted.endswith("_" + f) or wanted.startswith(f + "_")]
    match = [max(inside, key=len)] if inside else difflib.get_close_matches(wanted, fields, n=1, cutoff=0.6)
    if not match:
        return None
    return ENV_PREFIX + match[0].upper() if env else match[0]


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """``BARFILL_*`` variables in ``environ`` that are no setting (a typo, or another version's)."""
    known = {ENV_PREFIX + f.upper() for f in Settings.model_fields} | _NOT_SETTINGS
    return sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def _warn_unknown_env(names: Iterable[str]) -> None:
    """One warning per unknown variable per process, naming the closest valid one.

    A warning, not an error: the variable may be meant for another version of
    barfill sharing the environment. But a typo must not pass silently.
    """
    for name in names:
        if name in _warned:
            continue
        _warned.add(name)
        guess = closest_setting(name, env=True)
        hint = f"; did you mean {guess}?" if guess else "; see the settings table in the README"
        log.warning("%s: unknown setting, ignored%s", name, hint)


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings; an invalid value is one :class:`ConfigError` naming the key.

    An unknown ``BARFILL_*`` environment variable is a warning (once) naming
    the closest valid one; an unknown TOML key is an error naming it (the file
    is barfill's alone).
    """
    _warn_unknown_env(unknown_env_names(os.environ))
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "config"
            if err["type"] == "extra_forbidden":
                guess = closest_setting(key, env=False)
                lines.append(f"{key}: unknown setting" + (f"; did you mean {guess}?" if guess else ""))
                continue
            lines.append(
                f"{key}: {err['msg']} (got {err.get('input')!r})"
                if "api_key" not in key and "secret" not in key and "token" not in key
                else f"{key}: {err['msg']}"
            )
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
    except ValueError as e:  # e.g. TOML syntax errors
        raise ConfigError(f"invalid configuration: {e}") from None
