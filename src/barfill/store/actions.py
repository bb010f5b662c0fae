"""Corporate actions in the database: upserts, reads, the reference closes of dividends, ETags.

One row per (symbol, kind, ex date, provider). Refreshing is idempotent: a
row seen again only has its ``fetched_at`` moved; ``changed_at`` moves only
when the action is new or its value changed, so it (with the row count) is
what bar ETags include (:func:`actions_fingerprint`): a new split or dividend
changes every ETag of the symbol, a refresh that finds nothing new changes
none. Times are database-clock Unix seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.actions import ActionKind, CorporateAction, ex_starts
from barfill.domain.adjust import Adjust, adjust_columns, needs_reference
from barfill.domain.bars import Basis
from barfill.domain.calendar import TradingCalendar
from barfill.domain.reference import sessions_before
from barfill.domain.timeframes import Timeframe
from barfill.store import stamps
from barfill.store.db import db_now
from barfill.store.schema import action_refreshes, bars, corporate_actions, symbols
from barfill.store.symbols import insert_on_conflict

_INTRADAY = [tf.value for tf in Timeframe if tf.intraday]


def upsert_actions(conn: Connection, symbol_id: int, actions: Sequence[CorporateAction], tz: str) -> int:
    """Store ``actions`` (all of one symbol) inside the caller's transaction; returns rows new or changed.

    Args:
        tz: the symbol's exchange time zone (``effective_at`` is 00:00 there on the ex date).
    """
    if not actions:
        return 0
    now = db_now(conn)
    c = corporate_actions.c
    starts = ex_starts([a.ex_date for a in actions], tz).tolist()
    changed = 0
    for action, start in zip(actions, starts, strict=True):
        values = {
            "symbol_id": symbol_id,
            "kind": action.kind.value,
            "ex_date": action.ex_date.isoformat(),
            "effective_at": int(start),
            "ratio": action.ratio,
            "cash": action.cash,
            "provider": action.provider,
        }
        key = (
            (c.symbol_id == symbol_id)
            & (c.kind == action.kind.value)
            & (c.ex_date == action.ex_date.isoformat())
            & (c.provider == action.provider)
        )
        found = conn.execute(sa.select(c.ratio, c.cash).where(key)).first()
        if found is not None and (found.ratio, found.cash) == (action.ratio, action.cash):
            conn.execute(sa.update(corporate_actions).where(key).values(fetched_at=now))
            continue
        stmt = insert_on_conflict(conn, corporate_actions).values(**values, fetched_at=now, changed_at=now)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["symbol_id", "kind", "ex_date", "provider"],
                set_={"ratio": action.ratio, "cash": action.cash, "fetched_at": now, "changed_at": now},
            )
        )
        changed += 1
    if changed:
        stamps.touch(conn, symbol_id)
    return changed


def replace_actions(
    conn: Connection, symbol_id: int, provider: str, actions: Sequence[CorporateAction], tz: str
) -> int:
    """``provider``'s whole current list for the symbol: upserted, and its rows no longer listed deleted.

    A provider that withdraws or re-dates an action (a correction) must not leave the old
    one adjusting reads. Returns rows new, changed or deleted.
    """
    changed = upsert_actions(conn, symbol_id, actions, tz)
    c = corporate_actions.c
    kept = {(a.kind.value, a.ex_date.isoformat()) for a in actions}
    stored = conn.execute(
        sa.select(c.id, c.kind, c.ex_date).where(c.symbol_id == symbol_id, c.provider == provider)
    ).all()
    gone = [int(r.id) for r in stored if (str(r.kind), str(r.ex_date)) not in kept]
    if gone:
        stamps.touch(conn, symbol_id)
        conn.execute(sa.delete(corporate_actions).where(c.id.in_(gone)))
    return changed + len(gone)


def list_actions(conn: Connection, symbol_id: int, *, in_effect: bool = False) -> list[CorporateAction]:
    """Every stored report of the symbol's actions (each provider's), by ex date then kind.

    ``in_effect``: only those whose ex date has begun at the database clock's now.
    """
    c = corporate_actions.c
    where = c.symbol_id == symbol_id
    if in_effect:
        where = where & (c.effective_at <= db_now(conn))
    rows = conn.execute(
        sa.select(symbols.c.ticker, c.kind, c.ex_date, c.ratio, c.cash, c.provider)
        .join(symbols, symbols.c.id == c.symbol_id)
        .where(where)
        .order_by(c.ex_date, c.kind, c.provider)
    )
    return [
        CorporateAction(
            str(r.ticker),
            ActionKind(r.kind),
            dt.date.fromisoformat(str(r.ex_date)),
            ratio=None if r.ratio is None else float(r.ratio),
            cash=None if r.cash is None else float(r.cash),
            provider=str(r.provider),
        )
        for r in rows
    ]


def load_actions(
    conn: Connection, symbol_id: int, order: Sequence[str] = (), *, in_effect: bool = False
) -> list[CorporateAction]:
    """The symbol's actions, one report per (kind, ex date): the first provider in ``order`` wins.

    Providers not in ``order`` come after it, alphabetically. ``in_effect``: as :func:`list_actions`.
    """
    rank = {name: i for i, name in enumerate(order)}
    best: dict[tuple[ActionKind, dt.date], CorporateAction] = {}
    for action in list_actions(conn, symbol_id, in_effect=in_effect):
        k = (action.kind, action.ex_date)
        held = best.get(k)
        if held is None or _rank(action.provider, rank) < _rank(held.provider, rank):
            best[k] = action
    return sorted(best.values(), key=lambda a: (a.ex_date, a.kind.value))


def _rank(provider: str, rank: dict[str, int]) -> tuple[int, str]:
    return (rank.get(provider, len(rank)), provider)


def actions_fingerprint(conn: Connection, symbol_id: int) -> tuple[int, float, int]:
    """(rows, last change, rows in effect now) of the symbol's actions: part of every adjusted
    bar ETag of the symbol (an ex date arriving changes the answer with no row changed)."""
    c = corporate_actions.c
    effective = sa.func.coalesce(sa.func.sum(sa.case((c.effective_at <= db_now(conn), 1), else_=0)), 0)
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(c.changed_at), 0.0), effective).where(
            c.symbol_id == symbol_id
        )
    ).one()
    return int(row[0]), float(row[1]), int(row[2])


def next_effective(conn: Connection, symbol_id: int) -> float | None:
    """When the symbol's next announced action takes effect (Unix seconds UTC), or None.

    Until then an adjusted answer stands; from then on it changes though nothing
    is written, so a cache of adjusted answers must not outlive it.
    """
    c = corporate_actions.c
    found = conn.execute(
        sa.select(sa.func.min(c.effective_at)).where(c.symbol_id == symbol_id, c.effective_at > db_now(conn))
    ).scalar_one_or_none()
    return None if found is None else float(found)


def reference_closes(
    conn: Connection, symbol_id: int, ex_dates: Iterable[dt.date], calendar: TradingCalendar
) -> dict[dt.date, float]:
    """The raw close of the session before each ex date, from stored historical raw bars.

    The session's d1 bar if stored; else the close of the latest bar (any
    timeframe) opening inside that session's regular hours. Ex dates with
    neither are absent (their dividend then gives no factor).
    """
    sessions = sessions_before(ex_dates, calendar)
    if not sessions:
        return {}
    base = (bars.c.symbol_id == symbol_id) & (bars.c.basis == "raw") & (bars.c.layer == "historical")
    labels = {int(calendar.midnights[p]): d for d, p in sessions.items()}
    out: dict[dt.date, float] = {}
    if labels:
        rows = conn.execute(
            sa.select(bars.c.ts, bars.c.close)
            .where(base, bars.c.timeframe == "d1", bars.c.ts.in_(list(labels)))
            .order_by(bars.c.fetched_at)
        )
        out.update({labels[int(ts)]: float(close) for ts, close in rows})
    for d, p in sessions.items():
        if d in out:
            continue
        close = conn.execute(
            sa.select(bars.c.close)
            .where(
                base,
                bars.c.timeframe.in_(_INTRADAY),  # an IN list keeps the primary key usable
                bars.c.ts >= int(calendar.opens[p]),
                bars.c.ts < int(calendar.closes[p]),
            )
            .order_by(bars.c.ts.desc())
            .limit(1)
        ).scalar_one_or_none()
        if close is not None:
            out[d] = float(close)
    return out


def refreshed_at(conn: Connection, symbol_id: int, provider: str) -> float | None:
    """When the (symbol, provider) actions were last refreshed, or None."""
    r = action_refreshes.c
    found = conn.execute(
        sa.select(r.refreshed_at).where(r.symbol_id == symbol_id, r.provider == provider)
    ).scalar_one_or_none()
    return None if found is None else float(found)


def due_for_refresh(conn: Connection, symbol_ids: Sequence[int], provider: str, every_s: float) -> list[int]:
    """Of ``symbol_ids``, those whose ``provider`` actions were never or not in ``every_s`` refreshed.

    The never refreshed come first (a newly defined symbol's adjusted reads are wrong until
    its first refresh), then the longest unrefreshed; ties in the given order.
    """
    if not symbol_ids:
        return []
    r = action_refreshes.c
    last = {
        int(s): float(at)
        for s, at in conn.execute(
            sa.select(r.symbol_id, r.refreshed_at).where(
                r.provider == provider, r.symbol_id.in_(list(symbol_ids))
            )
        )
    }
    cutoff = float(conn.execute(sa.select(db_now(conn))).scalar_one()) - every_s
    due = [s for s in symbol_ids if s not in last or last[s] <= cutoff]
    return sorted(due, key=lambda s: last.get(s, float("-inf")))


def never_refreshed(conn: Connection, symbol_ids: Sequence[int], providers: Sequence[str]) -> list[int]:
    """Of ``symbol_ids``, those some of ``providers`` never refreshed the actions of.

    Their adjusted reads may miss splits and dividends (see :func:`unapplied_dividends`).
    """
    if not symbol_ids or not providers:
        return []
    r = action_refreshes.c
    done: dict[int, int] = {}
    for (s,) in conn.execute(
        sa.select(r.symbol_id).where(r.symbol_id.in_(list(symbol_ids)), r.provider.in_(list(providers)))
    ):
        done[int(s)] = done.get(int(s), 0) + 1
    return [s for s in symbol_ids if done.get(s, 0) < len(set(providers))]


def mark_refreshed(conn: Connection, symbol_id: int, provider: str) -> None:
    """Record a refresh of (symbol, provider) at the database clock's now."""
    now = db_now(conn)
    stmt = insert_on_conflict(conn, action_refreshes).values(
        symbol_id=symbol_id, provider=provider, refreshed_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["symbol_id", "provider"], set_={"refreshed_at": now})
    )


