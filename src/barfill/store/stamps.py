"""A change counter per symbol, so a server can tell with one point query that a symbol's answers stand.

Every commit anywhere moves a server's data version (SQLite's
``data_version``, PostgreSQL's notifications), and a busy store commits all
the time: without more, each chart read after any worker's commit would read
its bars again. Every writer of a symbol's bars, bar flags or corporate
actions calls :func:`touch`; the counter of each touched symbol moves once,
just before the write transaction commits (:meth:`Database.write
<barfill.store.db.Database.write>` calls :func:`flush`), so the row lock it
takes on PostgreSQL is held for the commit only, never while bars are
written. Symbols are bumped in id order: two writers cannot deadlock on them.

A reader that read the counter *before* its data (same transaction) and sees
the same counter later knows the data it read is still what is stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_TOUCHED = "barfill_touched_symbols"
_IN_WRITE = "barfill_write_transaction"


def touch(conn: Connection, symbol_id: int) -> None:
    """Record that this transaction changes ``symbol_id``'s stored answers.

    Inside :meth:`Database.write` the bump waits for the commit; anywhere
    else it happens at once (no writer can be missed).
    """
    if conn.info.get(_IN_WRITE):
        conn.info.setdefault(_TOUCHED, set()).add(int(symbol_id))
    else:
        _bump(conn, [int(symbol_id)])


def begin(conn: Connection) -> None:
    """A write transaction starts on ``conn``: forget what an earlier, rolled-back one touched."""
    conn.info[_IN_WRITE] = True
    conn.info.pop(_TOUCHED, None)


def flush(conn: Connection) -> None:
    """Bump the counter of every symbol touched in this transaction (call right before commit)."""
    touched = conn.info.pop(_TOUCHED, None)
    conn.info.pop(_IN_WRITE, None)
    if touched:
        _bump(conn, sorted(touched))


def end(conn: Connection) -> None:
    """The write transaction ended without :func:`flush` (it rolled back)."""
    conn.info.pop(_TOUCHED, None)
    conn.info.pop(_IN_WRITE, None)


def _bump(conn: Connection, symbol_ids: list[int]) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO symbol_stamps (symbol_id, seq) VALUES (:s, 1) "
            "ON CONFLICT (symbol_id) DO UPDATE SET seq = symbol_stamps.seq + 1"
        ),
        [{"s": s} for s in symbol_ids],
    )


def read(conn: Connection, symbol_id: int) -> int:
    """The counter of ``symbol_id`` now (0 when it was never written)."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(f"SELECT seq FROM symbol_stamps WHERE symbol_id = {mark}", (int(symbol_id),))
        row = cur.fetchone()
    finally:
        cur.close()
    return 0 if row is None else int(row[0])
