"""Bar upsert throughput against a raw bulk insert measured in the same run.

Writes 500k m1 bars in batches of 50k (one transaction each) through
:func:`barfill.store.bars.upsert_bars` into a fresh ``bars`` table, then the
same bars again (every row a conflict: the update path). The baseline loads
the same rows into an unindexed table with the same columns, the fastest
plain way each driver offers: ``executemany`` on SQLite, binary ``COPY`` on
PostgreSQL. Both carry ``bars``' 14 columns (with the adjustment ``basis``);
the baseline's timeframe, layer and provider stay text, as ``bars``' were
before they became codes and ids (migrations 0011, 0012), so the baseline is
the same as before them.
Baseline and subject are measured in interleaved rounds; medians (``_measure``).
On PostgreSQL every timed step starts right after a ``CHECKPOINT`` (``_settle``).
"""

from __future__ import annotations

import statistics
import time
from itertools import repeat
from typing import Any

import numpy as np

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.store.bars import upsert_bars
from barfill.store.db import Database
from barfill.store.symbols import ensure_symbols
from bench.common import Result, scratch_database

N_BARS = 500_000
BATCH = 50_000
TARGET_RATE = 200_000.0
TARGET_RATIO = 0.5
ROUNDS = 3  # baseline and subject interleaved; medians (see _measure)

_RAW_COLUMNS = (
    "symbol_id integer, timeframe varchar(4), ts bigint, provider varchar(40), layer varchar(12), "
    "open double precision, high double precision, low double precision, close double precision, "
    "volume double precision, vwap double precision, trade_count bigint, fetched_at double precision, "
    "basis varchar(8)"
)
_PG_TYPES = ["int4", "varchar", "int8", "varchar", "varchar"] + ["float8"] * 6 + ["int8", "float8", "varchar"]


def _bars() -> BarBatch:
    rng = np.random.default_rng(0)
    ts = 1_500_000_000 + 60 * np.arange(N_BARS, dtype=np.int64)
    close = 100 + np.cumsum(rng.standard_normal(N_BARS)) * 0.01
    spread = rng.random(N_BARS)
    return BarBatch(
        "BENCH",
        Timeframe.m1,
        "synthetic",
        ts,
        close - 0.01,
        close + spread,
        close - spread,
        close,
        rng.integers(1, 10_000, N_BARS).astype(np.float64),
        close + 0.001,
        rng.integers(1, 500, N_BARS),
    )


def _rows(sid: int, b: BarBatch) -> zip[tuple[object, ...]]:
    return zip(
        repeat(sid),
        repeat(b.timeframe.value),
        b.ts.tolist(),
        repeat(b.provider),
        repeat("historical"),
        b.open.tolist(),
        b.high.tolist(),
        b.low.tolist(),
        b.close.tolist(),
        b.volume.tolist(),
        b.vwap.tolist(),
        b.trade_count.tolist(),
        repeat(1.0),
        repeat(b.basis.value),
        strict=False,
    )


