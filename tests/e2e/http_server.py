"""A real uvicorn server on 127.0.0.1 (random free port) around a barfill App, for HTTP tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from barfill.bootstrap import App
from barfill.server.app import ServerOptions, create_app


class LiveServer:
    """uvicorn in a background thread (its own event loop), on a socket bound before it starts."""

    def __init__(self, app: App, options: ServerOptions | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.fastapi_app = create_app(app, options)
        config = uvicorn.Config(
            self.fastapi_app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream response into ``{id, event, data}`` dicts (comments skipped)."""
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in fields:
                fields["data"] = json.loads(fields.get("data", "null"))
                yield fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
