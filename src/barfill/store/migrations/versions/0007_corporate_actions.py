"""corporate_actions: splits and dividends per symbol; action_refreshes: when each was fetched

Revision ID: 0007
Revises: 0006

Bars stay raw; reads adjust them with these rows (barfill.domain.adjust).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corporate_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("ex_date", sa.String(length=10), nullable=False),
        sa.Column("effective_at", sa.BigInteger(), nullable=False),
        sa.Column("ratio", sa.Double(), nullable=True),
        sa.Column("cash", sa.Double(), nullable=True),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("fetched_at", sa.Double(), nullable=False),
        sa.Column("changed_at", sa.Double(), nullable=False),
        sa.CheckConstraint("kind IN ('split', 'dividend')", name=op.f("ck_corporate_actions_kind")),
        sa.CheckConstraint(
            "(kind = 'split' AND ratio > 0 AND cash IS NULL) OR "
            "(kind = 'dividend' AND cash >= 0 AND ratio IS NULL)",
            name=op.f("ck_corporate_actions_values"),
        ),
        sa.ForeignKeyConstraint(
            ["symbol_id"], ["symbols.id"], name=op.f("fk_corporate_actions_symbol_id_symbols")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corporate_actions")),
        sa.UniqueConstraint(
            "symbol_id",
            "kind",
            "ex_date",
            "provider",
            name=op.f("uq_corporate_actions_symbol_id_kind_ex_date_provider"),
        ),
    )
    op.create_table(
        "action_refreshes",
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("refreshed_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["symbol_id"], ["symbols.id"], name=op.f("fk_action_refreshes_symbol_id_symbols")
        ),
        sa.PrimaryKeyConstraint("symbol_id", "provider", name=op.f("pk_action_refreshes")),
    )


def downgrade() -> None:
    op.drop_table("action_refreshes")
    op.drop_table("corporate_actions")
