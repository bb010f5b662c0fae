"""Database URLs: the accepted schemes, and errors that never show a password."""

from __future__ import annotations

import pytest

from barfill.errors import InvalidInput
from barfill.store.db import normalize_url


def test_postgres_and_sqlite_urls_are_normalized() -> None:
    assert normalize_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_wrong_scheme_url_error_hides_the_password() -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_url("mysql+pymysql://trader:hunter2@db.example/bars")
    assert info.value.field == "database_url" and "hunter2" not in str(info.value)
    assert "trader:***@db.example" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        normalize_url("not a url with hunter2")
    assert "hunter2" not in str(info.value) and info.value.__cause__ is None
