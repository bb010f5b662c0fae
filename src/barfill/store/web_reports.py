"""Read-only queries behind the web dashboard: throughput, per-provider counters, failures, coverage.

Every age is judged on the **database clock** so several API processes agree.
Bounds are Unix seconds UTC, ``[start, end)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.intervals import Interval, normalize
from barfill.domain.timeframes import Timeframe
from barfill.store.db import db_now
from barfill.store.schema import coverage, job_definitions, job_runs, rate_limits, symbols


@dataclass(frozen=True)
class Series:
    """Succeeded slices and bars per bucket; ``t`` are bucket starts (database clock, Unix seconds)."""

    t: list[int]
    slices: list[int]
    bars: list[int]
    bucket_s: int


def now(conn: Connection) -> float:
    return float(conn.execute(sa.select(db_now(conn))).scalar_one())


def throughput_series(conn: Connection, *, window_s: int = 3600, bucket_s: int = 60) -> Series:
    """Slices and bars completed per ``bucket_s`` over the last ``window_s`` (oldest bucket first)."""
    current = now(conn)
    end = int(current // bucket_s + 1) * bucket_s
    start = end - window_s
    n = window_s // bucket_s
    slices, bars = [0] * n, [0] * n
    rows = conn.execute(
        sa.select(job_runs.c.finished_at, job_runs.c.rows_written).where(
            job_runs.c.status == "succeeded", job_runs.c.finished_at >= float(start)
        )
    )
    for finished, written in rows:
        i = min(int((float(finished) - start) // bucket_s), n - 1)
        slices[i] += 1
        bars[i] += int(written or 0)
    return Series([start + i * bucket_s for i in range(n)], slices, bars, bucket_s)


def provider_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Per provider with a ``rate_limits`` row: its lifetime counters.

    ``requests`` (slots granted, i.e. requests sent), ``throttled`` (429 /
    Retry-After penalties) and ``errors`` (failed provider calls) are shared by
    every worker process through the database and never reset. A provider
    never used has no row and is absent.
    """
    r = rate_limits
    query = sa.select(r.c.provider, r.c.requests, r.c.throttled, r.c.errors)
    return {
        str(p): {"requests": int(n), "throttled": int(t), "errors": int(e)}
        for p, n, t, e in conn.execute(query)
    }


def failure_groups(conn: Connection, *, limit: int = 20, ids_per_group: int = 500) -> list[dict[str, Any]]:
    """Failed slices grouped by (error code, message), most frequent first, with their ids (for retry)."""
    rows = conn.execute(
        sa.select(
            job_runs.c.id,
            job_runs.c.error_code,
            job_runs.c.error_message,
            job_runs.c.provider,
            symbols.c.ticker,
        )
        .join(symbols, symbols.c.id == job_runs.c.symbol_id)
        .where(job_runs.c.status == "failed")
        .order_by(job_runs.c.id)
    )
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for sid, code, message, provider, ticker in rows:
        key = (str(code or ""), str(message or ""))
        g = groups.setdefault(
            key,
            {"code": key[0], "message": key[1], "count": 0, "ids": [], "symbols": set(), "providers": set()},
        )
        g["count"] += 1
        if len(g["ids"]) < ids_per_group:
            g["ids"].append(int(sid))
        g["symbols"].add(str(ticker))
        g["providers"].add(str(provider))
    out = sorted(groups.values(), key=lambda g: (-g["count"], g["code"]))[:limit]
    for g in out:
        g["symbols"] = sorted(g["symbols"])
        g["providers"] = sorted(g["providers"])
    return out


@dataclass(frozen=True)
class CoverageRows:
    """Per symbol id: final and unexpired provisional coverage, and ranges of failed slices."""

    final: dict[int, list[Interval]]
    provisional: dict[int, list[Interval]]
    failed: dict[int, list[Interval]]


def coverage_rows(conn: Connection, symbol_ids: Iterable[int], timeframe: Timeframe) -> CoverageRows:
    """Coverage split by kind, plus failed slice ranges, for the given symbols and one timeframe."""
    ids = sorted(set(symbol_ids))
    final: dict[int, list[tuple[int, int]]] = defaultdict(list)
    prov: dict[int, list[tuple[int, int]]] = defaultdict(list)
    failed: dict[int, list[tuple[int, int]]] = defaultdict(list)
    if ids:
        cov = conn.execute(
            sa.select(coverage.c.symbol_id, coverage.c.start, coverage.c.end, coverage.c.expires_at).where(
                coverage.c.symbol_id.in_(ids),
                coverage.c.timeframe == timeframe.value,
                sa.or_(coverage.c.expires_at.is_(None), coverage.c.expires_at > db_now(conn)),
            )
        )
        for sid, start, end, expires in cov:
            (final if expires is None else prov)[int(sid)].append((int(start), int(end)))
        bad = conn.execute(
            sa.select(job_runs.c.symbol_id, job_runs.c.start, job_runs.c.end).where(
                job_runs.c.symbol_id.in_(ids),
                job_runs.c.timeframe == timeframe.value,
                job_runs.c.status == "failed",
            )
        )
        for sid, start, end in bad:
            failed[int(sid)].append((int(start), int(end)))
    return CoverageRows(
        {k: normalize(v) for k, v in final.items()},
        {k: normalize(v) for k, v in prov.items()},
        {k: normalize(v) for k, v in failed.items()},
    )


def definitions_for(conn: Connection, timeframe: Timeframe | None = None) -> list[dict[str, Any]]:
    """Definitions with their ticker, ordered by ticker then timeframe (optionally one timeframe)."""
    d = job_definitions
    query = (
        sa.select(d, symbols.c.ticker.label("symbol"), symbols.c.calendar.label("calendar"))
        .join(symbols, symbols.c.id == d.c.symbol_id)
        .order_by(symbols.c.ticker, d.c.timeframe)
    )
    if timeframe is not None:
        query = query.where(d.c.timeframe == timeframe.value)
    return [dict(r._mapping) for r in conn.execute(query)]
