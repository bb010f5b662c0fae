"""Run the HTTP server (uvicorn) in this event loop, next to the scheduler and workers.

Stand-in for the ``http`` branch's serving code, so ``barfill serve`` and
``make demo`` can show the web page; ``stop`` ends everything gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from barfill.bootstrap import App
from barfill.errors import ConfigError
from barfill.live import on_signals
from barfill.server.app import create_app
from barfill.service.orchestrator import run_scheduler
from barfill.service.worker import Worker


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``stop`` (set by :func:`on_signals`) ends everything."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    app: App,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: bool = True,
    scheduler: bool = True,
    concurrency: int | None = None,
    interval_s: float | None = None,
    on_ready: asyncio.Event | None = None,
) -> None:
    """Serve HTTP on ``host:port`` until ``stop`` is set; optionally the scheduler and a worker too."""
    config = uvicorn.Config(
        create_app(app), host=host, port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = _Server(config)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(server.serve())]
    if scheduler:
        tasks.append(asyncio.create_task(run_scheduler(app, stop, interval_s=interval_s)))
    if workers:
        tasks.append(asyncio.create_task(Worker(app, concurrency=concurrency).run(stop)))
    while not server.started and not tasks[0].done():
        await asyncio.sleep(0.05)
    if not server.started:  # uvicorn could not bind: it exits instead of raising
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise ConfigError(f"could not listen on {host}:{port} (in use, or not an address of this machine)")
    if on_ready is not None:
        on_ready.set()
    await stop.wait()
    server.should_exit = True
    await asyncio.gather(*tasks)


async def serve_until_signalled(
    app: App, *, host: str, port: int, announce: Callable[[str], None], **options: Any
) -> None:
    """:func:`serve` until SIGINT/SIGTERM; ``announce`` gets the base URL once the port is open."""
    stop = asyncio.Event()
    on_signals(stop)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(app, stop, host=host, port=port, on_ready=ready, **options))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if ready.is_set():
        announce(f"http://{host}:{port}")
    await task
