"""The schema check every command runs first reads revisions without Alembic: it must agree with it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from barfill.errors import SchemaMismatch
from barfill.store import migrate
from barfill.store.db import Database


def alembic_current(db: Database) -> str | None:
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_head_is_alembics_head() -> None:
    head = ScriptDirectory.from_config(migrate._config()).get_current_head()
    assert head is not None
    assert migrate.head_revision() == head


def test_current_revision_agrees_with_alembic_at_head_empty_and_without_table(db: Database) -> None:
    assert migrate.current_revision(db) == alembic_current(db) == migrate.head_revision()
    migrate.require_current(db)  # at head: passes

    with db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    assert migrate.current_revision(db) == alembic_current(db) == "0001"
    try:
        migrate.require_current(db)
        raised = ""
    except SchemaMismatch as e:
        raised = str(e)
    assert "older than" in raised and "barfill init" in raised

    with db.write() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))
    assert migrate.current_revision(db) is None and alembic_current(db) is None

    with db.write() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    assert migrate.current_revision(db) is None and alembic_current(db) is None
