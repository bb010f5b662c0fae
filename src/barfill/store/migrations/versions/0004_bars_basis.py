"""bars.basis: each bar records its provider's price adjustment

Revision ID: 0004
Revises: 0001

Existing rows become ``raw`` (the default of every provider but Yahoo), and
Yahoo's rows ``split`` (its chart prices are split-adjusted). Rows derived
from Yahoo bars (``resample:*``) cannot be told apart and stay ``raw`` until
their bucket is recomputed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CHECK = "basis IN ('raw', 'split', 'dividend', 'all')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # ADD COLUMN keeps the WITHOUT ROWID table in place (a batch copy would rebuild it).
        op.execute(
            "ALTER TABLE bars ADD COLUMN basis VARCHAR(8) DEFAULT 'raw' NOT NULL "
            f"CONSTRAINT ck_bars_basis CHECK ({_CHECK})"
        )
    else:
        op.add_column("bars", sa.Column("basis", sa.String(length=8), server_default="raw", nullable=False))
        op.create_check_constraint(op.f("ck_bars_basis"), "bars", _CHECK)
    op.execute("UPDATE bars SET basis = 'split' WHERE provider = 'yahoo'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE bars DROP COLUMN basis")
    else:
        op.drop_constraint(op.f("ck_bars_basis"), "bars", type_="check")
        op.drop_column("bars", "basis")
