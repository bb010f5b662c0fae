"""Every table, declared once in SQLAlchemy Core.

Times are stored as numbers, identical on SQLite and PostgreSQL:
bar ``ts`` and interval bounds are integer Unix seconds (UTC, exact, cheap to
compare); queue and bookkeeping times (``not_before``, ``lease_until`` ...)
are float Unix seconds read from the **database clock** (see
:func:`barfill.store.db.db_now`). Alembic migrations must produce exactly this
metadata; ``tests/integration/test_schema.py`` checks it on both databases.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import TypeDecorator

# bars' timeframe and layer are stored as small integer codes: a narrower primary key
# makes PostgreSQL's COPY into bars 1.2-1.45x faster (bench/store.py). The codes are
# mapped at this boundary (see _Code): SQLAlchemy statements bind and return the tokens.
# Raw SQL on bars (store/bars.py, store/bar_rows.py) uses these maps. Never renumber: rows hold them.
TIMEFRAME_CODES: dict[str, int] = {"m1": 1, "m5": 2, "m15": 3, "m30": 4, "h1": 5, "h4": 6, "d1": 7, "w1": 8}
LAYER_CODES: dict[str, int] = {"historical": 1, "intraday": 2, "forecast": 3}
LAYER_NAMES: dict[int, str] = {v: k for k, v in LAYER_CODES.items()}
TIMEFRAME_NAMES: dict[int, str] = {v: k for k, v in TIMEFRAME_CODES.items()}


class _Code(TypeDecorator[str]):
    """A token (``'m1'``, ``'historical'``) stored as its SMALLINT code; bound and read as the token."""

    impl = SmallInteger
    cache_ok = True

    def __init__(self, codes: tuple[tuple[str, int], ...]) -> None:
        super().__init__()
        self.codes = codes
        self._code = dict(codes)
        self._name = {v: k for k, v in codes}

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        try:
            return self._code[str(value)]
        except KeyError:
            raise ValueError(f"no code for {value!r}: expected one of {sorted(self._code)}") from None

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self._name[int(value)]


TimeframeCode = _Code(tuple(TIMEFRAME_CODES.items()))
LayerCode = _Code(tuple(LAYER_CODES.items()))

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

symbols = Table(
    "symbols",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ticker", String(32), nullable=False, unique=True),
    Column("calendar", String(16), nullable=False, server_default="XNYS"),
    Column("asset_class", String(16), nullable=False, server_default="us_equity"),
    Column("created_at", Double, nullable=False),
)

# Who supplied bars: a provider ("polygon"), a derivation ("resample:polygon") or a forecast
# model (any name a client gives). bars.provider holds the id, a SMALLINT: the key stays narrow
# (bench/store.py; migration 0012). Rows are added on first write (store.provider_ids), never renamed.
providers = Table(
    "providers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False, unique=True),
)


class _ProviderName(TypeDecorator[str]):
    """``bars.provider``: stored as a ``providers.id``, bound and read as the provider's name in SQL.

    A bound name becomes ``(SELECT id FROM providers WHERE name = :name)`` and a
    selected column ``(SELECT name FROM providers WHERE id = bars.provider)``, so
    every SQLAlchemy statement on ``bars`` speaks names (an unknown name matches
    nothing). Not for ``IN``, and not for writing a new name: ``upsert_bars``
    creates ids; raw SQL binds them (``store.provider_ids``).
    """

    impl = SmallInteger
    cache_ok = True

    def bind_expression(self, bindvalue: BindParameter[str]) -> ColumnElement[Any]:
        name = type_coerce(bindvalue, String())
        return select(providers.c.id).where(providers.c.name == name).scalar_subquery()

    def column_expression(self, column: ColumnElement[str]) -> ColumnElement[str]:
        return select(providers.c.name).where(providers.c.id == column).scalar_subquery()


bars = Table(
    "bars",
    metadata,
    # No foreign key to symbols: it halves PostgreSQL upsert throughput, and the
    # only writer takes symbol ids from claimed slices, whose table has one.
    Column("symbol_id", Integer, primary_key=True),
    Column("timeframe", TimeframeCode, primary_key=True),  # TIMEFRAME_CODES
    Column("ts", BigInteger, primary_key=True),  # bar open, Unix seconds UTC
    Column("provider", _ProviderName, primary_key=True),  # providers.id
    Column("layer", LayerCode, primary_key=True),  # LAYER_CODES
    Column("open", Double, nullable=False),
    Column("high", Double, nullable=False),
    Column("low", Double, nullable=False),
    Column("close", Double, nullable=False),
    Column("volume", Double, nullable=False),
    Column("vwap", Double),
    Column("trade_count", BigInteger),
    Column("fetched_at", Double, nullable=False),
    # The provider's price adjustment (domain.bars.Basis); a read never mixes two.
    Column("basis", String(8), nullable=False, server_default="raw"),
    CheckConstraint("layer IN (1, 2, 3)", name="layer"),
    CheckConstraint("basis IN ('raw', 'split', 'dividend', 'all')", name="basis"),
    # Why a bad bar was flagged (domain.badbars), NULL for a good one. Flagged bars are
    # kept and left out of reads by default; they are not gaps.
    Column("flag", String(16)),
    sqlite_with_rowid=False,
)

coverage = Table(
    "coverage",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("symbol_id", Integer, ForeignKey("symbols.id"), nullable=False),
    Column("timeframe", String(4), nullable=False),
    Column("start", BigInteger, nullable=False),  # Unix seconds UTC, inclusive
    Column("end", BigInteger, nullable=False),  # Unix seconds UTC, exclusive
    Column("provisional", Boolean, nullable=False, server_default=text("false")),
    Column("expires_at", Double),  # provisional intervals only; database clock
    Column("updated_at", Double, nullable=False),
    CheckConstraint('"start" < "end"', name="span"),
    Index(None, "symbol_id", "timeframe", "start"),
)

job_definitions = Table(
    "job_definitions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("symbol_id", Integer, ForeignKey("symbols.id"), nullable=False),
    Column("timeframe", String(4), nullable=False),
    Column("window_days", Integer),  # rolling window ending now, or...
    Column("start", BigInteger),  # ...a fixed [start, end) in Unix seconds UTC
    Column("end", BigInteger),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("provider", String(40)),  # pinned provider, or NULL for the router's choice
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # Who asked (a scheduler, a notebook...): each requester keeps its own window and pin.
    Column("requester", String(64), nullable=False, server_default="default"),
    UniqueConstraint("symbol_id", "timeframe", "requester"),
    CheckConstraint(
        'window_days > 0 OR ("start" IS NOT NULL AND "end" IS NOT NULL AND "start" < "end")',
        name="window",
    ),
)

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("definition_id", Integer, ForeignKey("job_definitions.id"), nullable=False),
    Column("symbol_id", Integer, ForeignKey("symbols.id"), nullable=False),
    Column("timeframe", String(4), nullable=False),
    Column("start", BigInteger, nullable=False),
    Column("end", BigInteger, nullable=False),
    Column("provider", String(40), nullable=False),
    # historical: a final range, stored once; intraday: a provisional range (realtime provider).
    Column("layer", String(12), nullable=False, server_default="historical"),
    Column("status", String(12), nullable=False, server_default="queued"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="5"),
    Column("not_before", Double, nullable=False),
    Column("lease_until", Double),
    Column("lease_token", String(36)),
    Column("worker_id", String(64)),
    Column("heartbeat_at", Double),
    Column("rows_written", Integer, nullable=False, server_default="0"),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("created_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("updated_at", Double, nullable=False),
    # fill: fetch a gap; verify: re-fetch final sessions once to catch vendor corrections.
    Column("purpose", String(8), nullable=False, server_default="fill"),
    UniqueConstraint("definition_id", "start", "end", "provider", "layer", "purpose"),
    # Times the tick brought this slice back from failed (its cool-down doubles each time).
    Column("revivals", Integer, nullable=False, server_default="0"),
    CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"),
    CheckConstraint('"start" < "end"', name="span"),
    CheckConstraint("purpose IN ('fill', 'verify')", name="purpose"),
    # Runnable rows only: the claim scans this, never the finished history.
    Index(
        "ix_job_runs_running_lease",
        "lease_until",
        postgresql_where=text("status = 'running'"),
        sqlite_where=text("status = 'running'"),
    ),
    Index(None, "definition_id", "status"),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("provider", String(40), primary_key=True),
    # The sliding log's penalty floor (429 / Retry-After): no grant before this instant,
    # Unix seconds on the database clock (see barfill.domain.sliding_log).
    Column("not_before", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # Grants ever made: grant k is stored in ring slot k mod N of rate_limit_slots.
    Column("seq", BigInteger, nullable=False, server_default="0"),
    # Lifetime counters, shared by every process: slots granted (requests sent),
    # throttling penalties (429 / Retry-After) and failed provider calls.
    Column("requests", BigInteger, nullable=False, server_default="0"),
    Column("throttled", BigInteger, nullable=False, server_default="0"),
    Column("errors", BigInteger, nullable=False, server_default="0"),
)

# The last N grants of each provider, a ring of N rows: slot k mod N holds grant k
# (its number and when it was sent, database clock).
rate_limit_slots = Table(
    "rate_limit_slots",
    metadata,
    Column("provider", String(40), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("granted_at", Double, nullable=False),
)

# A change counter per symbol, moved when a transaction that wrote its bars, bar flags or
# corporate actions commits (store.stamps): a server reuses what it read while it stands
# (migration 0013).
symbol_stamps = Table(
    "symbol_stamps",
    metadata,
    Column("symbol_id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
)

# What each recent commit changed of a symbol, under the counter value it moved the symbol to
# (store.stamps): one row per (timeframe, layer) of upserted bars with their first and last
# ``ts``, or one ``unknown`` row. A server patches a kept read from it instead of reading
# everything again. The last ``stamps.KEEP`` counter values of each symbol are kept
# (migration 0014).
symbol_changes = Table(
    "symbol_changes",
    metadata,
    Column("symbol_id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("part", SmallInteger, primary_key=True, autoincrement=False),
    Column("kind", String(8), nullable=False),
    Column("timeframe", String(4)),
    Column("layer", String(12)),
    Column("first_ts", BigInteger),
    Column("last_ts", BigInteger),
)

# What a provider really counts against its page limit for a symbol, learned from its
# answers (Polygon's queryCount): base aggregates per unit the planner models (an
# extended-hours minute, or a session for day bars). Below 1 for a symbol that trades
# only regular hours; the planner sizes slices to it (migration 0009).
base_densities = Table(
    "base_densities",
    metadata,
    Column("symbol_id", Integer, ForeignKey("symbols.id"), primary_key=True),
    Column("provider", String(40), primary_key=True),
    Column("base", String(8), primary_key=True),  # 'minute' or 'day'
    Column("ratio", Double, nullable=False),  # the densest answer seen: base aggregates / modeled units
    Column("observations", Integer, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# Runnable rows only, in the claim's ORDER BY: no sort of every queued row per claim.
Index(
    "ix_job_runs_runnable",
    job_runs.c.priority.desc(),
    job_runs.c.not_before,
    job_runs.c.id,
    postgresql_where=text("status = 'queued'"),
    sqlite_where=text("status = 'queued'"),
)

# Final sessions awaiting (or past) their one re-verification against their provider.
# A row is written when a session's final bars are committed before they are due.
verifications = Table(
    "verifications",
    metadata,
    Column("symbol_id", Integer, primary_key=True),
    Column("timeframe", String(4), primary_key=True),
    Column("session", BigInteger, primary_key=True),  # the session's local midnight (its d1 label)
    Column("provider", String(40), nullable=False),  # the provider whose bars are stored
    Column("due_at", Double, nullable=False),  # database clock: N sessions after it became final
    Column("verified_at", Double),  # NULL until re-fetched and compared
    Column("corrections", Integer, nullable=False, server_default="0"),
    Column("created_at", Double, nullable=False),
    Index(
        "ix_verifications_due_at",
        "due_at",
        postgresql_where=text("verified_at IS NULL"),
        sqlite_where=text("verified_at IS NULL"),
    ),
)

# Every difference a re-verification found and wrote: vendor corrections.
corrections = Table(
    "corrections",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("symbol_id", Integer, nullable=False),
    Column("timeframe", String(4), nullable=False),
    Column("ts", BigInteger, nullable=False),  # bar open, Unix seconds UTC
    Column("provider", String(40), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("old_values", Text),  # JSON {open, high, low, close, volume, vwap, trade_count}; NULL when added
    Column("new_values", Text),  # JSON, NULL when removed
    Column("detected_at", Double, nullable=False),  # database clock
    CheckConstraint("kind IN ('changed', 'added', 'removed')", name="kind"),
    Index(None, "detected_at"),
)

# HTTP API keys. The secret part is never stored: only a salted SHA-256 of it.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key_id", String(16), nullable=False, unique=True),  # the public part of the key
    Column("name", String(64), nullable=False),
    Column("scopes", String(32), nullable=False),  # comma-separated: read, write, admin
    Column("salt", String(32), nullable=False),  # hex
    Column("secret_hash", String(64), nullable=False),  # hex sha256(salt || secret)
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double),  # database clock; NULL while the key is valid
)

# Splits and cash dividends, stored as published; bars stay raw and are adjusted on read.
corporate_actions = Table(
    "corporate_actions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("symbol_id", Integer, ForeignKey("symbols.id"), nullable=False),
    Column("kind", String(8), nullable=False),  # split | dividend
    Column("ex_date", String(10), nullable=False),  # YYYY-MM-DD, exchange-local
    Column("effective_at", BigInteger, nullable=False),  # 00:00 local of ex_date, Unix seconds UTC
    Column("ratio", Double),  # split: new shares per old (4:1 -> 4.0)
    Column("cash", Double),  # dividend: cash per share, as paid
    Column("provider", String(40), nullable=False),
    Column("fetched_at", Double, nullable=False),  # last seen, database clock
    Column("changed_at", Double, nullable=False),  # first seen or last changed: in bar ETags
    UniqueConstraint("symbol_id", "kind", "ex_date", "provider"),
    CheckConstraint("kind IN ('split', 'dividend')", name="kind"),
    CheckConstraint(
        "(kind = 'split' AND ratio > 0 AND cash IS NULL) OR "
        "(kind = 'dividend' AND cash >= 0 AND ratio IS NULL)",
        name="values",
    ),
)

# When each (symbol, provider)'s actions were last refreshed, database clock.
action_refreshes = Table(
    "action_refreshes",
    metadata,
    Column("symbol_id", Integer, ForeignKey("symbols.id"), primary_key=True),
    Column("provider", String(40), primary_key=True),
    Column("refreshed_at", Double, nullable=False),
)
