"""Command start-up: ``barfill --help`` and ``barfill status`` on a fresh SQLite database.

Each is run as a fresh process, median of ``RUNS`` after warm-up runs (a warm
machine: files cached, bytecode compiled into a scratch ``PYTHONPYCACHEPREFIX``
so the working tree stays clean). Each figure's baseline, measured in the
same run, is the floor that command cannot go below: for ``--help`` the
interpreter importing typer (``python -c 'import typer'``), for ``status``
importing typer, SQLAlchemy and pydantic-settings (what a command reading
the configured database needs). References: the bare interpreter
(``python -c pass``) and a two-command typer app printing its help. Targets:
``--help`` within 0.3 s and ``status`` within 1 s on a warm, unloaded machine;
``extra`` holds the CPU time too (user + system), which a loaded machine
inflates far less than wall time.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result

RUNS = 7
WARMUP = 2
BIN = Path(sys.executable).parent
FLOOR_APP = '''
import typer
app = typer.Typer(add_completion=False, rich_markup_mode=None)
@app.command()
def a(x: int = 1) -> None:
    """A."""
@app.command()
def b() -> None:
    """B."""
app()
'''


def _median_ms(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Median wall and CPU time (ms) of ``argv`` as a fresh process (output discarded; a failure raises)."""
    for _ in range(WARMUP):
        subprocess.run(argv, env=env, check=True, capture_output=True)
    wall, cpu = [], []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BARFILL_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        env["BARFILL_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'startup.db'}"
        barfill = str(BIN / "barfill")
        subprocess.run([barfill, "init"], env=env, check=True, capture_output=True)
        floor_app = Path(tmp) / "floor_app.py"
        floor_app.write_text(FLOOR_APP)

        py = sys.executable
        bare, bare_cpu = _median_ms([py, "-c", "pass"], env)
        app_help, app_cpu = _median_ms([py, str(floor_app), "--help"], env)
        floors = {
            "help": _median_ms([py, "-c", "import typer"], env),
            "status": _median_ms([py, "-c", "import typer, sqlalchemy, pydantic_settings"], env),
        }
        results = [
            Result(
                suite="startup",
                name="reference: typer app --help (2 commands, plain help)",
                value=app_help,
                unit="ms",
                baseline=bare,
                ratio=app_help / bare,
                target="reference",
                extra={"cpu_ms": app_cpu, "python_pass_ms": bare, "python_pass_cpu_ms": bare_cpu},
            )
        ]
        figures = [
            ("barfill --help vs import typer", [barfill, "--help"], "help", 0.3),
            ("barfill status (fresh SQLite) vs its imports", [barfill, "status"], "status", 1.0),
        ]
        for name, argv, floor_name, target_s in figures:
            ms, cpu = _median_ms(argv, env)
            floor, floor_cpu = floors[floor_name]
            results.append(
                Result(
                    suite="startup",
                    name=name,
                    value=ms,
                    unit="ms",
                    baseline=floor,
                    ratio=ms / floor,
                    target=f"<= {target_s} s",
                    extra={
                        "runs": RUNS,
                        "cpu_ms": cpu,
                        "floor_cpu_ms": floor_cpu,
                        "python_pass_ms": bare,
                        "vs_python_pass": ms / bare,
                        "typer_app_help_ms": app_help,
                    },
                )
            )
        return results
