"""Re-verification and bad bars: bars.flag, job_runs.purpose, verifications, corrections

Revision ID: 0008
Revises: 0007

Existing bars start unflagged and existing slices are ``fill`` slices; the
slice key now includes the purpose, so a session can have one fill and one
verify slice over the same range. Nothing is scheduled for re-verification
before this revision: sessions are recorded as their final bars land.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_OLD_KEY = ["definition_id", "start", "end", "provider", "layer"]


def _drop_partial_indexes() -> None:
    # SQLite rebuilds job_runs in batch mode: partial indexes are dropped first and
    # re-created after, exactly as declared, instead of reflected.
    op.drop_index("ix_job_runs_runnable", table_name="job_runs")
    op.drop_index("ix_job_runs_running_lease", table_name="job_runs")


def _create_partial_indexes() -> None:
    op.create_index(
        "ix_job_runs_runnable",
        "job_runs",
        [sa.literal_column("priority").desc(), "not_before", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_job_runs_running_lease",
        "job_runs",
        ["lease_until"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )


def upgrade() -> None:
    # Plain ADD COLUMN (no table copy of bars): rows survive in place.
    op.add_column("bars", sa.Column("flag", sa.String(length=16), nullable=True))
    _drop_partial_indexes()
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=8), server_default="fill", nullable=False))
        batch_op.drop_constraint(op.f("uq_job_runs_definition_id_start_end_provider_layer"), type_="unique")
        batch_op.create_unique_constraint(
            op.f("uq_job_runs_definition_id_start_end_provider_layer_purpose"), [*_OLD_KEY, "purpose"]
        )
        batch_op.create_check_constraint(op.f("ck_job_runs_purpose"), "purpose IN ('fill', 'verify')")
    _create_partial_indexes()
    op.create_table(
        "verifications",
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("timeframe", sa.String(length=4), nullable=False),
        sa.Column("session", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("due_at", sa.Double(), nullable=False),
        sa.Column("verified_at", sa.Double(), nullable=True),
        sa.Column("corrections", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("symbol_id", "timeframe", "session", name=op.f("pk_verifications")),
    )
    op.create_index(
        "ix_verifications_due_at",
        "verifications",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("verified_at IS NULL"),
        sqlite_where=sa.text("verified_at IS NULL"),
    )
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("symbol_id", sa.Integer(), nullable=False),
        sa.Column("timeframe", sa.String(length=4), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("old_values", sa.Text(), nullable=True),
        sa.Column("new_values", sa.Text(), nullable=True),
        sa.Column("detected_at", sa.Double(), nullable=False),
        sa.CheckConstraint("kind IN ('changed', 'added', 'removed')", name=op.f("ck_corrections_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corrections")),
    )
    op.create_index(op.f("ix_corrections_detected_at"), "corrections", ["detected_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_corrections_detected_at"), table_name="corrections")
    op.drop_table("corrections")
    op.drop_index("ix_verifications_due_at", table_name="verifications")
    op.drop_table("verifications")
    _drop_partial_indexes()
    # Verify slices have no place in the old key: a fill twin may share their range.
    op.execute("DELETE FROM job_runs WHERE purpose <> 'fill'")
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_job_runs_purpose"), type_="check")
        batch_op.drop_constraint(
            op.f("uq_job_runs_definition_id_start_end_provider_layer_purpose"), type_="unique"
        )
        batch_op.create_unique_constraint(
            op.f("uq_job_runs_definition_id_start_end_provider_layer"), _OLD_KEY
        )
        batch_op.drop_column("purpose")
    _create_partial_indexes()
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE bars DROP COLUMN flag")
    else:
        op.drop_column("bars", "flag")
