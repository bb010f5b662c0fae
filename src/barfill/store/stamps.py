"""A change counter per symbol, and a short log of what moved it, so a server can tell with one point
query that a symbol's answers stand, or which sessions of them to read again.

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
the same counter later knows the data it read is still what is stored. When
it moved, :func:`changes` says what moved it: the same commit writes one
``symbol_changes`` row per (timeframe, layer) of upserted bars, with their
first and last ``ts``, or one :data:`UNKNOWN` row for anything else (flags,
deletions, corporate actions, a writer that did not say). Only the last
:data:`KEEP` counter values of each symbol are kept (pruned by the writer,
under the counter's row lock); a reader that missed more reads everything again.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_TOUCHED = "barfill_touched_symbols"
_IN_WRITE = "barfill_write_transaction"
UPSERT = "upsert"
UNKNOWN = "unknown"
KEEP = 32  # counter values of each symbol whose changes are kept


@dataclass(frozen=True)
class Change:
    """What one commit changed of a symbol: ``upsert`` of one (timeframe, layer)'s bars with
    ``first_ts <= ts <= last_ts`` (values, basis and flags of those rows), or ``unknown``."""

    kind: str = UNKNOWN
    timeframe: str | None = None
    layer: str | None = None
    first_ts: int | None = None
    last_ts: int | None = None


def upserted(timeframe: str, layer: str, first_ts: int, last_ts: int) -> Change:
    """The change of an upsert of bars of ``timeframe`` and ``layer`` with ``first_ts <= ts <= last_ts``."""
    return Change(UPSERT, timeframe, layer, int(first_ts), int(last_ts))


def touch(conn: Connection, symbol_id: int, change: Change | None = None) -> None:
    """Record that this transaction changes ``symbol_id``'s stored answers (``change``: how; None:
    unknown, so readers of the symbol read everything again).

    Inside :meth:`Database.write` the bump waits for the commit; anywhere
    else it happens at once (no writer can be missed). Upserts of one
    (timeframe, layer) in one transaction are logged as one range.
    """
    what = change or Change()
    if conn.info.get(_IN_WRITE):
        touched = conn.info.setdefault(_TOUCHED, {})
        _merge(touched.setdefault(int(symbol_id), {}), what)
    else:
        _bump(conn, {int(symbol_id): _merge({}, what)})


def _merge(
    log: dict[tuple[str, str | None, str | None], Change], what: Change
) -> dict[tuple[str, str | None, str | None], Change]:
    key = (what.kind, what.timeframe, what.layer)
    held = log.get(key)
    if held is not None and what.kind == UPSERT:
        assert held.first_ts is not None and held.last_ts is not None
        assert what.first_ts is not None and what.last_ts is not None
        what = Change(
            UPSERT,
            what.timeframe,
            what.layer,
            min(held.first_ts, what.first_ts),
            max(held.last_ts, what.last_ts),
        )
    log[key] = what
    return log


def begin(conn: Connection) -> None:
    """A write transaction starts on ``conn``: forget what an earlier, rolled-back one touched."""
    conn.info[_IN_WRITE] = True
    conn.info.pop(_TOUCHED, None)


def flush(conn: Connection) -> None:
    """Bump the counter of every symbol touched in this transaction and log what changed (call
    right before commit)."""
    touched = conn.info.pop(_TOUCHED, None)
    conn.info.pop(_IN_WRITE, None)
    if touched:
        _bump(conn, touched)


def end(conn: Connection) -> None:
    """The write transaction ended without :func:`flush` (it rolled back)."""
    conn.info.pop(_TOUCHED, None)
    conn.info.pop(_IN_WRITE, None)


_LOG = sa.text(
    "INSERT INTO symbol_changes (symbol_id, seq, part, kind, timeframe, layer, first_ts, last_ts) "
    "SELECT symbol_id, seq, CAST(:p AS SMALLINT), CAST(:k AS VARCHAR(8)), CAST(:tf AS VARCHAR(4)), "
    "CAST(:la AS VARCHAR(12)), CAST(:a AS BIGINT), CAST(:b AS BIGINT) "
    "FROM symbol_stamps WHERE symbol_id = :s"
)
_PRUNE = sa.text(
    "DELETE FROM symbol_changes WHERE symbol_id = :s "
    "AND seq <= (SELECT seq FROM symbol_stamps WHERE symbol_id = :s) - :keep"
)


def _bump(conn: Connection, touched: dict[int, dict[tuple[str, str | None, str | None], Change]]) -> None:
    ids = sorted(touched)
    conn.execute(
        sa.text(
            "INSERT INTO symbol_stamps (symbol_id, seq) VALUES (:s, 1) "
            "ON CONFLICT (symbol_id) DO UPDATE SET seq = symbol_stamps.seq + 1"
        ),
        [{"s": s} for s in ids],
    )
    rows = []
    for s in ids:
        log = touched[s]
        # Anything unknown makes the whole commit unknown: one row says so.
        parts = [Change()] if any(c.kind != UPSERT for c in log.values()) else list(log.values())
        rows += [
            {"s": s, "p": i, "k": c.kind, "tf": c.timeframe, "la": c.layer, "a": c.first_ts, "b": c.last_ts}
            for i, c in enumerate(parts)
        ]
    conn.execute(_LOG, rows)
    conn.execute(_PRUNE, [{"s": s, "keep": KEEP} for s in ids])


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


def changes(conn: Connection, symbol_id: int, after: int, upto: int) -> list[Change] | None:
    """What moved ``symbol_id``'s counter from ``after`` to ``upto``, or None when some of it is no
    longer logged (pruned, or written before the log existed) or the counter went back (a
    restored database)."""
    if upto == after:
        return []
    if not 0 < upto - after <= KEEP:
        return None
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(
            "SELECT seq, kind, timeframe, layer, first_ts, last_ts FROM symbol_changes "
            f"WHERE symbol_id = {mark} AND seq > {mark} AND seq <= {mark} ORDER BY seq, part",
            (int(symbol_id), int(after), int(upto)),
        )
        rows = cur.fetchall()
    finally:
        cur.close()
    if {int(r[0]) for r in rows} != set(range(after + 1, upto + 1)):
        return None
    return [
        Change(str(k), tf, la, None if a is None else int(a), None if b is None else int(b))
        for _, k, tf, la, a, b in rows
    ]
