"""Start-up: which modules a short command loads (a behaviour; the speed is in ``bench/startup.py``).

``barfill --help`` must not import the data, database or web stacks, and
``barfill status`` only the database layer: each heavy package named here
costs a user hundreds of milliseconds on every invocation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from barfill.store import migrate
from barfill.store.db import Database
from tests.e2e.helpers import clean_env

HEAVY = ("pandas", "polars", "pyarrow", "numpy", "exchange_calendars", "httpx", "fastapi", "uvicorn")
DATABASE = ("sqlalchemy", "alembic", "psycopg", "pydantic")

# Runs argv through the CLI in-process, then prints the loaded top-level packages of interest.
PROBE = """
import json, sys
from barfill.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = int(e.code or 0)
names = {m.split(".")[0] for m in sys.modules}
print("\\nPROBE " + json.dumps({"code": code, "loaded": sorted(names)}))
"""


def probe(db_url: str, *argv: str) -> tuple[int, str, set[str]]:
    """Exit code, stdout before the probe line, and the packages loaded by ``barfill argv``."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        env=clean_env(db_url),
        capture_output=True,
        text=True,
        check=True,
    )
    text, _, tail = done.stdout.rpartition("\nPROBE ")
    answer = json.loads(tail)
    return answer["code"], text, set(answer["loaded"])


def test_importing_the_cli_loads_only_the_command_line_stack(tmp_path: Path) -> None:
    code = "import json, sys, barfill.cli; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(f"sqlite:///{tmp_path / 'x.db'}"),
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(done.stdout))
    assert {"typer", "barfill"} <= loaded
    assert loaded.isdisjoint((*HEAVY, *DATABASE, "rich"))


def test_help_lists_the_commands_without_loading_heavy_packages(tmp_path: Path) -> None:
    code, out, loaded = probe(f"sqlite:///{tmp_path / 'x.db'}", "--help")
    assert code == 0
    for command in ("ensure", "status", "worker", "serve", "export", "jobs", "keys"):
        assert command in out
    # Plain help: rich (and typer's Markdown parser) load only when a command prints.
    assert loaded.isdisjoint((*HEAVY, *DATABASE, "rich", "markdown_it"))


def test_status_on_a_fresh_database_loads_the_database_layer_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    db = Database(url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()
    code, out, loaded = probe(url, "status", "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["counts"]["queued"] == 0 and answer["definitions"] == 0 and answer["bars"] == 0
    assert "sqlalchemy" in loaded
    assert loaded.isdisjoint((*HEAVY, "alembic", "rich"))
