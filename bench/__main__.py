"""Run every benchmark suite, print one table, write ``bench/results.json``.

Each suite is a module in ``bench/`` with ``run() -> list[Result]``. Pass
suite names to run only those: ``python -m bench store queue``.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import Result

SUITES = [
    "store",
    "queue",
    "planner",
    "providers",
    "ratelimited",
    "density",
    "synthetic",
    "engine",
    "http",
    "startup",
]


def main(argv: list[str]) -> int:
    chosen = argv or SUITES
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        print(f"unknown suite(s) {unknown}: expected some of {SUITES}", file=sys.stderr)
        return 2
    results: list[Result] = []
    console = Console(width=160)
    for name in chosen:
        console.print(f"[bold]bench {name}[/bold] ...")
        module = importlib.import_module(f"bench.{name}")
        results.extend(module.run())
    table = Table(title="barfill benchmarks")
    for col in ("suite", "figure", "value", "baseline", "ratio", "target"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.suite,
            r.name,
            f"{r.value:,.2f} {r.unit}",
            "" if r.baseline is None else f"{r.baseline:,.2f}",
            "" if r.ratio is None else f"{r.ratio:.3f}",
            r.target,
        )
    console.print(table)
    out = Path(__file__).parent / "results.json"
    out.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
