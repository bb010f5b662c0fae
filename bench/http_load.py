"""The HTTP bench's load: N keep-alive clients repeating one GET, in a process of its own.

``python -m bench.http_load URL PATH_AND_QUERY ETAG CLIENTS PER_CLIENT``
prints one JSON line: requests, seconds, latencies (p50/p99 ms), the status
counts and this process's CPU seconds (what the load itself cost). The
clients speak HTTP/1.1 over raw asyncio streams: a general-purpose client
(httpx) costs more CPU per request than the server under test.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlsplit

import numpy as np


async def _client(
    host: str, port: int, request: bytes, n: int, latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(url: str, target: str, etag: str, clients: int, per_client: int) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nIf-None-Match: {etag}\r\n\r\n").encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_client(host, port, request, per_client, latencies, statuses) for _ in range(clients))
    )
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": {str(k): v for k, v in statuses.items()},
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }


if __name__ == "__main__":
    url, target, etag, clients, per_client = sys.argv[1:6]
    print(json.dumps(asyncio.run(run(url, target, etag, int(clients), int(per_client)))), flush=True)
