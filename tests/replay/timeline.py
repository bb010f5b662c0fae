"""What each configuration does, step by step: ``python -m tests.replay.timeline [scenario]``.

Runs every configuration of the replay on a throwaway SQLite database and
prints a Markdown table: for each step (New York time), which server was asked
for which session of which timeframe (``F`` final at request time, ``P``
provisional) and how the worker's slices ended (ok / retried / failed).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path

from barfill.store import migrate
from barfill.store.db import Database
from tests.integration.providers.servers import NY
from tests.replay.harness import CONFIGS, DST, THANKSGIVING, Replay, replay


def cells(r: Replay) -> dict[int, str]:
    """Step time -> what happened in that step, in a few words."""
    times = [at for at, _ in r.outcomes]
    out: dict[int, str] = {}
    for k, (at, stats) in enumerate(r.outcomes):
        until = times[k + 1] if k + 1 < len(times) else float("inf")
        groups: dict[tuple[str, str, bool], set[date]] = {}
        for q in r.log.requests:
            if at <= q.at < until:
                groups.setdefault((q.server, q.timeframe.value, q.final), set()).add(q.session)
        asked = [
            f"{server} {tf} {_span(sorted(days))}{'F' if final else 'P'}"
            for (server, tf, final), days in sorted(groups.items())
        ]
        done = f"ok {stats.succeeded}" + (f", retried {stats.retried}" if stats.retried else "")
        done += f", FAILED {stats.failed}" if stats.failed else ""
        out[at] = ("; ".join(asked) or "-") + f" ({done})"
    return out


def _span(days: list[date]) -> str:
    if len(days) == 1:
        return f"{days[0]:%m-%d}"
    return f"{days[0]:%m-%d}..{days[-1]:%m-%d} ({len(days)})"


def main(argv: list[str]) -> None:
    scenario = DST if argv[:1] == ["dst-end"] else THANKSGIVING
    columns: dict[str, dict[int, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in CONFIGS:
            path = Path(tmp) / config.name
            path.mkdir()
            db = Database(f"sqlite:///{path / 'replay.db'}")
            migrate.upgrade(db)
            r = asyncio.run(replay(db.url, config, scenario, path))
            columns[config.name] = cells(r)
            r.app.close()
            db.dispose()
    steps = sorted({at for col in columns.values() for at in col})
    print("| New York | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for at in steps:
        when = f"{datetime.fromtimestamp(at, NY):%a %m-%d %H:%M}"
        print(f"| {when} | " + " | ".join(col.get(at, "") for col in columns.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
