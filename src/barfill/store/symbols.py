"""Symbols: ticker <-> id, created on first use.

Other tables refer to a symbol by its integer id; tickers are validated by
:func:`barfill.domain.symbols.validate_ticker` before they reach the table.
This module also holds :func:`insert_on_conflict`, the one place that picks
the dialect's ``INSERT ... ON CONFLICT`` construct (the SQL is the same on
SQLite and PostgreSQL; only SQLAlchemy's construct is dialect-specific).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from barfill.domain.symbols import validate_ticker
from barfill.store.db import db_now
from barfill.store.schema import symbols

# Keeps statements well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK_ROWS = 1000


def insert_on_conflict(conn: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` with ``on_conflict_do_nothing`` / ``on_conflict_do_update`` for ``conn``'s dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def ensure_symbols(
    conn: Connection,
    tickers: Sequence[str],
    *,
    calendar: str = "XNYS",
    asset_class: str = "us_equity",
) -> dict[str, int]:
    """Ids of ``tickers``, inserting the missing ones. Keys are the canonical (upper-case) tickers.

    Idempotent and safe against concurrent callers: missing rows are inserted
    with ``ON CONFLICT DO NOTHING`` and every id is then read back, so two
    processes adding the same ticker both get the one row. ``calendar`` and
    ``asset_class`` apply only to symbols created by this call.

    Raises:
        InvalidInput: for a malformed ticker (nothing is inserted).
    """
    wanted = sorted({validate_ticker(t) for t in tickers})
    if not wanted:
        return {}
    now = db_now(conn)
    for i in range(0, len(wanted), CHUNK_ROWS):
        chunk = wanted[i : i + CHUNK_ROWS]
        stmt = insert_on_conflict(conn, symbols).values(
            [
                {"ticker": t, "calendar": calendar, "asset_class": asset_class, "created_at": now}
                for t in chunk
            ]
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["ticker"]))
    return known_symbols(conn, wanted)


def symbol_id(conn: Connection, ticker: str) -> int | None:
    """The id of ``ticker`` (validated, case-insensitive), or None if it is unknown."""
    canonical = validate_ticker(ticker)
    found = conn.execute(sa.select(symbols.c.id).where(symbols.c.ticker == canonical)).scalar_one_or_none()
    return None if found is None else int(found)


def known_symbols(conn: Connection, tickers: Iterable[str]) -> dict[str, int]:
    """Ids of the ``tickers`` already known (canonical tickers; a read, nothing inserted)."""
    wanted = {validate_ticker(t) for t in tickers}
    return {str(t): int(id_) for t, id_ in _lookup(conn, symbols.c.ticker, symbols.c.id, wanted)}


def tickers_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """Tickers of the given symbol ids; unknown ids are absent from the result."""
    return {int(id_): str(t) for id_, t in _lookup(conn, symbols.c.id, symbols.c.ticker, ids)}


def symbol_calendars(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """The trading calendar name (e.g. ``XNYS``) of each known symbol id."""
    return {int(id_): str(c) for id_, c in _lookup(conn, symbols.c.id, symbols.c.calendar, ids)}


def _lookup(conn: Connection, key: sa.Column[Any], value: sa.Column[Any], wanted: Iterable[Any]) -> list[Any]:
    """(key, value) rows of ``symbols`` for the ``wanted`` keys, in chunks of :data:`CHUNK_ROWS`
    (bound-parameter limits)."""
    keys = sorted(set(wanted))
    rows: list[Any] = []
    for i in range(0, len(keys), CHUNK_ROWS):
        rows += conn.execute(sa.select(key, value).where(key.in_(keys[i : i + CHUNK_ROWS]))).all()
    return rows
