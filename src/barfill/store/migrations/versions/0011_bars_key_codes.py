"""bars.timeframe and bars.layer as SMALLINT codes: a narrower primary key

Revision ID: 0011
Revises: 0009

Why: PostgreSQL's COPY into ``bars`` is bound by its primary-key index, and
two short text columns in that key made it measurably slower (bench/store.py:
1.2-1.45x faster with codes). The codes are ``schema.TIMEFRAME_CODES`` and
``schema.LAYER_CODES``, frozen here as they are at this revision. Every row
is rewritten in place on PostgreSQL (``ALTER COLUMN ... TYPE ... USING``) and
copied into a rebuilt table on SQLite (a WITHOUT ROWID table cannot change a
key column's type); either way in the migration's transaction.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TIMEFRAMES = {"m1": 1, "m5": 2, "m15": 3, "m30": 4, "h1": 5, "h4": 6, "d1": 7, "w1": 8}
_LAYERS = {"historical": 1, "intraday": 2, "forecast": 3}
_OLD_LAYER_CHECK = "layer IN ('historical', 'intraday', 'forecast')"
_NEW_LAYER_CHECK = "layer IN (1, 2, 3)"

_SQLITE_BARS = """CREATE TABLE {name} (
    symbol_id INTEGER NOT NULL,
    timeframe {tf_type} NOT NULL,
    ts BIGINT NOT NULL,
    provider VARCHAR(40) NOT NULL,
    layer {layer_type} NOT NULL,
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
    CONSTRAINT ck_bars_layer CHECK ({layer_check})
) WITHOUT ROWID"""
_COLUMNS = (
    "symbol_id, timeframe, ts, provider, layer, open, high, low, close, volume, vwap, trade_count, "
    "fetched_at, basis, flag"
)


def _case(column: str, mapping: dict[str, int], *, to_code: bool) -> str:
    pairs = mapping.items() if to_code else ((v, k) for k, v in mapping.items())
    whens = " ".join(f"WHEN {k!r} THEN {v!r}" if to_code else f"WHEN {k} THEN {v!r}" for k, v in pairs)
    return f"CASE {column} {whens} END"


def _select(to_code: bool) -> str:
    tf = _case("timeframe", _TIMEFRAMES, to_code=to_code)
    layer = _case("layer", _LAYERS, to_code=to_code)
    return (
        f"SELECT symbol_id, {tf}, ts, provider, {layer}, open, high, low, close, volume, vwap, "
        "trade_count, fetched_at, basis, flag FROM bars"
    )


def _rebuild_sqlite(to_code: bool) -> None:
    types = ("SMALLINT", "SMALLINT") if to_code else ("VARCHAR(4)", "VARCHAR(12)")
    check = _NEW_LAYER_CHECK if to_code else _OLD_LAYER_CHECK
    ddl = _SQLITE_BARS.format(name="bars_rebuilt", tf_type=types[0], layer_type=types[1], layer_check=check)
    op.execute(ddl)
    op.execute(f"INSERT INTO bars_rebuilt ({_COLUMNS}) {_select(to_code)}")
    op.execute("DROP TABLE bars")
    op.execute("ALTER TABLE bars_rebuilt RENAME TO bars")


def _alter_postgres(to_code: bool) -> None:
    op.drop_constraint(op.f("ck_bars_layer"), "bars", type_="check")
    if to_code:
        tf, layer = "SMALLINT", "SMALLINT"
    else:
        tf, layer = "VARCHAR(4)", "VARCHAR(12)"
    op.execute(
        f"ALTER TABLE bars ALTER COLUMN timeframe TYPE {tf} "
        f"USING {_case('timeframe', _TIMEFRAMES, to_code=to_code)}, "
        f"ALTER COLUMN layer TYPE {layer} USING {_case('layer', _LAYERS, to_code=to_code)}"
    )
    op.create_check_constraint(
        op.f("ck_bars_layer"), "bars", _NEW_LAYER_CHECK if to_code else _OLD_LAYER_CHECK
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(to_code=True)
    else:
        _alter_postgres(to_code=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(to_code=False)
    else:
        _alter_postgres(to_code=False)
