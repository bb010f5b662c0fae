"""base_densities: per (symbol, provider, base timeframe) density learned from answers

Revision ID: 0009
Revises: 0008

A new, empty table: nothing is learned before this revision, and the planner
falls back on the provider's declared model (every extended-hours minute).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "base_densities",
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("base", sa.String(length=8), nullable=False),
        sa.Column("ratio", sa.Double(), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["symbol_id"], ["symbols.id"]),
        sa.PrimaryKeyConstraint("symbol_id", "provider", "base"),
    )


def downgrade() -> None:
    op.drop_table("base_densities")
