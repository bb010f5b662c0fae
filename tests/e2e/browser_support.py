"""Pieces of the browser tests: a gated synthetic provider, a live server in a thread, Chromium.

The provider holds every fetch until the test releases it, so what the page
shows at each step is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from barfill.bootstrap import App
from barfill.domain.bars import BarBatch
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.app import ServerOptions
from barfill.server.run import make_server

CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root (no sandbox), and silent: no background calls home from the browser itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--metrics-recording-only",
]


class GatedProvider(SyntheticProvider):
    """The synthetic provider, but each fetch waits until the test lets it through.

    With a one-slice worker, fetches arrive in the order the queue hands out
    slices, so releasing them one by one shows that order on the page.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._pending: list[tuple[int, int]] = []  # (end, start) of fetches waiting
        self._allowed: set[tuple[int, int]] = set()
        self.open_all = False
        self.failure: ProviderError | None = None  # raised by every fetch once set

    async def fetch(
        self, symbols: Sequence[str], timeframe: Timeframe, start: int, end: int
    ) -> dict[str, BarBatch]:
        key = (int(end), int(start))
        with self._lock:
            self._pending.append(key)
        while True:
            with self._lock:
                if self.open_all or key in self._allowed:
                    self._allowed.discard(key)
                    self._pending.remove(key)
                    break
            await asyncio.sleep(0.02)
        if self.failure is not None:
            raise self.failure
        return await super().fetch(symbols, timeframe, start, end)

    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)

    def release_next(self, n: int = 1) -> int:
        """Let the ``n`` longest-waiting fetches through (arrival order); returns how many were let."""
        with self._lock:
            chosen = [k for k in self._pending if k not in self._allowed][:n]
            self._allowed.update(chosen)
            return len(chosen)

    def release_all(self) -> None:
        with self._lock:
            self.open_all = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    base: str
    app: App
    errors: list[BaseException] = field(default_factory=list)


@contextmanager
def live_server(app: App, *, concurrency: int = 16, workers: bool = True) -> Iterator[LiveServer]:
    """The same HTTP app as ``barfill serve`` (worker in its lifespan) on 127.0.0.1, in a thread."""
    port = free_port()
    options = ServerOptions(host="127.0.0.1", workers=workers, scheduler=False, concurrency=concurrency)
    server = make_server(app, host="127.0.0.1", port=port, options=options)
    live = LiveServer(f"http://127.0.0.1:{port}", app)

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as e:  # surfaced below
            live.errors.append(e)

    thread = threading.Thread(target=run, name="barfill-test-server", daemon=True)
    thread.start()
    for _ in range(1200):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.started, f"the test server did not start: {live.errors}"
    try:
        yield live
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "the test server did not stop"
        assert not live.errors, live.errors
