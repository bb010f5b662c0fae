"""symbol_changes: what each recent commit changed of a symbol's bars, under its new counter value

Revision ID: 0014
Revises: 0013

A new, empty table: a kept read older than this revision finds no rows for the
counter values it missed and is read again in full, as before. No foreign key,
like ``symbol_stamps``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "symbol_changes",
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("part", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("timeframe", sa.String(length=4), nullable=True),
        sa.Column("layer", sa.String(length=12), nullable=True),
        sa.Column("first_ts", sa.BigInteger(), nullable=True),
        sa.Column("last_ts", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("symbol_id", "seq", "part", name=op.f("pk_symbol_changes")),
    )


def downgrade() -> None:
    op.drop_table("symbol_changes")
