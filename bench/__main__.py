"""Run every benchmark suite, print one table, write ``bench/results.json`` and ``bench/REPORT.md``.

Each suite is a module in ``bench/`` with ``run() -> list[Result]``. Pass
suite names to run only those: ``python -m bench store queue`` (a partial run
writes ``results.json`` but leaves ``REPORT.md`` alone: the report is one
whole run). A suite that raises is reported as failed; the others still run.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import report
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
    "ingest",
    "http",
    "startup",
    "adjust",
]
HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    chosen = argv or SUITES
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        print(f"unknown suite(s) {unknown}: expected some of {SUITES}", file=sys.stderr)
        return 2
    started, load_before = datetime.now(UTC), report.load_now()
    results: list[Result] = []
    failures: list[tuple[str, str]] = []
    console = Console(width=160)
    for name in chosen:
        console.print(f"[bold]bench {name}[/bold] ...")
        try:
            results.extend(importlib.import_module(f"bench.{name}").run())
        except Exception as e:  # one broken suite must not cost the whole run's figures
            traceback.print_exc()
            failures.append((name, f"{type(e).__name__}: {e}"))
    table = Table(title="barfill benchmarks")
    for col in ("suite", "figure", "value", "baseline", "ratio", "target", "met"):
        table.add_column(col)
    for r in results:
        met = report.target_met(r)
        table.add_row(
            r.suite,
            r.name,
            f"{r.value:,.2f} {r.unit}",
            "" if r.baseline is None else f"{r.baseline:,.2f}",
            "" if r.ratio is None else f"{r.ratio:.3f}",
            r.target,
            "" if met is None else ("yes" if met else "[red]no[/red]"),
        )
    console.print(table)
    out = HERE / "results.json"
    out.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    console.print(f"wrote {out}")
    if chosen == SUITES:
        path = HERE / "REPORT.md"
        report.write(
            path, results, suites=chosen, failures=failures, started=started, load_before=load_before
        )
        console.print(f"wrote {path}")
    else:
        console.print("partial run: bench/REPORT.md left as it was (it is written by a run of every suite)")
    for name, error in failures:
        console.print(f"[red]suite {name} failed[/red]: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
