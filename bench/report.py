"""``bench/REPORT.md``: every figure of one run, with its baseline, ratio, target and the machine.

Generic over :class:`~bench.common.Result`: a new suite's figures appear
without code here. Whether a target is met is read from the target text when
it has the form ``<= X``, ``>= X``, ``< X`` or ``> X`` (optionally with a unit):
with a unit, against the value (``ms`` and ``s`` convert); with ``x`` or after
``ratio``, against the ratio; without one, against the ratio when there is
one, else the value. Every part of a compound target must be met. Other targets
(``reference``, ``~10 (linear)``) are shown as they are.
"""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from bench.common import PG_URL, Result

_TARGET = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([A-Za-z/%]+)?")
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def target_met(r: Result) -> bool | None:
    """Whether ``r`` meets its target; None when no part of it is a comparison (or comparable).

    A compound target ("p50 <= 10 ms, ratio <= 2", ">= 200,000 bars/s and ratio >= 0.5") is met only
    if every comparable part is: reading the first part alone called a 0.47 upsert ratio "met".
    """
    verdicts = [_clause_met(r, part) for part in _CLAUSES.split(r.target)]
    known = [v for v in verdicts if v is not None]
    if not known:
        return None
    return all(known)


_CLAUSES = re.compile(r"\s+and\s+|,\s+")
_SUBJECT = re.compile(r"^\s*(ratio|p\d+)\s+")


def _clause_met(r: Result, clause: str) -> bool | None:
    subject = _SUBJECT.match(clause)
    m = _TARGET.match(clause[subject.end() :] if subject else clause)
    if m is None:
        return None
    op, bound_text, unit = m.groups()
    bound = float(bound_text.replace(",", ""))
    if (subject is not None and subject.group(1) == "ratio") or unit == "x":
        got = r.ratio
    elif unit:
        if unit == r.unit:
            got = r.value
        elif unit in _SECONDS and r.unit in _SECONDS:
            got = r.value * _SECONDS[r.unit] / _SECONDS[unit]
        else:
            return None
    else:
        got = r.ratio if r.ratio is not None else r.value
    if got is None:
        return None
    return {"<=": got <= bound, ">=": got >= bound, "<": got < bound, ">": got > bound}[op]


def _first_line(path: str, key: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _postgres_version() -> str:
    try:
        dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"
    except psycopg.Error as e:
        return f"unavailable ({type(e).__name__})"


def _git_head() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str]:
    """What the figures were measured on (RAM from /proc/meminfo, CPU from /proc/cpuinfo)."""
    mem_kb = _first_line("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(mem_kb) / 2**20:.1f} GiB" if mem_kb.isdigit() else "unknown"
    return {
        "CPU": _first_line("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "RAM": ram,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": _postgres_version(),
        "commit": _git_head(),
    }


def load_now() -> str:
    """The 1/5/15-minute load averages now (a busy machine inflates every wall-clock figure)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _extra(r: Result) -> str:
    parts = []
    for k, v in r.extra.items():
        shown = f"{v:,.2f}" if isinstance(v, float) else str(v)
        parts.append(f"{k}={shown}")
    return _cell("; ".join(parts))


def render(
    results: Sequence[Result],
    *,
    suites: Sequence[str],
    failures: Sequence[tuple[str, str]],
    started: datetime,
    load_before: str,
    info: dict[str, str],
) -> str:
    """The report as Markdown."""
    finished = datetime.now(UTC)
    met = [target_met(r) for r in results]
    lines = [
        "# barfill benchmarks",
        "",
        f"One run of `make bench` (suites: {', '.join(suites)}), "
        f"{started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC. Every ratio is against a baseline "
        'measured in the same run; "met" reads the target (blank: a reference figure).',
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {_cell(v)} |" for k, v in info.items()),
        f"| date | {started:%Y-%m-%d} |",
        f"| load average (1/5/15 min) | before {load_before}; after {load_now()} |",
        "",
        "## Summary",
        "",
        f"{len(results)} figures; {sum(m is True for m in met)} targets met, "
        f"{sum(m is False for m in met)} missed, {sum(m is None for m in met)} without a comparable target.",
    ]
    if failures:
        lines += ["", "**Suites that failed** (their figures are missing):", ""]
        lines += [f"- `{name}`: {_cell(error)}" for name, error in failures]
    missed = [r for r, m in zip(results, met, strict=True) if m is False]
    if missed:
        lines += ["", "Missed:", ""]
        for r in missed:
            got = f"{_number(r.value)} {r.unit}" + ("" if r.ratio is None else f", ratio {_number(r.ratio)}")
            lines.append(f"- {r.suite}: {_cell(r.name)}: {got}; target {_cell(r.target)}")
    lines += [
        "",
        "## Figures",
        "",
        "| suite | figure | value | baseline | ratio | target | met | details |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r, m in zip(results, met, strict=True):
        verdict = "" if m is None else ("yes" if m else "**no**")
        lines.append(
            f"| {r.suite} | {_cell(r.name)} | {_number(r.value)} {r.unit} | {_number(r.baseline)} "
            f"| {_number(r.ratio)} | {_cell(r.target)} | {verdict} | {_extra(r)} |"
        )
    return "\n".join(lines) + "\n"


def write(
    path: Path,
    results: Sequence[Result],
    *,
    suites: Sequence[str],
    failures: Sequence[tuple[str, str]],
    started: datetime,
    load_before: str,
) -> None:
    text = render(
        results, suites=suites, failures=failures, started=started, load_before=load_before, info=machine()
    )
    path.write_text(text, encoding="utf-8")
