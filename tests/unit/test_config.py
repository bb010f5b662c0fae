"""Configuration: environment over TOML over defaults; bad values name the key."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from barfill import config
from barfill.config import Settings, load_settings
from barfill.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("BARFILL_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url.endswith("xdg/barfill/barfill.db")
    assert s.polygon_api_key is None and s.lease_s == 60.0


def test_toml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "barfill.toml").write_text('lease_s = 12.5\npolygon_api_key = "abc"\nalpaca_feed = "sip"\n')
    s = load_settings()
    assert s.lease_s == 12.5 and s.alpaca_feed == "sip"
    assert s.polygon_api_key is not None and s.polygon_api_key.get_secret_value() == "abc"
    assert "abc" not in repr(s)
    monkeypatch.setenv("BARFILL_LEASE_S", "7")
    assert load_settings().lease_s == 7.0


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("BARFILL_LEASE_S", "-1", "lease_s"),
        ("BARFILL_ALPACA_FEED", "nasdaq", "alpaca_feed"),
        ("BARFILL_POLYGON_RATE_LIMIT", "lots", "polygon_rate_limit"),
        ("BARFILL_DERIVATIONS", '["h1->m15"]', "derivations"),
        ("BARFILL_ACTIONS_REFRESH_S", "10", "actions_refresh_s"),
        ("BARFILL_ACTIONS_REFRESH_S", "daily", "actions_refresh_s"),
        ("BARFILL_REVERIFY_AFTER_SESSIONS", "-1", "reverify_after_sessions"),
        ("BARFILL_REVERIFY_AFTER_SESSIONS", "three", "reverify_after_sessions"),
    ],
)
def test_bad_values_name_the_key(monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_an_unknown_variable_is_a_warning_naming_the_closest_key_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(config, "_warned", set())
    monkeypatch.setenv("BARFILL_WORKER_LEASE_S", "5")  # what the README's old table suggested
    monkeypatch.setenv("BARFILL_NOPE", "1")
    monkeypatch.setenv("BARFILL_CONFIG_DIR", "x")
    with caplog.at_level(logging.WARNING, logger="barfill.config"):
        first = load_settings()
        load_settings()
    assert first.lease_s == 60.0  # ignored, not guessed
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines == [
        "BARFILL_CONFIG_DIR: unknown setting, ignored; see the settings table in the README",
        "BARFILL_NOPE: unknown setting, ignored; see the settings table in the README",
        "BARFILL_WORKER_LEASE_S: unknown setting, ignored; did you mean BARFILL_LEASE_S?",
    ]


def test_unknown_toml_key_and_bad_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "barfill.toml").write_text('leese_s = 3\npolygon_apikey = "s3cr3t"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "leese_s: unknown setting; did you mean lease_s?" in str(info.value)
    assert "did you mean polygon_api_key?" in str(info.value) and "s3cr3t" not in str(info.value)
    (tmp_path / "barfill.toml").write_text("lease_s = = 3\n")
    with pytest.raises(ConfigError):
        load_settings()
    monkeypatch.setenv("BARFILL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="BARFILL_CONFIG"):
        load_settings()


def test_secrets_never_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BARFILL_POLYGON_API_KEY", "s3cr3t")
    monkeypatch.setenv("BARFILL_LEASE_S", "x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "s3cr3t" not in str(info.value)


def test_the_readme_settings_table_names_real_settings() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `BARFILL_")]
    named = {name for row in rows for name in re.findall(r"`(BARFILL_[A-Z0-9_]+)`", row.split("|")[1])}
    fields = {"BARFILL_" + f.upper() for f in Settings.model_fields}
    assert named - fields == set()  # every name in the table is a real setting...
    assert fields - named == set()  # ...and every setting is in the table
    mentioned = set(re.findall(r"BARFILL_[A-Z0-9_]*[A-Z0-9]", readme))
    others = {
        "BARFILL_CONFIG",
        "BARFILL_TEST_POSTGRES_URL",
        "BARFILL_WORKER_LEASE_S",
    }  # the last: a typo example
    assert mentioned - fields - others == set()


def test_flat_files_publication_time_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from barfill.bootstrap import build_providers, published_at_local_s
    from barfill.domain.calendar import get_calendar
    from barfill.providers.http import LoopClient

    assert load_settings().flatfiles_published_at == "07:00"
    monkeypatch.setenv("BARFILL_FLATFILES_PUBLISHED_AT", "08:30")
    s = load_settings(flatfiles_dir=tmp_path)
    assert published_at_local_s(s.flatfiles_published_at) == 86_400 + 8 * 3600 + 30 * 60
    built, _ = build_providers(s, LoopClient(), get_calendar(), clock=lambda: 0.0)
    assert built["flatfiles"].capabilities.published_at_local_s == 86_400 + 8 * 3600 + 30 * 60
    monkeypatch.setenv("BARFILL_FLATFILES_PUBLISHED_AT", "25:00")
    with pytest.raises(ConfigError, match="flatfiles_published_at"):
        load_settings()


def test_failed_cooldown_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert (s.failed_cooldown_s, s.failed_cooldown_max_s) == (3600.0, 86_400.0)
    monkeypatch.setenv("BARFILL_FAILED_COOLDOWN_S", "600")
    monkeypatch.setenv("BARFILL_FAILED_COOLDOWN_MAX_S", "7200")
    assert (load_settings().failed_cooldown_s, load_settings().failed_cooldown_max_s) == (600.0, 7200.0)
    monkeypatch.setenv("BARFILL_FAILED_COOLDOWN_MAX_S", "60")
    with pytest.raises(ConfigError, match="failed_cooldown_max_s"):
        load_settings()
    monkeypatch.setenv("BARFILL_FAILED_COOLDOWN_S", "0")
    with pytest.raises(ConfigError, match="failed_cooldown_s"):
        load_settings()
