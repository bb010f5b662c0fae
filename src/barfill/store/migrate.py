"""Create, upgrade and check the schema with Alembic, on the connection we already have.

``barfill init`` upgrades to head and is idempotent. Every other entry point
calls :func:`require_current` first so that an un-migrated or newer database
is one clear message instead of a traceback from deep inside a query.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from barfill.errors import SchemaMismatch
from barfill.store.db import Database

_MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> tuple[str | None, str]:
    """Bring the schema to head. Returns (revision before, revision after)."""
    before = current_revision(db)
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if before is not None and before not in known:
        raise SchemaMismatch(
            f"the database is at schema revision {before}, which this version of barfill "
            "does not know: it was created by a newer barfill"
        )
    cfg = _config()
    with db.write() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, head_revision()


def require_current(db: Database) -> None:
    """Raise :class:`SchemaMismatch` unless the database is at this version's schema."""
    current = current_revision(db)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaMismatch("the database has no barfill schema: run `barfill init` to create it")
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if current in known:
        raise SchemaMismatch(
            f"the database schema is at {current}, older than this barfill's {head}: "
            "run `barfill init` to upgrade it"
        )
    raise SchemaMismatch(
        f"the database schema is at {current}, which this barfill does not know "
        "(created by a newer version?): upgrade barfill"
    )
