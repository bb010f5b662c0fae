"""The migrated schema equals the declared metadata, and the schema check speaks clearly."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from barfill.errors import SchemaMismatch
from barfill.store import migrate
from barfill.store.db import Database
from barfill.store.schema import metadata


def test_migrated_schema_equals_metadata(db: Database) -> None:
    with db.read() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    migrate.require_current(db)


def test_init_is_idempotent(db: Database) -> None:
    before, after = migrate.upgrade(db)
    assert before == after == migrate.head_revision()


def test_unmigrated_database_is_a_clear_error(empty_db: Database) -> None:
    with pytest.raises(SchemaMismatch, match="barfill init"):
        migrate.require_current(empty_db)
    migrate.upgrade(empty_db)
    migrate.require_current(empty_db)


def test_newer_schema_is_refused(db: Database) -> None:
    with db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_from_future'"))
    with pytest.raises(SchemaMismatch, match="newer"):
        migrate.require_current(db)
    with pytest.raises(SchemaMismatch, match="newer"):
        migrate.upgrade(db)
