"""Shared pieces of the end-to-end tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from barfill.bootstrap import App, build
from barfill.config import load_settings
from barfill.ports import Provider
from barfill.store.db import Database

BIN = Path(sys.executable).parent


def ts(text: str) -> int:
    """``YYYY-MM-DD[THH:MM]`` in UTC → Unix seconds."""
    fmt = "%Y-%m-%dT%H:%M" if "T" in text else "%Y-%m-%d"
    return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp())


def make_app(db: Database, providers: Mapping[str, Provider], **overrides: object) -> App:
    settings = load_settings(database_url=db.url, **overrides)
    return build(settings, providers=providers)


def clean_env(db_url: str, **extra: str) -> dict[str, str]:
    """A subprocess environment with no provider keys: the synthetic provider serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARFILL_")}
    env["BARFILL_DATABASE_URL"] = db_url
    env.update(extra)
    return env


def queue_counts(db: Database) -> dict[str, int]:
    """Slices by status, read through a throwaway app (the queue is the system under test)."""
    from barfill.domain.calendar import get_calendar
    from barfill.providers.synthetic import SyntheticProvider

    app = make_app(db, {"synthetic": SyntheticProvider(calendar=get_calendar())})
    try:
        return app.queue.counts()
    finally:
        app.close()
