"""Re-verification bookkeeping: sessions awaiting their check, and the corrections found.

``verifications`` holds one row per (symbol, timeframe, session) whose final
bars were committed before the session was due for re-verification
(:mod:`barfill.domain.verify`); the check sets ``verified_at`` in the same
transaction that writes the corrected bars, so a session is verified at
most once. ``corrections`` keeps every difference found (read back by
:mod:`barfill.store.reports`, which status loads without numpy).
Times are Unix seconds: bar ``ts`` and ``session`` (local midnight) UTC,
``due_at``/``verified_at``/``detected_at`` on the database clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.bars import BarBatch, Layer
from barfill.domain.timeframes import Timeframe
from barfill.store import stamps
from barfill.store.db import db_now
from barfill.store.schema import bars, corrections, verifications
from barfill.store.symbols import insert_on_conflict


@dataclass(frozen=True)
class DueSession:
    symbol_id: int
    timeframe: Timeframe
    session: int  # local midnight, Unix seconds UTC
    provider: str


def record_sessions(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    provider: str,
    due: Iterable[tuple[int, float]],
    *,
    now: float,
) -> int:
    """Schedule sessions ``(midnight, due_at)`` for their check; known sessions are left as they are."""
    rows = [
        {
            "symbol_id": symbol_id,
            "timeframe": timeframe.value,
            "session": int(session),
            "provider": provider,
            "due_at": float(at),
            "created_at": now,
        }
        for session, at in due
    ]
    if not rows:
        return 0
    conn.execute(insert_on_conflict(conn, verifications).on_conflict_do_nothing(), rows)
    return len(rows)


def due_sessions(conn: Connection, now: float) -> list[DueSession]:
    """Sessions due for their check at ``now`` and not yet verified."""
    v = verifications.c
    query = (
        sa.select(v.symbol_id, v.timeframe, v.session, v.provider)
        .where(v.verified_at.is_(None), v.due_at <= now)
        .order_by(v.symbol_id, v.timeframe, v.provider, v.session)
    )
    return [DueSession(int(r[0]), Timeframe(r[1]), int(r[2]), str(r[3])) for r in conn.execute(query)]


def mark_verified(
    conn: Connection,
    symbol_id: int,
    timeframe: Timeframe,
    found: dict[int, int],
    *,
    start: int,
    end: int,
    now: float,
) -> int:
    """Mark the sessions in ``[start, end)`` verified at ``now``; ``found``: corrections by session."""
    v = verifications.c
    where = (v.symbol_id == symbol_id, v.timeframe == timeframe.value, v.verified_at.is_(None))
    done = conn.execute(
        sa.update(verifications)
        .where(*where, v.session >= start, v.session < end)
        .values(verified_at=now, corrections=0)
    ).rowcount
    for session, n in found.items():
        conn.execute(
            sa.update(verifications)
            .where(v.symbol_id == symbol_id, v.timeframe == timeframe.value, v.session == session)
            .values(corrections=n)
        )
    return int(done)


def prune_verified(conn: Connection, *, older_than_s: float) -> int:
    """Forget sessions verified more than ``older_than_s`` ago (database clock); returns how many.

    A verified session is never planned again whether its row exists or not
    (its bars are older than any due time by then): the rows only keep the
    table small. Corrections are kept.
    """
    v = verifications.c
    cutoff = db_now(conn) - float(older_than_s)
    return int(conn.execute(sa.delete(verifications).where(v.verified_at < cutoff)).rowcount)


def stored_bars(
    conn: Connection, symbol_id: int, batch_like: BarBatch, start: int, end: int
) -> tuple[BarBatch, dict[int, str | None]]:
    """The historical bars of ``batch_like``'s (timeframe, provider) in ``[start, end)``, flagged ones too.

    Returns the bars and each one's flag by ts.
    """
    b = bars.c
    rows = conn.execute(
        sa.select(b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count, b.flag)
        .where(
            b.symbol_id == symbol_id,
            b.timeframe == batch_like.timeframe.value,
            b.provider == batch_like.provider,
            b.layer == Layer.historical.value,
            b.ts >= start,
            b.ts < end,
        )
        .order_by(b.ts)
    ).all()
    batch = BarBatch.from_rows(
        batch_like.symbol, batch_like.timeframe, batch_like.provider, [tuple(r[:8]) for r in rows]
    )
    return batch.with_basis(batch_like.basis), {int(r[0]): r[8] for r in rows}


def delete_stored(conn: Connection, symbol_id: int, batch_like: BarBatch, ts: Sequence[int]) -> int:
    """Delete the historical bars of ``batch_like``'s (timeframe, provider) at ``ts``."""
    if not len(ts):
        return 0
    stamps.touch(conn, symbol_id)
    b = bars.c
    return int(
        conn.execute(
            sa.delete(bars).where(
                b.symbol_id == symbol_id,
                b.timeframe == batch_like.timeframe.value,
                b.provider == batch_like.provider,
                b.layer == Layer.historical.value,
                b.ts.in_([int(t) for t in ts]),
            )
        ).rowcount
    )


def write_corrections(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert correction rows (``symbol_id timeframe ts provider kind old new detected_at``)."""
    if not rows:
        return 0
    conn.execute(
        sa.insert(corrections),
        [
            {
                "symbol_id": r["symbol_id"],
                "timeframe": r["timeframe"],
                "ts": int(r["ts"]),
                "provider": r["provider"],
                "kind": r["kind"],
                "old_values": None if r["old"] is None else json.dumps(r["old"]),
                "new_values": None if r["new"] is None else json.dumps(r["new"]),
                "detected_at": float(r["detected_at"]),
            }
            for r in rows
        ],
    )
    return len(rows)
