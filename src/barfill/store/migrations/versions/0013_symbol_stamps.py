"""symbol_stamps: a change counter per symbol, moved by every write of its bars or actions

Revision ID: 0013
Revises: 0012

A new, empty table: a symbol without a row reads as 0, and the first write
after this revision moves it. No foreign key, like ``bars``: its writers take
symbol ids from rows that have one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "symbol_stamps",
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("symbol_id", name=op.f("pk_symbol_stamps")),
    )


def downgrade() -> None:
    op.drop_table("symbol_stamps")