def raw_insert_rate(db: Database, chunks: list[tuple[int, BarBatch]], *, keyed: bool = False) -> float:
    """Bars/s of a plain bulk insert of ``chunks`` (symbol id, bars), one transaction per chunk.

    Into a fresh table with ``bars``' 14 columns: unindexed, or with ``bars``'
    primary key (``keyed``). The fastest plain way each driver offers:
    ``executemany`` on SQLite, binary ``COPY`` on PostgreSQL. The table is
    dropped afterwards.
    """
    key = ", PRIMARY KEY (symbol_id, timeframe, ts, provider, layer)" if keyed else ""
    with db.write() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS raw_bars")
        conn.exec_driver_sql(f"CREATE TABLE raw_bars ({_RAW_COLUMNS}{key})")
    start = time.perf_counter()
    for sid, batch in chunks:
        with db.write() as conn:
            dbapi: Any = conn.connection.driver_connection
            if db.is_sqlite:
                dbapi.cursor().executemany(
                    f"INSERT INTO raw_bars VALUES ({', '.join('?' * 14)})", _rows(sid, batch)
                )
            else:
                with dbapi.cursor() as cur, cur.copy("COPY raw_bars FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_PG_TYPES)
                    for row in _rows(sid, batch):
                        copy.write_row(row)
    rate = sum(len(b) for _, b in chunks) / (time.perf_counter() - start)
    with db.write() as conn:
        conn.exec_driver_sql("DROP TABLE raw_bars")
    return rate


def _raw_rate(db: Database, sid: int, full: BarBatch, *, keyed: bool = False) -> float:
    return raw_insert_rate(
        db, [(sid, full.take(slice(i, i + BATCH))) for i in range(0, N_BARS, BATCH)], keyed=keyed
    )


def _upsert_rate(db: Database, sid: int, full: BarBatch, fetched_at: float) -> float:
    start = time.perf_counter()
    for i in range(0, N_BARS, BATCH):
        with db.write() as conn:
            upsert_bars(
                conn, sid, full.take(slice(i, i + BATCH)), layer=Layer.historical, fetched_at=fetched_at
            )
    return N_BARS / (time.perf_counter() - start)


def _clear_bars(db: Database) -> None:
    """Empty ``bars`` so the next fresh upsert meets an empty table again (TRUNCATE: a new file)."""
    with db.write() as conn:
        conn.exec_driver_sql("DELETE FROM bars" if db.is_sqlite else "TRUNCATE bars")


def _settle(db: Database) -> None:
    """PostgreSQL: write out dirty pages now, so no checkpoint lands inside a timed step.

    Each step writes ~100 MB of heap, index and WAL; a checkpoint started by an
    earlier step (or by ``CREATE DATABASE``) then flushes it while the next step
    runs, taking a share of the 2 cores from whichever side happens to be timed
    (one round of the fresh upsert was measured at 0.48 that way, the others at
    0.59-0.62). Both sides start from the same clean state instead.
    """
    if not db.is_sqlite:
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("CHECKPOINT")


def _measure(kind: str, full: BarBatch) -> list[Result]:
    """``ROUNDS`` rounds, each measuring the baselines and the subject back to back.

    The order alternates between rounds (baseline first, then subject first),
    so a load that drifts during a round favours neither side. Each figure is
    the median over rounds; each ratio is the median of the rounds' own
    ratios (every one of a baseline and a subject measured seconds apart),
    with the worst round's ratio kept alongside.
    """
    rounds: list[dict[str, float]] = []
    with scratch_database(kind) as db:
        with db.write() as conn:
            sid = ensure_symbols(conn, ["BENCH"])["BENCH"]
        for i in range(ROUNDS):
            _clear_bars(db)
            r: dict[str, float] = {}
            steps = [
                ("raw", lambda: _raw_rate(db, sid, full)),
                ("raw_keyed", lambda: _raw_rate(db, sid, full, keyed=True)),
                ("fresh", lambda: _upsert_rate(db, sid, full, 1.0)),
            ]
            for name, step in steps if i % 2 == 0 else [steps[2], steps[0], steps[1]]:
                _settle(db)
                r[name] = step()
            _settle(db)
            r["update"] = _upsert_rate(db, sid, full, 2.0)  # needs the fresh rows: always last
            rounds.append(r)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def ratios(key: str, base: str) -> list[float]:
        return [r[key] / r[base] for r in rounds]

    fresh, vs_keyed = ratios("fresh", "raw"), ratios("fresh", "raw_keyed")
    per_round = {
        "rounds": ROUNDS,
        "round_ratios": [round(x, 3) for x in fresh],
        "worst_ratio": round(min(fresh), 3),
    }
    return [
        Result(
            "store",
            f"{kind}: upsert {N_BARS:,} bars into a fresh table",
            median("fresh"),
            "bars/s",
            baseline=median("raw"),
            ratio=statistics.median(fresh),
            target=f">= {TARGET_RATE:,.0f} bars/s and ratio >= {TARGET_RATIO}",
            extra={"batch": BATCH, "baseline": "raw bulk insert, unindexed table", **per_round},
        ),
        Result(
            "store",
            f"{kind}: same upsert vs raw bulk insert into a table with a text primary key",
            median("fresh"),
            "bars/s",
            baseline=median("raw_keyed"),
            ratio=statistics.median(vs_keyed),
            target="reference: what the index itself costs",
        ),
        Result(
            "store",
            f"{kind}: upsert the same bars again (all conflicts)",
            median("update"),
            "bars/s",
            baseline=median("raw"),
            ratio=statistics.median(ratios("update", "raw")),
        ),
    ]


def run() -> list[Result]:
    full = _bars()
    return [r for kind in ("sqlite", "postgresql") for r in _measure(kind, full)]
