"""Serving the HTTP app from code: ``make demo``'s final step and the browser tests' live server.

Both build the same application as ``barfill serve`` (:func:`create_app` with
the worker, and optionally the scheduler, in its lifespan).
"""

from __future__ import annotations

from collections.abc import Callable

import uvicorn

from barfill.bootstrap import App
from barfill.server.app import ServerOptions, create_app
from barfill.server.deps import check_bind


def make_server(
    app: App, *, host: str = "127.0.0.1", port: int = 8000, options: ServerOptions | None = None
) -> uvicorn.Server:
    """A uvicorn server for ``app``; ``serve()`` it in a loop, set ``should_exit`` to stop it."""
    opts = options or ServerOptions(host=host, workers=True, scheduler=True)
    config = uvicorn.Config(
        create_app(app, opts),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    return uvicorn.Server(config)


def serve_forever(app: App, *, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve the API and the web page (worker and scheduler included) until Ctrl-C."""
    check_bind(app, host)
    server = make_server(app, host=host, port=port)
    announce(f"http://{host}:{port}")
    server.run()