def unapplied_dividends(
    conn: Connection, symbol_id: int, calendar: TradingCalendar, first_ts: int, order: Sequence[str] = ()
) -> list[dt.date]:
    """Ex dates of the dividends in effect that an ``all`` read from ``first_ts`` cannot apply.

    Their reference close (the raw close of the session before the ex date) is not
    stored: :mod:`barfill.service.reference` queues it; until it lands, reads say so.
    """
    actions = load_actions(conn, symbol_id, order, in_effect=True)
    wanted = needs_reference(Adjust.all_adjusted, actions, first_ts, calendar.tz)
    if not wanted:
        return []
    closes = reference_closes(conn, symbol_id, wanted, calendar)
    return sorted(d for d in wanted if d not in closes)


def adjust_read(
    conn: Connection,
    symbol_id: int,
    calendar: TradingCalendar,
    columns: dict[str, np.ndarray[Any, Any]],
    stored: Basis,
    adjust: Adjust | None,
    order: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray[Any, Any]], Basis]:
    """The read path's one adjustment step: the symbol's actions in effect now, applied to ``columns``.

    Nothing is queried for ``adjust=None`` or a read already in the asked basis.
    """
    if adjust is None or adjust.basis == stored or len(columns["ts"]) == 0:
        return adjust_columns(columns, stored, adjust, (), calendar.tz)
    actions = load_actions(conn, symbol_id, order, in_effect=True)
    wanted = needs_reference(adjust, actions, int(columns["ts"].min()), calendar.tz)
    closes = reference_closes(conn, symbol_id, wanted, calendar)
    return adjust_columns(columns, stored, adjust, actions, calendar.tz, closes)
