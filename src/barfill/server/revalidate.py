"""A chart's revalidation (``GET /v1/bars/...`` with ``If-None-Match``) answered before FastAPI runs.

A chart polls its bars; nearly every poll is a 304. Through FastAPI (routing,
dependency solving, parameter validation) that costs several times the check
itself, so this ASGI middleware answers it directly when everything it needs
is already in this process's memory:

* the caller is known to :meth:`Auth.known <barfill.server.deps.Auth.known>`
  (anonymous on loopback, or a key checked within the last seconds) and may
  read; a keyed caller's request still takes a slot of its rate limit;
* the read is in the :class:`~barfill.server.read_cache.ReadCache` under the
  current data version, and its ETag is one the client sent.

Anything else — an unknown parameter, a repeated one, a cold cache, a
changed ETag, a caller over its rate — goes on to the route unchanged, which
then answers exactly as it always does. The request still passes every outer
middleware (metrics, logs, CORS, body limit).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from barfill.domain.apikeys import Scope as KeyScope
from barfill.domain.apikeys import allows
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.server.bars_route import bars_format
from barfill.server.deps import ANONYMOUS, Auth
from barfill.server.read_cache import BarReads, default_end, etag_matches, format_etag

PREFIX = "/v1/bars/"
ROUTE = "/v1/bars/{symbol}"
_PARAMS = frozenset({"timeframe", "start", "end", "layers", "limit", "format", "adjust"})
_FORMATS = frozenset({"json", "csv", "parquet", "arrow"})


class RevalidateBars:
    """ASGI middleware: 304 for a known, unchanged bar read; everything else passes through."""

    def __init__(self, app: ASGIApp, *, state: State, route: Any = None) -> None:
        self.app = app
        self.state = state
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(PREFIX):
            etag = self._unchanged(scope)
            if etag is not None:
                if self.route is not None:
                    scope["route"] = self.route  # the metrics' route label
                headers = [(b"etag", etag.encode()), (b"cache-control", b"no-cache")]
                await send({"type": "http.response.start", "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)

    def _unchanged(self, scope: Scope) -> str | None:
        """The ETag to answer 304 with, or None to let the route answer."""
        symbol = scope["path"][len(PREFIX) :]
        if not symbol or "/" in symbol or len(symbol) > 32:
            return None
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in headers:
                return None  # repeated header: the route's rules decide
            headers[name] = value
        if_none_match = headers.get(b"if-none-match")
        if not if_none_match:
            return None
        try:
            pairs = parse_qsl(
                scope["query_string"].decode("ascii"), keep_blank_values=True, strict_parsing=False
            )
            args = dict(pairs)
            if len(args) != len(pairs) or not set(args) <= _PARAMS or "timeframe" not in args:
                return None
            timeframe = Timeframe.parse(args["timeframe"])
            limit = int(args["limit"]) if "limit" in args else None
        except (UnicodeDecodeError, ValueError, InvalidInput):
            return None
        fmt = args.get("format") or bars_format(headers.get(b"accept", b"").decode("latin-1"))
        if fmt not in _FORMATS:
            return None
        auth: Auth = self.state.barfill_auth
        who = auth.known(_token(headers))
        if who is None or not allows(who.scopes, KeyScope.read):
            return None
        reads: BarReads = self.state.barfill_reads
        now = reads.clock.now()
        if now is None:
            return None
        key = reads.key(
            symbol,
            args["timeframe"],
            args.get("start"),
            args.get("end"),
            args.get("layers", "historical,intraday"),
            limit,
            default_end(now, timeframe),
            args.get("adjust"),
        )
        found = reads.cache.get(key)
        if found is None:
            return None
        etag = format_etag(found[1], fmt)
        if not etag_matches(etag, if_none_match.decode("latin-1")):
            return None
        if who is not ANONYMOUS and auth.take(who.key_id) > 0:
            return None  # over its rate: the route answers 429
        scope.setdefault("state", {})["principal"] = who
        return etag


def _token(headers: dict[bytes, bytes]) -> str | None:
    """The API key sent, as :func:`barfill.server.deps.presented_key` reads it."""
    header = headers.get(b"authorization", b"").decode("latin-1")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key", b"").decode("latin-1")
    return key.strip() if key and key.strip() else None
