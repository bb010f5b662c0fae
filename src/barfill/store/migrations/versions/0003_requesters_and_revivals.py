"""several requesters per (symbol, timeframe); revivals of failed slices

Revision ID: 0003
Revises: 0001

* ``job_definitions.requester`` (existing rows: ``'default'``); the unique key
  becomes ``(symbol_id, timeframe, requester)`` so a notebook's backfill no
  longer replaces a scheduler's rolling window.
* ``job_runs.revivals``: how many times the tick brought a failed slice back;
  its next cool-down doubles with each (capped).

On SQLite the unique key can only change by rebuilding ``job_definitions``,
which ``job_runs`` references while foreign keys are on. A rename would make
SQLite rewrite ``job_runs``' reference to the old table's new name, so the
rows are copied aside, the table is dropped and created again, and the rows
copied back, with foreign keys deferred to the commit (by which time every
referenced id exists again). Ids are kept.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    '"id", "symbol_id", "timeframe", "window_days", "start", "end", "priority", '
    '"enabled", "provider", "created_at", "updated_at"'
)


def _definitions_table(*, with_requester: bool) -> None:
    extra: list[Any] = []
    if with_requester:
        extra = [
            sa.Column("requester", sa.String(length=64), server_default="default", nullable=False),
            sa.UniqueConstraint(
                "symbol_id",
                "timeframe",
                "requester",
                name=op.f("uq_job_definitions_symbol_id_timeframe_requester"),
            ),
        ]
    else:
        extra = [
            sa.UniqueConstraint("symbol_id", "timeframe", name=op.f("uq_job_definitions_symbol_id_timeframe"))
        ]
    op.create_table(
        "job_definitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("timeframe", sa.String(length=4), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=True),
        sa.Column("start", sa.BigInteger(), nullable=True),
        sa.Column("end", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.CheckConstraint(
            'window_days > 0 OR ("start" IS NOT NULL AND "end" IS NOT NULL AND "start" < "end")',
            name=op.f("ck_job_definitions_window"),
        ),
        sa.ForeignKeyConstraint(
            ["symbol_id"], ["symbols.id"], name=op.f("fk_job_definitions_symbol_id_symbols")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_definitions")),
        *extra,
    )


def _rebuild_sqlite_definitions(*, with_requester: bool) -> None:
    op.execute("PRAGMA defer_foreign_keys = ON")  # switched off again at the commit
    op.execute(f"CREATE TABLE _job_definitions_copy AS SELECT {_COLUMNS} FROM job_definitions")
    op.drop_table("job_definitions")
    _definitions_table(with_requester=with_requester)
    op.execute(f"INSERT INTO job_definitions ({_COLUMNS}) SELECT {_COLUMNS} FROM _job_definitions_copy")
    op.execute("DROP TABLE _job_definitions_copy")


def upgrade() -> None:
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revivals", sa.Integer(), server_default="0", nullable=False))
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_definitions(with_requester=True)
        return
    op.add_column(
        "job_definitions",
        sa.Column("requester", sa.String(length=64), server_default="default", nullable=False),
    )
    op.drop_constraint("uq_job_definitions_symbol_id_timeframe", "job_definitions", type_="unique")
    op.create_unique_constraint(
        op.f("uq_job_definitions_symbol_id_timeframe_requester"),
        "job_definitions",
        ["symbol_id", "timeframe", "requester"],
    )


def downgrade() -> None:
    # One definition per (symbol, timeframe) again: refuse rather than pick a winner silently.
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT COUNT(*) FROM (SELECT symbol_id, timeframe FROM job_definitions "
                "GROUP BY symbol_id, timeframe HAVING COUNT(*) > 1) AS t"
            )
        )
        .scalar_one()
    )
    if shared:
        raise RuntimeError(
            f"{shared} (symbol, timeframe) pair(s) have definitions from several requesters: "
            "delete all but one of each before downgrading below 0003"
        )
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.drop_column("revivals")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_definitions(with_requester=False)
        return
    op.drop_constraint("uq_job_definitions_symbol_id_timeframe_requester", "job_definitions", type_="unique")
    op.drop_column("job_definitions", "requester")
    op.create_unique_constraint(
        op.f("uq_job_definitions_symbol_id_timeframe"), "job_definitions", ["symbol_id", "timeframe"]
    )
