"""The server's read memory: kept while the data version stands still, bounded, filled once."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from barfill.server import read_cache
from barfill.server.read_cache import DataVersion, ReadCache
from barfill.store.db import Database


def _db(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "v.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t (x INTEGER)")
    return Database(f"sqlite:///{path}"), path


def test_sqlite_version_moves_on_any_commit_elsewhere(tmp_path: Path) -> None:
    db, path = _db(tmp_path)
    version = DataVersion(db)
    try:
        before = version.current()
        assert before is not None and version.current() == before
        with sqlite3.connect(path) as other:  # another connection, as another process would be
            other.execute("INSERT INTO t VALUES (1)")
        moved = version.current()
        assert moved != before and version.current() == moved
        version.bump()
        assert version.current() != moved
    finally:
        version.close()
        db.dispose()


def test_postgres_like_version_is_unknown_until_listening(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    version = DataVersion(db)
    version._probe_path = None  # as on PostgreSQL: only notifications move it
    assert version.current() is None and not version.exact
    version.listening(True)
    seen = version.current()
    assert seen is not None
    version.bump()
    assert version.current() != seen
    version.listening(False)
    assert version.current() is None
    db.dispose()


def test_cache_serves_until_the_version_moves_and_stays_within_its_weight(tmp_path: Path) -> None:
    db, path = _db(tmp_path)
    version = DataVersion(db)
    cache: ReadCache[str] = ReadCache(version, max_age_s=None, weigh=len, max_weight=10)
    try:
        assert cache.compute("a", lambda: "aaaa") == "aaaa"
        assert cache.get("a") == "aaaa"
        cache.compute("b", lambda: "bbbbbb")
        cache.compute("c", lambda: "cc")  # over 10: the oldest ("a") goes
        assert cache.get("a") is None and cache.get("b") == "bbbbbb" and cache.get("c") == "cc"
        cache.compute("huge", lambda: "x" * 11)  # heavier than the whole budget: never kept
        assert cache.get("huge") is None and cache.get("b") == "bbbbbb"
        with sqlite3.connect(path) as other:
            other.execute("INSERT INTO t VALUES (1)")
        assert cache.get("b") is None and cache.get("c") is None
    finally:
        version.close()
        db.dispose()


def test_concurrent_misses_compute_once(tmp_path: Path) -> None:
    db, _ = _db(tmp_path)
    version = DataVersion(db)
    cache: ReadCache[int] = ReadCache(version, max_age_s=None)
    calls: list[int] = []
    gate = threading.Event()

    def make() -> int:
        calls.append(1)
        gate.wait(5)
        return 42

    try:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(cache.compute("k", make))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        gate.set()
        for t in threads:
            t.join(10)
        assert results == [42] * 8 and len(calls) == 1
    finally:
        version.close()
        db.dispose()


def test_a_patched_value_keeps_its_time_of_computation(tmp_path: Path, monkeypatch: Any) -> None:
    """Patching (server.splice) never restarts RENEW_FOR_S: only a full recompute does."""
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    version = DataVersion(db)
    version._probe_path = None
    version.listening(True)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # read_cache reads time.monotonic
    cache: ReadCache[str] = ReadCache(version, max_age_s=None, weigh=len, max_weight=100)
    try:
        was = version.current()
        assert was is not None
        cache.put("k", "old", was, clock[0])
        version.bump()
        now = version.current()
        assert now is not None
        clock[0] += read_cache.RENEW_FOR_S / 2
        assert cache.patched("k", was, "patched", now, clock[0])
        assert not cache.patched("k", was, "again", now, clock[0])  # no longer the value kept under was
        assert cache.get("k") == "patched" and cache.stale("k") == (now, "patched")
        clock[0] += read_cache.RENEW_FOR_S / 2 + 1  # past the bound since the full computation
        assert cache.stale("k") is None
    finally:
        version.close()
        db.dispose()
