"""Bad-bar flags in the store: set by :mod:`barfill.domain.badbars`' rule as bars are committed.

The flag is recomputed, never carried over: an upsert that rewrites a bar
clears its flag (``store.bars``), and the committing transaction then sets
the flags of the bars it wrote from the bars themselves plus their stored
neighbours (two on each side, so the bar just outside the batch is judged
with both its neighbours too). Writing the same bars again therefore leaves
the same flags. The zero-volume rule takes a session's median over the bars
at hand (the batch and those neighbours): a batch is usually whole sessions.

Cheap on the hot path: two small indexed reads for the neighbours and one
``UPDATE`` per flagged bar (usually none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.badbars import SPIKE, flag_reasons
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import TradingCalendar
from barfill.store import stamps
from barfill.store.schema import bars

_CONTEXT = 2  # stored neighbours read on each side


def regular_sessions(cal: TradingCalendar, ts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each bar's regular-session index, or -1 outside regular hours."""
    i = np.searchsorted(cal.opens, ts, side="right") - 1
    inside = (i >= 0) & (ts < cal.closes[np.maximum(i, 0)])
    return np.where(inside, i, -1).astype(np.int64)


def _neighbours(conn: Connection, symbol_id: int, batch: BarBatch, layer: Layer, before: bool) -> list[Any]:
    b = bars.c
    edge = int(batch.ts[0]) if before else int(batch.ts[-1])
    query = sa.select(b.ts, b.high, b.low, b.close, b.volume, b.flag).where(
        b.symbol_id == symbol_id,
        b.timeframe == batch.timeframe.value,
        b.provider == batch.provider,
        b.layer == layer.value,
        b.ts < edge if before else b.ts > edge,
    )
    order = b.ts.desc() if before else b.ts
    rows = list(conn.execute(query.order_by(order).limit(_CONTEXT)))
    return rows[::-1] if before else rows


def reflag(
    conn: Connection,
    symbol_id: int,
    batch: BarBatch,
    *,
    layer: Layer,
    calendar: TradingCalendar,
    stored: Mapping[int, str | None] | None = None,
) -> int:
    """Set the flags of ``batch``'s stored bars (and their nearest stored neighbours); returns bars flagged.

    Runs inside the committing transaction, after the bars were upserted.

    Args:
        stored: the batch's bars' flags as stored now, by ts; None when the
            upsert just cleared them all (then only flagged bars are written).
    """
    layer = Layer(layer)
    if len(batch) == 0 or layer is Layer.forecast:
        return 0
    left = _neighbours(conn, symbol_id, batch, layer, before=True)
    right = _neighbours(conn, symbol_id, batch, layer, before=False)
    ts = np.concatenate([[r.ts for r in left], batch.ts, [r.ts for r in right]]).astype(np.int64)

    def column(name: str) -> np.ndarray[Any, Any]:
        own = getattr(batch, name)
        return np.concatenate(
            [[getattr(r, name) for r in left], own, [getattr(r, name) for r in right]]
        ).astype(np.float64)

    sessions = regular_sessions(calendar, ts) if batch.timeframe.intraday else None
    reasons = flag_reasons(column("high"), column("low"), column("close"), column("volume"), sessions)
    n_left = len(left)
    own = reasons[n_left : n_left + len(batch)]
    updates: list[dict[str, Any]] = []
    if stored is None:  # the hot path: every flag was just cleared; write the (rare) flagged bars
        picked = np.flatnonzero(own.astype(np.bool_))
        updates += [{"b_ts": int(batch.ts[i]), "b_flag": own[i]} for i in picked.tolist()]
    else:
        for t, reason in zip(batch.ts.tolist(), own.tolist(), strict=True):
            if reason != stored.get(t):
                updates.append({"b_ts": t, "b_flag": reason})
    # The nearest stored neighbour on each side now has both its neighbours: judge its spike anew.
    edges = []
    if left:
        edges.append((left[-1], reasons[n_left - 1]))
    if right:
        edges.append((right[0], reasons[n_left + len(batch)]))
    for row, reason in edges:
        if reason == SPIKE and row.flag is None:
            updates.append({"b_ts": int(row.ts), "b_flag": SPIKE})
        elif reason != SPIKE and row.flag == SPIKE:
            updates.append({"b_ts": int(row.ts), "b_flag": None})
    if updates:
        stamps.touch(conn, symbol_id)
        b = bars.c
        stmt = (
            sa.update(bars)
            .where(
                b.symbol_id == symbol_id,
                b.timeframe == batch.timeframe.value,
                b.ts == sa.bindparam("b_ts"),
                b.provider == batch.provider,
                b.layer == layer.value,
            )
            .values(flag=sa.bindparam("b_flag"))
        )
        conn.execute(stmt, updates)
    return int(np.count_nonzero(own.astype(np.bool_)))
