"""Command start-up: ``barfill --help`` and ``barfill status`` on a fresh SQLite database.

Each is run as a fresh process, median of ``RUNS`` after warm-up runs (a warm
machine: files cached, bytecode compiled into a scratch ``PYTHONPYCACHEPREFIX``
so the working tree stays clean). The baseline, measured in the same run, is
the interpreter starting and doing nothing (``python -c pass``); a second
reference is a two-command typer app printing its rich help, the floor any
typer command line with rich help pays on this machine. Targets: ``--help``
within 0.3 s and ``status`` within 1 s on a warm, unloaded machine.
"""

from __future__ import annotations

import os
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
app = typer.Typer(add_completion=False)
@app.command()
def a(x: int = 1) -> None:
    """A."""
@app.command()
def b() -> None:
    """B."""
app()
'''


def _median_ms(argv: list[str], env: dict[str, str]) -> float:
    """Median wall time (ms) of ``argv`` as a fresh process (output discarded; a failure raises)."""
    for _ in range(WARMUP):
        subprocess.run(argv, env=env, check=True, capture_output=True)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


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

        bare = _median_ms([sys.executable, "-c", "pass"], env)
        floor = _median_ms([sys.executable, str(floor_app), "--help"], env)
        figures = [
            ("barfill --help", [barfill, "--help"], 0.3),
            ("barfill status (fresh SQLite)", [barfill, "status"], 1.0),
        ]
        results = [
            Result(
                suite="startup",
                name="reference: typer app --help (2 commands)",
                value=floor,
                unit="ms",
                baseline=bare,
                ratio=floor / bare,
                target="reference",
                extra={"python_pass_ms": bare},
            )
        ]
        for name, argv, target_s in figures:
            ms = _median_ms(argv, env)
            results.append(
                Result(
                    suite="startup",
                    name=f"{name} vs python -c pass",
                    value=ms,
                    unit="ms",
                    baseline=bare,
                    ratio=ms / bare,
                    target=f"<= {target_s} s",
                    extra={
                        "runs": RUNS,
                        "python_pass_ms": bare,
                        "typer_floor_ms": floor,
                        "over_typer_floor_ms": ms - floor,
                    },
                )
            )
        return results
