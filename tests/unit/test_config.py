"""Configuration: environment over TOML over defaults; bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from barfill.config import load_settings
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
        ("BARFILL_NOPE", "1", None),
    ],
)
def test_bad_values_name_the_key(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str | None
) -> None:
    monkeypatch.setenv(env, value)
    if needle is None:  # unknown environment variables are ignored (they may belong to a newer version)
        load_settings()
        return
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_unknown_toml_key_and_bad_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "barfill.toml").write_text("leese_s = 3\n")
    with pytest.raises(ConfigError, match="leese_s"):
        load_settings()
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
