"""Provider ids: the SMALLINT that ``bars.provider`` stores for a provider's name.

Providers are not a closed set (a forecast carries any model name a client
gives), so ids live in the ``providers`` table and are made on first write.
Not cached: an id made inside a transaction that then rolls back would stay in
a cache while its row is gone (and SQLite would hand the id out again). One
indexed lookup per upsert costs nothing next to the rows it writes.
"""

from __future__ import annotations

from typing import Any

from barfill.errors import DatabaseError

# bars.provider is a SMALLINT.
MAX_PROVIDER_ID = 32_767


def provider_id(dbapi: Any, name: str, *, sqlite: bool) -> int:
    """The id of provider ``name``, added inside the caller's transaction if it is new.

    Takes the DBAPI connection the bar writes already use. Concurrent first
    writes of one name agree: the loser's insert does nothing (PostgreSQL waits
    for the winner's transaction; SQLite has one writer) and both read the row.

    Raises:
        DatabaseError: every SMALLINT id is taken.
    """
    mark = "?" if sqlite else "%s"
    cur = dbapi.cursor()
    try:
        cur.execute(f"SELECT id FROM providers WHERE name = {mark}", (name,))
        row = cur.fetchone()
        if row is None:
            cur.execute(
                f"INSERT INTO providers (name) VALUES ({mark}) ON CONFLICT (name) DO NOTHING", (name,)
            )
            cur.execute(f"SELECT id FROM providers WHERE name = {mark}", (name,))
            row = cur.fetchone()
    finally:
        cur.close()
    found = int(row[0])
    if found > MAX_PROVIDER_ID:
        raise DatabaseError(
            f"no provider id left for {name!r}: bars.provider holds at most {MAX_PROVIDER_ID}"
        )
    return found
