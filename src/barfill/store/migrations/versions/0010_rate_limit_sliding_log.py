"""rate_limits: a sliding log of grants (ring of the last N per provider) replaces GCRA's tat

Revision ID: 0010
Revises: 0009

``tat`` becomes ``not_before``, the penalty floor: a stored ``tat`` is no
earlier than the next grant GCRA allowed, so keeping it as the floor never
lets a grant through earlier than before. The grant counter starts at 0 and
the ring empty (so the first N grants after the upgrade may go at once, as
after any idle period).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # RENAME COLUMN and ADD COLUMN in place on both databases (SQLite >= 3.25): rows survive.
    op.execute("ALTER TABLE rate_limits RENAME COLUMN tat TO not_before")
    op.add_column("rate_limits", sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "rate_limit_slots",
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("granted_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "slot", name=op.f("pk_rate_limit_slots")),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_slots")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE rate_limits DROP COLUMN seq")
    else:
        op.drop_column("rate_limits", "seq")
    op.execute("ALTER TABLE rate_limits RENAME COLUMN not_before TO tat")
