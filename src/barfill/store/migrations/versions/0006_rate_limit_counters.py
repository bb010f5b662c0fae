"""rate_limits: lifetime per-provider counters (requests, throttled, errors)

Revision ID: 0006
Revises: 0005

Existing rows keep their ``tat`` and start every counter at 0: nothing was
counted before this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COUNTERS = ("requests", "throttled", "errors")


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (no batch table copy): rows survive in place.
    for name in _COUNTERS:
        op.add_column("rate_limits", sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _COUNTERS:
            op.execute(f"ALTER TABLE rate_limits DROP COLUMN {name}")
    else:
        for name in _COUNTERS:
            op.drop_column("rate_limits", name)
