"""Create, upgrade and check the schema with Alembic, on the connection we already have.

``barfill init`` upgrades to head and is idempotent. Every other entry point
calls :func:`require_current` first so that an un-migrated or newer database
is one clear message instead of a traceback from deep inside a query.

The check that passes (database at head) does without Alembic, whose import
and loading of every migration script would dominate a short command such as
``barfill status``: the head comes from the scripts' ``revision`` /
``down_revision`` literals and the current revision from ``alembic_version``.
Anything unusual (several heads, a script not in that simple form, several
rows in ``alembic_version``) is left to Alembic, so the answer is the same.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from barfill.errors import SchemaMismatch
from barfill.store.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def _literal_links(path: Path) -> tuple[str, str | None] | None:
    """``(revision, down_revision)`` of one script when both are plain literals, else None."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("revision", "down_revision") and isinstance(node.value, ast.Constant):
                found[name] = node.value.value
    revision, down = found.get("revision"), found.get("down_revision", ...)
    if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
        return None
    return revision, down


def _scanned_head() -> str | None:
    """The one head of a simple chain of scripts, read without Alembic; None if not that simple."""
    links: dict[str, str | None] = {}
    for path in sorted((_MIGRATIONS / "versions").glob("*.py")):
        pair = _literal_links(path)
        if pair is None:
            return None
        links[pair[0]] = pair[1]
    heads = set(links) - {d for d in links.values() if d is not None}
    return heads.pop() if len(heads) == 1 else None


def head_revision() -> str:
    """This barfill's schema revision (Alembic's answer; see the module docstring)."""
    head = _scanned_head()
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The database's schema revision, None when it has no barfill schema."""
    with db.read() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(rows) <= 1:
            return None if not rows else str(rows[0])
        from alembic.runtime.migration import MigrationContext  # several heads: Alembic's error

        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> tuple[str | None, str]:
    """Bring the schema to head. Returns (revision before, revision after)."""
    from alembic import command  # the migration machinery; `require_current` does without it
    from alembic.script import ScriptDirectory

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
    from alembic.script import ScriptDirectory

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
