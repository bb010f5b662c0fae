"""bars.provider as a SMALLINT id into a new providers table: a narrower primary key

Revision ID: 0012
Revises: 0011

Why: PostgreSQL's COPY into ``bars`` is bound by its primary-key index (the
upsert runs as fast as a raw COPY into a table with the same key), and the
provider name was the key's last text column. Providers are not a closed set
(forecast bars carry a model name), so names get ids in ``providers`` (made on
first write by ``store.provider_ids``) instead of a frozen map like 0011's.
Every stored name gets an id here, in name order; rows are rewritten in place
on PostgreSQL (``ALTER COLUMN ... TYPE ... USING``) and copied into a rebuilt
table on SQLite (a WITHOUT ROWID table cannot change a key column's type),
either way in the migration's transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_SQLITE_BARS = """CREATE TABLE bars_rebuilt (
    symbol_id INTEGER NOT NULL,
    timeframe SMALLINT NOT NULL,
    ts BIGINT NOT NULL,
    provider {provider_type} NOT NULL,
    layer SMALLINT NOT NULL,
    open DOUBLE NOT NULL,
    high DOUBLE NOT NULL,
    low DOUBLE NOT NULL,
    close DOUBLE NOT NULL,
    volume DOUBLE NOT NULL,
    vwap DOUBLE,
    trade_count BIGINT,
    fetched_at DOUBLE NOT NULL,
    basis VARCHAR(8) DEFAULT 'raw' NOT NULL
        CONSTRAINT ck_bars_basis CHECK (basis IN ('raw', 'split', 'dividend', 'all')),
    flag VARCHAR(16),
    CONSTRAINT pk_bars PRIMARY KEY (symbol_id, timeframe, ts, provider, layer),
    CONSTRAINT ck_bars_layer CHECK (layer IN (1, 2, 3))
) WITHOUT ROWID"""
_COLUMNS = (
    "symbol_id, timeframe, ts, provider, layer, open, high, low, close, volume, vwap, trade_count, "
    "fetched_at, basis, flag"
)
_TO_ID = "(SELECT p.id FROM providers p WHERE p.name = bars.provider)"
_TO_NAME = "(SELECT p.name FROM providers p WHERE p.id = bars.provider)"


def _rebuild_sqlite(provider_type: str, provider: str) -> None:
    op.execute(_SQLITE_BARS.format(provider_type=provider_type))
    values = _COLUMNS.replace("provider,", f"{provider},", 1)
    op.execute(f"INSERT INTO bars_rebuilt ({_COLUMNS}) SELECT {values} FROM bars")
    op.execute("DROP TABLE bars")
    op.execute("ALTER TABLE bars_rebuilt RENAME TO bars")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _alter_postgres(to_id: bool) -> None:
    """One rewrite of bars by a CASE over the (few) providers: ALTER ... USING takes no subquery."""
    names = op.get_bind().execute(sa.text("SELECT id, name FROM providers ORDER BY id")).all()
    if to_id:
        whens = " ".join(f"WHEN {_literal(name)} THEN {pid}" for pid, name in names)
        target = "SMALLINT"
    else:
        whens = " ".join(f"WHEN {pid} THEN {_literal(name)}" for pid, name in names)
        target = "VARCHAR(40)"
    # An empty table has no providers and needs no CASE (which wants one WHEN at least).
    using = f"CASE provider {whens} END" if names else "NULL"
    op.execute(f"ALTER TABLE bars ALTER COLUMN provider TYPE {target} USING {using}")


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
        sa.UniqueConstraint("name", name=op.f("uq_providers_name")),
    )
    op.execute("INSERT INTO providers (name) SELECT DISTINCT provider FROM bars ORDER BY provider")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("SMALLINT", _TO_ID)
    else:
        _alter_postgres(to_id=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("VARCHAR(40)", _TO_NAME)
    else:
        _alter_postgres(to_id=False)
    op.drop_table("providers")
