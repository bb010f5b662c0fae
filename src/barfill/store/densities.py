"""Base-aggregate densities learned from providers' answers (table ``base_densities``).

A provider whose page limit counts *base* aggregates (Polygon: minutes for
intraday bars) reports how many it read for each answer (``queryCount``). The
planner models every extended-hours minute as one unit; a symbol that trades
only regular hours reads far fewer. The ratio read / modeled is kept per
(symbol, provider, base) so later slices are sized to the symbol's real density
(:func:`barfill.domain.planner.with_density`). The densest answer seen is kept:
over-estimating density costs a request or two, under-estimating it a truncated
page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from barfill.domain.timeframes import Timeframe
from barfill.store.db import db_now
from barfill.store.schema import base_densities


def base_of(timeframe: Timeframe) -> str:
    """The base a provider counts for ``timeframe``: ``minute`` (intraday) or ``day``."""
    return "minute" if timeframe.intraday else "day"


def read_densities(conn: Connection, symbol_ids: Iterable[int], base: str) -> dict[int, dict[str, float]]:
    """``{symbol_id: {provider: ratio}}`` for ``base``; symbols never observed are absent."""
    ids = sorted(set(symbol_ids))
    out: dict[int, dict[str, float]] = defaultdict(dict)
    if not ids:
        return {}
    t = base_densities.c
    rows = conn.execute(
        sa.select(t.symbol_id, t.provider, t.ratio).where(t.symbol_id.in_(ids), t.base == base)
    )
    for symbol_id, provider, ratio in rows:
        out[int(symbol_id)][str(provider)] = float(ratio)
    return dict(out)


def record_densities(conn: Connection, observed: Mapping[tuple[int, str, str], float]) -> None:
    """Merge observations ``{(symbol_id, provider, base): ratio}``: the stored ratio becomes the max."""
    if not observed:
        return
    now = db_now(conn)
    t = base_densities.c
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for (symbol_id, provider, base), ratio in sorted(observed.items()):
        stmt = insert(base_densities).values(
            symbol_id=symbol_id, provider=provider, base=base, ratio=ratio, observations=1, updated_at=now
        )
        excluded = stmt.excluded
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.symbol_id, t.provider, t.base],
                set_={
                    "ratio": sa.case((excluded.ratio > t.ratio, excluded.ratio), else_=t.ratio),
                    "observations": t.observations + 1,
                    "updated_at": excluded.updated_at,
                },
            )
        )


def all_densities(conn: Connection) -> dict[tuple[int, str], dict[str, float]]:
    """Every learned density: ``{(symbol_id, base): {provider: ratio}}`` (one scan, for a tick)."""
    t = base_densities.c
    out: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    for symbol_id, base, provider, ratio in conn.execute(sa.select(t.symbol_id, t.base, t.provider, t.ratio)):
        out[(int(symbol_id), str(base))][str(provider)] = float(ratio)
    return dict(out)
