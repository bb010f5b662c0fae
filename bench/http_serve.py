"""The HTTP bench's server: ``barfill serve``'s application in a process of its own.

``python -m bench.http_serve DATABASE_URL [--workers] [--latency S]`` serves
on a free 127.0.0.1 port (printed as ``listening http://...``) with the
synthetic provider, until it is terminated. A process apart from the load so
the two never share a GIL.
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn

from barfill.bootstrap import build
from barfill.config import load_settings
from barfill.domain.calendar import get_calendar
from barfill.providers.synthetic import SyntheticProvider
from barfill.server.app import ServerOptions, create_app


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("--workers", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    provider = SyntheticProvider(calendar=get_calendar(), latency_s=args.latency)
    settings = load_settings(database_url=args.database_url, api_rate_limit="100000000/1")
    app = build(settings, providers={"synthetic": provider})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(app, ServerOptions(workers=args.workers)),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=60,
        backlog=1024,
    )
    server = uvicorn.Server(config)
    print(f"listening http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        app.close()


if __name__ == "__main__":
    main(sys.argv[1:])
