"""FastAPI dependencies shared by every router: the barfill :class:`App` and API-key scopes.

``get_app(request)`` returns the App stored on ``fastapi_app.state.barfill``.
``require(scope)`` returns a dependency that lets a request through only with
a key holding ``scope`` (scopes nest: admin ⊇ write ⊇ read):

* no ``Authorization: Bearer <key>`` / ``X-API-Key`` header → 401;
* a key that is malformed, unknown or revoked → 401;
* a valid key without the scope → 403;
* over the key's request rate (``api_rate_limit``, per process) → 429.

When no key exists at all and the server listens on loopback only, every
request passes (the embedded default needs no set-up); the server refuses to
bind any other address with no keys (see :func:`check_bind`). Lookups are
cached for a few seconds so a busy chart does not hit the database per
request; a revoked key stops working within that time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from barfill.bootstrap import App, parse_rate
from barfill.domain import gcra
from barfill.domain.apikeys import Scope, allows, check_secret, split_key
from barfill.domain.capabilities import RateLimit
from barfill.errors import ConfigError
from barfill.store.api_keys import active_key_count, get_key

CACHE_S = 5.0


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    """Every error answer: one line, plus the fields at fault."""

    error: str
    detail: list[ErrorDetail] = []


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid API key"},
    403: {"model": ErrorOut, "description": "The key lacks the scope"},
    404: {"model": ErrorOut, "description": "Not found"},
    413: {"model": ErrorOut, "description": "Request body too large"},
    422: {"model": ErrorOut, "description": "Invalid input; the body names the field"},
    429: {"model": ErrorOut, "description": "Rate limit exceeded"},
    503: {"model": ErrorOut, "description": "Database unavailable"},
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's public id and name, or ``anonymous`` (loopback, no keys)."""

    key_id: str
    name: str
    scopes: tuple[Scope, ...]


ANONYMOUS = Principal("-", "anonymous", (Scope.read, Scope.write, Scope.admin))


def is_loopback(host: str) -> bool:
    """Whether ``host`` accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(app: App, host: str) -> None:
    """Refuse to serve a non-loopback address while no API key exists.

    Raises:
        ConfigError: naming the fix (``barfill keys create``).
    """
    if is_loopback(host):
        return
    with app.db.read() as conn:
        n = active_key_count(conn)
    if n == 0:
        raise ConfigError(
            f"refusing to listen on {host}: no API keys exist, so anyone who can reach it could use it. "
            "Create one first (`barfill keys create NAME --scopes read`) or bind 127.0.0.1."
        )


class Auth:
    """Key checks and per-key rate limits for one server process."""

    def __init__(self, app: App, *, loopback: bool) -> None:
        self.app = app
        self.loopback = loopback
        limit = parse_rate(app.settings.api_rate_limit)
        assert limit is not None
        self.limit = RateLimit(limit.requests, limit.period_s, burst=limit.requests)
        self._lock = threading.Lock()
        self._count: tuple[float, int] | None = None
        self._keys: dict[str, tuple[float, Principal | None]] = {}
        self._tat: dict[str, float] = {}

    def keys_exist(self) -> bool:
        now = time.monotonic()
        cached = self._count
        if cached is None or now - cached[0] > CACHE_S:
            with self.app.db.read() as conn:
                cached = (now, active_key_count(conn))
            self._count = cached
        return cached[1] > 0

    def lookup(self, token: str) -> Principal | None:
        """The principal of a presented key, or None when it is not a valid key."""
        now = time.monotonic()
        # Cache by a digest: the raw secret is not kept in memory longer than the request.
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._keys.get(digest)
        if hit is not None and now - hit[0] <= CACHE_S:
            return hit[1]
        parts = split_key(token)
        found: Principal | None = None
        if parts is not None:
            with self.app.db.read() as conn:
                row = get_key(conn, parts[0])
            if row is not None and row.active and check_secret(row.salt, row.secret_hash, parts[1]):
                found = Principal(row.key_id, row.name, row.scopes)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (now, found)
        return found

    def take(self, who: str) -> float:
        """One request's slot for ``who``; 0.0 if granted, else seconds to wait."""
        with self._lock:
            d = gcra.decide(self._tat.get(who), time.monotonic(), self.limit)
            self._tat[who] = d.tat
            return d.wait_s

    def known(self, token: str | None) -> Principal | None:
        """The caller from this process's caches alone (no database), or None when a lookup is needed."""
        now = time.monotonic()
        if token is None:
            cached = self._count
            if self.loopback and cached is not None and now - cached[0] <= CACHE_S and cached[1] == 0:
                return ANONYMOUS
            return None
        hit = self._keys.get(hashlib.sha256(token.encode()).hexdigest())
        if hit is not None and hit[1] is not None and now - hit[0] <= CACHE_S:
            return hit[1]
        return None

    def authenticate(self, token: str | None) -> Principal:
        """The caller, or an :class:`HTTPException` (401) with a message that never echoes the key."""
        if token is None:
            if self.loopback and not self.keys_exist():
                return ANONYMOUS
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = self.lookup(token)
        if found is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        return found


async def get_app(request: Request) -> App:
    """The barfill App this server was built with.

    ``async`` only so FastAPI calls it on the event loop: a plain function
    dependency costs a thread hop per request.
    """
    app: App = request.app.state.barfill
    return app


def get_auth(request: Request) -> Auth:
    auth: Auth = request.app.state.barfill_auth
    return auth


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key`` (None when neither is sent)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting only callers whose key holds ``scope`` (read, write or admin)."""
    needed = Scope(scope)

    async def dependency(request: Request) -> Principal:
        auth = get_auth(request)
        token = presented_key(request)
        # A known caller is answered on the event loop: a thread hop per request costs more than the check.
        who = auth.known(token)
        if who is None:
            who = await run_in_threadpool(auth.authenticate, token)
        request.state.principal = who
        if not allows(who.scopes, needed):
            raise HTTPException(403, f"this API key lacks the '{needed.value}' scope")
        if who is not ANONYMOUS:
            wait = auth.take(who.key_id)
            if wait > 0:
                raise HTTPException(
                    429,
                    "rate limit exceeded for this API key",
                    headers={"Retry-After": str(max(1, round(wait + 0.5)))},
                )
        return who

    return dependency
