"""Logging for ``barfill serve``: plain text, or one JSON object a line (``--log-format json``).

A JSON line holds ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``message``
and, for requests, ``http`` (method, route template, status, duration, key
id). Request logs never carry headers, query strings or bodies, so a key or a
provider secret cannot reach them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        http = getattr(record, "http", None)
        if http is not None:
            line["http"] = http
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(fmt: str) -> None:
    """Send barfill's logs (and uvicorn's errors) to stderr as ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("barfill", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
