"""job_runs.layer: a slice says which layer it fills (historical = final, intraday = provisional)

Existing slices become ``historical`` (the server default); the unique key now
includes the layer, so a range can have one final and one provisional slice.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OLD_KEY = ["definition_id", "start", "end", "provider"]


def _drop_partial_indexes() -> None:
    # SQLite rebuilds the table in batch mode; partial and expression indexes are
    # dropped first and re-created after, exactly as declared, instead of reflected.
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
    _drop_partial_indexes()
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("layer", sa.String(length=12), server_default="historical", nullable=False)
        )
        batch_op.drop_constraint(op.f("uq_job_runs_definition_id_start_end_provider"), type_="unique")
        batch_op.create_unique_constraint(
            op.f("uq_job_runs_definition_id_start_end_provider_layer"), [*_OLD_KEY, "layer"]
        )
    _create_partial_indexes()


def downgrade() -> None:
    _drop_partial_indexes()
    # Provisional slices have no place in the old key: a final twin may share their range.
    op.execute("DELETE FROM job_runs WHERE layer <> 'historical'")
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_job_runs_definition_id_start_end_provider_layer"), type_="unique")
        batch_op.create_unique_constraint(op.f("uq_job_runs_definition_id_start_end_provider"), _OLD_KEY)
        batch_op.drop_column("layer")
    _create_partial_indexes()
