"""Rate-limited hydration as a user runs it: `barfill serve` and `barfill ensure --wait`, two processes.

The scenario of issue #11: 8 symbols x 2 years of m15 (default derivations) from a
local Polygon-wire server whose data is generated ahead and which answers 429
whenever more than 4 requests arrive within any 1 s (a strict sliding window over
every arrival, refused ones included). barfill is told exactly that limit
(``BARFILL_POLYGON_RATE_LIMIT=4/1``). ``barfill serve`` (HTTP + scheduler + a
worker) runs in one process; the clock runs around ``barfill ensure ... --provider
polygon --wait`` in another (which runs a worker too), from its spawn to its exit.

Figures, each per database (SQLite, PostgreSQL), over ``RUNS`` fresh runs:

* **whole command ÷ ideal**, the ideal being ``requests ÷ 4 s`` (requests counted
  at the server): the target is <= 1.10;
* **first-to-last request ÷ ((requests - 1) ÷ 4 s)**: the pipeline's pace alone,
  without start-up and the last commit (about 1.0: the limiter's sliding log
  sends N per period + 3 % margin, and the first N of the job half a spacing
  apart instead of one);
* **429s** seen by the server: the target is 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from barfill.domain.calendar import get_calendar
from bench.common import Result, scratch_database
from bench.providers import KEY, RateLimitedServer
from tests.integration.providers.servers import PolygonWire, Truth

N, WINDOW_S = 4, 1.0
SYMBOLS = [f"R{i:02d}" for i in range(8)]
START, END = "2024-11-20", "2026-11-19"  # two years, all final
RUNS = 2
TARGET = 1.10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(db_url: str, server_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARFILL_")}
    env.update(
        {
            "BARFILL_DATABASE_URL": db_url,
            "BARFILL_POLYGON_API_KEY": KEY,
            "BARFILL_POLYGON_BASE_URL": server_url,
            "BARFILL_POLYGON_RATE_LIMIT": f"{N}/{WINDOW_S:g}",
            "BARFILL_HISTORICAL_PROVIDERS": '["polygon"]',
        }
    )
    return env


@contextlib.contextmanager
def _serving(env: dict[str, str], cwd: Path) -> Iterator[str]:
    """``barfill serve`` on a free port until it answers ``/healthz``; SIGTERM on exit."""
    port = _free_port()
    barfill = Path(sys.executable).parent / "barfill"
    log = (cwd / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(barfill), "serve", "--port", str(port)], env=env, cwd=cwd, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {(cwd / 'serve.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not answer /healthz in 60 s")
            time.sleep(0.1)
        time.sleep(1.0)  # past start-up: its worker polls an empty queue
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _one_run(kind: str) -> dict[str, float]:
    calendar = get_calendar("XNYS")
    wire = PolygonWire(Truth(calendar), KEY)
    wire.page_size = 50_000
    server = RateLimitedServer(wire, N, WINDOW_S)
    with tempfile.TemporaryDirectory() as tmp, scratch_database(kind) as db, server:
        cwd = Path(tmp)  # no ./barfill.toml from the repo can leak in
        env = _env(db.url, server.url)
        with _serving(env, cwd):
            barfill = Path(sys.executable).parent / "barfill"
            args = [str(barfill), "ensure", *SYMBOLS, "-t", "m15", "--start", START, "--end", END]
            args += ["--provider", "polygon", "--wait"]
            t0 = time.monotonic()  # the server stamps arrivals on this clock too
            done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, timeout=600)
            wall = time.monotonic() - t0
        if done.returncode != 0:
            raise RuntimeError(f"ensure failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    arrivals = [t for t, _ in server.arrivals]
    answered = len(arrivals) - server.refused
    return {
        "wall_s": wall,
        "requests": float(answered),
        "refused": float(server.refused),
        "first_s": arrivals[0] - t0,
        "last_s": arrivals[-1] - t0,
        "span_s": arrivals[-1] - arrivals[0],
        "max_in_window": float(server.max_in_window()),
    }


def run() -> list[Result]:
    results: list[Result] = []
    for kind in ("sqlite", "postgresql"):
        runs = [_one_run(kind) for _ in range(RUNS)]
        walls = [r["wall_s"] / (r["requests"] * WINDOW_S / N) for r in runs]
        paces = [r["span_s"] / ((r["requests"] - 1) * WINDOW_S / N) for r in runs]
        worst = max(range(RUNS), key=lambda i: walls[i])
        w = runs[worst]
        extra = {
            "runs": RUNS,
            "ratios": [round(x, 3) for x in walls],
            "pace_ratios": [round(x, 3) for x in paces],
            "requests": [int(r["requests"]) for r in runs],
            "first_request_at_s": [round(r["first_s"], 2) for r in runs],
            "after_last_request_s": [round(r["wall_s"] - r["last_s"], 2) for r in runs],
            "server_max_in_1s": [int(r["max_in_window"]) for r in runs],
        }
        name = f"{len(SYMBOLS)} symbols m15 2y, serve + ensure --wait, polygon {N}/s strict, {kind}"
        results.append(
            Result(
                "ratelimited",
                f"{name}: whole command vs requests/rate (worst run)",
                w["wall_s"],
                "s",
                w["requests"] * WINDOW_S / N,
                walls[worst],
                f"<= {TARGET}",
                extra,
            )
        )
        results.append(
            Result(
                "ratelimited",
                f"{name}: first-to-last request vs (requests-1)/rate (worst run)",
                max(r["span_s"] for r in runs),
                "s",
                None,
                max(paces),
                "~1.0 (N per period + margin)",
            )
        )
        results.append(
            Result(
                "ratelimited",
                f"{name}: 429s over {RUNS} runs",
                sum(r["refused"] for r in runs),
                "429s",
                target="<= 0",
                extra={"requests_seen": [int(r["requests"] + r["refused"]) for r in runs]},
            )
        )
    return results
