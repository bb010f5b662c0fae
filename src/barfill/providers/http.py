"""What every HTTP provider adapter shares: one GET, its errors, and bar labels.

Errors. Every failure leaves an adapter as a :class:`~barfill.errors.ProviderError`
with a stable ``code`` the worker groups and retries by:

=============  =========  ====================================================
code           retryable  cause
=============  =========  ====================================================
``http_401``   no         missing or wrong credentials
``http_403``   no         credentials valid, plan does not cover the request
``http_404``   no         unknown symbol or path
``http_4xx``   no         any other 4xx (``http_400``, ``http_422``...)
``http_429``   yes        throttled; ``retry_after_s`` from ``Retry-After``
``http_5xx``   yes        the provider failed; ``retry_after_s`` if sent
``timeout``    yes        connect, read, write or pool timeout
``connect``    yes        the connection could not be made
``transport``  yes        the connection broke mid-exchange
``bad_payload`` yes       not JSON, truncated JSON, or not the documented shape
=============  =========  ====================================================

``bad_payload`` is retried like any transient fault: a truncated 200 or a
``"NaN"`` field is as likely a one-off as a 5xx, and the same damage caught
later by validation (high < low) is retried too. A payload that is wrong
every time fails the same way on every attempt and the slice ends ``failed``
when its attempts run out. Its message names the symbol, the bar (its
time) and the field, once.

Secrets. Adapters authenticate with headers wherever the provider allows, so
keys are never part of a URL (httpx puts the URL in its exception messages and
in its ``INFO`` log line). As a second line of defence every message built here
is passed through :func:`redact`, which removes the adapter's own secrets and
any ``apiKey=``/``token=``-like query parameter. The httpx exception is never
chained (``__cause__``/``__context__``), so a traceback cannot show it either.

Labels. Providers stamp daily and weekly bars in different ways (00:00 New
York, 09:30 New York, a date string, a Sunday or a Monday). :func:`daily_labels`
and :func:`weekly_labels` turn any plausible stamp into barfill's label (see
:mod:`barfill.domain.calendar`) and raise ``bad_payload`` for a stamp whose
meaning is ambiguous, so a wrong assumption about a provider fails loudly
instead of shifting bars by a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NoReturn

import httpx
import numpy as np
import numpy.typing as npt
import orjson

from barfill.domain.bars import I64, BarBatch
from barfill.domain.calendar import TradingCalendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.timeframes import Timeframe
from barfill.errors import NotSupported, ProviderError

log = logging.getLogger("barfill.providers")

on_send: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "barfill_on_send", default=None
)
"""Called once, as this context's next request starts writing its headers to the wire.

The shared rate limiter's hook (:func:`barfill.store.ratelimit.record_send`):
a strict provider counts arrivals, so the instant that matters is when the
request leaves, after the connection is made, not when its slot was granted.
"""

next_grant: contextvars.ContextVar[Callable[[], Awaitable[None]] | None] = contextvars.ContextVar(
    "barfill_next_grant", default=None
)
"""Awaited before each further request of one fetch (a next page): it takes that request's slot.

The caller grants a fetch's first request itself (the worker's rate-limit slot,
then :data:`on_send`); a chain of pages (Polygon's ``next_url``, Alpaca's
``next_page_token``) sends more requests, and a strict provider counts each.
Adapters await :func:`grant_next_request` before every such request; the worker
and the actions refresh set this hook to take a slot from the same shared
limiter. Unset (a direct call, a test): nothing is awaited.
"""

_DAY = 86_400
_SNIPPET = 300  # characters of an error body kept in a message
# `apiKey=v` in a URL, `"apiKey": "v"` in a JSON body, `token: v` in text.
_SECRET_PARAM = re.compile(
    r"(?i)\b(api[_-]?key|apikey|access[_-]?token|token|secret[_-]?key|secret|key[_-]?id|password)"
    r"(\"?\s*[:=]\s*\"?)([^&\s\"',;<>]+)"
)
_MONDAY_DAY_NUMBER = 4  # days since 1970-01-01 (a Thursday) of Monday 1970-01-05


# -- secrets ------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without ``secrets`` and without secret-looking query parameters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET_PARAM.sub(r"\1\2***", text)


# -- Retry-After --------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: seconds or an HTTP date).

    Args:
        value: the header's value, or None when absent.
        now: the current Unix time in seconds, used for the HTTP-date form.

    Returns:
        A finite number of seconds >= 0, or None if absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


# -- errors -------------------------------------------------------------------


def bad_payload(provider: str, message: str) -> ProviderError:
    """A response that is not what the provider documents: retried with backoff (see above)."""
    return ProviderError("bad_payload", f"{provider}: {message}", retryable=True)


def fail_payload(provider: str, message: str) -> NoReturn:
    raise bad_payload(provider, message)


def error_for_status(
    response: httpx.Response, *, provider: str, secrets: Iterable[str] = (), now: float
) -> ProviderError | None:
    """The error a non-2xx response stands for, or None for a success.

    The message names the provider, the request path (never the query) and
    the start of the body, redacted.
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    body = redact(_text_head(response), secrets)
    where = f"{provider}: GET {response.request.url.path}: HTTP {status}"
    message = f"{where}: {body}" if body else where
    retry_after = parse_retry_after(response.headers.get("retry-after"), now)
    if status == 429:
        return ProviderError("http_429", message, retryable=True, retry_after_s=retry_after)
    if status >= 500:
        return ProviderError("http_5xx", message, retryable=True, retry_after_s=retry_after)
    return ProviderError(f"http_{status}", message, retryable=False)


def error_for_exception(exc: httpx.HTTPError, *, provider: str, secrets: Iterable[str] = ()) -> ProviderError:
    """The error an httpx exception stands for; its message is redacted."""
    detail = redact(f"{type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError("timeout", f"{provider}: {detail}", retryable=True)
    if isinstance(exc, httpx.ConnectError):
        return ProviderError("connect", f"{provider}: {detail}", retryable=True)
    if isinstance(exc, httpx.TransportError):
        return ProviderError("transport", f"{provider}: {detail}", retryable=True)
    if isinstance(exc, httpx.DecodingError):  # a body cut short mid-stream: transient-looking
        return bad_payload(provider, detail)
    # InvalidURL, TooManyRedirects...: a bug or a provider change, the same every time.
    return ProviderError("bad_request", f"{provider}: {detail}", retryable=False)


def _text_head(response: httpx.Response) -> str:
    try:
        text = response.text
    except (httpx.HTTPError, UnicodeDecodeError, LookupError):
        return ""
    text = " ".join(text.split())
    return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "")


def warm_http_stack() -> None:
    """Import what httpx loads only on a client's first request (its connection backend).

    That first import takes ~0.1 s: paid between a rate-limit grant and the
    request's arrival, it makes the request late enough to share a strict
    window with the next N (the provider's 429). A worker calls this before
    it takes its first slot.
    """
    import importlib

    # httpx's internals: a module that moved makes this a no-op, never an error.
    for name in ("httpcore._backends.anyio", "anyio._backends._asyncio", "anyio._core._synchronization"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


async def grant_next_request() -> None:
    """Wait for this context's grant of a further request of the same fetch (see :data:`next_grant`)."""
    hook = next_grant.get()
    if hook is not None:
        await hook()


async def get_json(
    client: httpx.AsyncClient | LoopClient,
    url: str,
    *,
    provider: str,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    now: float | None = None,
) -> Any:
    """One GET whose answer must be JSON; every failure is a :class:`ProviderError`.

    No retries here: the worker owns retries and the shared rate limiter.

    Args:
        now: Unix seconds, to turn an HTTP-date ``Retry-After`` into seconds
            (default: the system clock; adapters are the I/O edge).
    """
    response = await get_ok(
        client, url, provider=provider, params=params, headers=headers, secrets=secrets, now=now
    )
    return json_of(response, provider=provider)


async def get_ok(
    client: httpx.AsyncClient | LoopClient,
    url: str,
    *,
    provider: str,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    now: float | None = None,
) -> httpx.Response:
    """:func:`get_json`'s GET without the decoding: a 2xx response, or a :class:`ProviderError`.

    For adapters that decode the body their own way (typed, into columns)
    and fall back to :func:`json_of` when it is not the shape they expect.
    """
    secrets = tuple(secrets)
    sent = await _send(client, url, params=params, headers=headers, provider=provider, secrets=secrets)
    if isinstance(sent, ProviderError):
        raise sent
    response = sent
    log.debug("%s GET %s -> %s", provider, response.request.url.path, response.status_code)
    error = error_for_status(
        response, provider=provider, secrets=secrets, now=time.time() if now is None else now
    )
    if error is not None:
        raise error
    return response


def json_of(response: httpx.Response, *, provider: str) -> Any:
    """The response's JSON body, decoded as the standard ``json`` module reads it; else ``bad_payload``.

    orjson first (several times faster); what it refuses (a ``NaN`` literal,
    another charset) goes to the standard decoder, which has the last word.
    """
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        pass
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        error = bad_payload(
            provider,
            f"GET {response.request.url.path}: answer is not valid JSON "
            f"({len(response.content)} bytes, truncated or not JSON)",
        )
    raise error


async def _send(
    client: httpx.AsyncClient | LoopClient,
    url: str,
    *,
    params: Mapping[str, str | int] | None,
    headers: Mapping[str, str] | None,
    provider: str,
    secrets: tuple[str, ...],
) -> httpx.Response | ProviderError:
    """The response, or the error to raise: returned, not raised, so that the
    httpx exception (URL and all) never rides along as ``__context__``."""
    hook = on_send.get()
    extensions: dict[str, Any] | None = None
    if hook is not None:
        on_send.set(None)  # one request per grant: a next page takes its own (next_grant)

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            nonlocal hook
            if hook is not None and event.endswith("send_request_headers.started"):
                hook()
                hook = None

        extensions = {"trace": trace}
    try:
        if extensions is None:
            return await client.get(url, params=params, headers=headers)
        return await client.get(url, params=params, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return error_for_exception(exc, provider=provider, secrets=secrets)


# -- reading payloads ---------------------------------------------------------


def _where(bar: str | None, field: str) -> str:
    return f"{bar}: field {field!r}" if bar else f"field {field!r}"


def number(value: Any, *, provider: str, field: str, bar: str | None = None) -> float:
    """A JSON number (not a bool, not a string) as float; else ``bad_payload``.

    ``bar`` says which bar the field belongs to (``AAPL bar 2024-03-05T14:00:00Z``),
    so the message points at it.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail_payload(provider, f"{_where(bar, field)}: expected a number, got {value!r}")
    return float(value)


def integer(value: Any, *, provider: str, field: str, bar: str | None = None) -> int:
    """A JSON integer (an integral float is accepted); else ``bad_payload``."""
    f = number(value, provider=provider, field=field, bar=bar)
    if not f.is_integer():
        fail_payload(provider, f"{_where(bar, field)}: expected an integer, got {value!r}")
    return int(f)


def optional_number(value: Any, *, provider: str, field: str, bar: str | None = None) -> float | None:
    return None if value is None else number(value, provider=provider, field=field, bar=bar)


def mapping(value: Any, *, provider: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        fail_payload(provider, f"{field}: expected an object, got {type(value).__name__}")
    return value


def rows_list(value: Any, *, provider: str, field: str) -> list[Any]:
    if not isinstance(value, list):
        fail_payload(provider, f"{field}: expected a list, got {type(value).__name__}")
    return value


# -- reach ------------------------------------------------------------------


def check_reach(capabilities: Capabilities, timeframe: Timeframe, start: int, end: int, now: float) -> None:
    """Refuse, with :class:`NotSupported`, what a provider cannot answer *completely*.

    A provider asked beyond its history depth (or before its history start)
    tends to answer with the part it has, which would be recorded as covered:
    a silent hole. Refusing lets the router try another provider. ``now`` is
    the caller's clock: adapters built by bootstrap read the database clock.
    """
    name = capabilities.name
    if not capabilities.supports(timeframe):
        raise NotSupported(f"{name}: timeframe {timeframe.value} is not served natively")
    reach = capabilities.reach_start(timeframe, now)
    if reach is not None and start < reach:
        days = capabilities.history_days.get(timeframe)
        depth = f"reaches back {days} days" if days is not None else "history"
        raise NotSupported(f"{name}: {timeframe.value} {depth} starts {iso(reach)}; {iso(start)} is older")
    span = capabilities.max_span_days.get(timeframe)
    if span is not None and end - start > span * _DAY:
        raise NotSupported(f"{name}: {timeframe.value} requests span at most {span} days")


# -- labels and sessions ------------------------------------------------------


def iso(ts: int) -> str:
    """``ts`` (Unix seconds) as ISO 8601 UTC, for messages."""
    return str(np.datetime64(int(ts), "s")) + "Z"


def daily_labels(calendar: TradingCalendar, stamps: I64, *, provider: str, grace_s: int = 3600) -> I64:
    """Our d1 labels (00:00 local of the session date) for a provider's daily stamps.

    A stamp is read as "a moment of the session's local date": 00:00 (Polygon,
    Alpaca), the 09:30 open (Yahoo) or the last trade just after the close.
    It must fall between local midnight of a session date and that session's
    close plus ``grace_s``. A stamp at 00:00 UTC (19:00/20:00 New York the
    evening before) therefore fails instead of labelling the previous day.
    """
    stamps = np.asarray(stamps, dtype=np.int64)
    if len(stamps) == 0:
        return stamps
    labels = calendar.bucket(Timeframe.d1, stamps)
    idx = np.clip(np.searchsorted(calendar.midnights, labels), 0, len(calendar.midnights) - 1)
    ok = (calendar.midnights[idx] == labels) & (stamps <= calendar.closes[idx] + grace_s)
    if not ok.all():
        bad = int(stamps[~ok][0])
        fail_payload(
            provider,
            f"daily bar stamped {iso(bad)} is not within a {calendar.name} session date "
            f"(midnight to close); refusing to guess its date",
        )
    return labels


def weekly_labels(calendar: TradingCalendar, stamps: I64, *, provider: str) -> I64:
    """Our w1 labels (Monday 00:00 local) for a provider's weekly stamps.

    A stamp on Monday..Friday (local) belongs to its own week; one on Sunday
    is read as the start of the week that begins the next day (Polygon's
    anchor, and 00:00 UTC Monday seen from New York). A Saturday stamp could
    be the end of one week or the start of the next: it is refused. The week
    must hold at least one session.
    """
    stamps = np.asarray(stamps, dtype=np.int64)
    if len(stamps) == 0:
        return stamps
    local_day = (stamps + calendar.utc_offset(stamps)) // _DAY
    weekday = (local_day - _MONDAY_DAY_NUMBER) % 7  # 0 = Monday
    if (weekday == 5).any():
        bad = int(stamps[weekday == 5][0])
        fail_payload(provider, f"weekly bar stamped {iso(bad)} (a Saturday): ambiguous week")
    # Sunday any time + 30 h lands on Monday or early Tuesday of the next week, DST or not.
    shifted = np.where(weekday == 6, stamps + _DAY + 6 * 3600, stamps)
    labels = calendar.bucket(Timeframe.w1, shifted)
    first_session = np.searchsorted(calendar.midnights, labels)
    has_session = (first_session < len(calendar.midnights)) & (
        calendar.midnights[np.clip(first_session, 0, len(calendar.midnights) - 1)] < labels + 7 * _DAY
    )
    if not has_session.all():
        bad = int(stamps[~has_session][0])
        fail_payload(provider, f"weekly bar stamped {iso(bad)}: its week holds no {calendar.name} session")
    return labels


def relabel(batch: BarBatch, calendar: TradingCalendar, *, grace_s: int = 3600) -> BarBatch:
    """``batch`` with d1/w1 stamps turned into our labels; intraday batches unchanged."""
    if batch.timeframe == Timeframe.d1:
        ts = daily_labels(calendar, batch.ts, provider=batch.provider, grace_s=grace_s)
    elif batch.timeframe == Timeframe.w1:
        ts = weekly_labels(calendar, batch.ts, provider=batch.provider)
    else:
        return batch
    return BarBatch(
        batch.symbol,
        batch.timeframe,
        batch.provider,
        ts,
        batch.open,
        batch.high,
        batch.low,
        batch.close,
        batch.volume,
        batch.vwap,
        batch.trade_count,
        basis=batch.basis,
    ).take(np.argsort(ts, kind="stable"))


def session_bars(batch: BarBatch, calendar: TradingCalendar, *, extended: bool) -> BarBatch:
    """Intraday bars whose span ``[ts, ts + timeframe)`` meets trading time.

    ``extended=False`` keeps the regular session (an h1 bar labelled 09:00
    meets the 09:30 open and is kept); ``extended=True`` keeps 04:00 local to
    four hours after the close. d1/w1 batches are returned unchanged.
    """
    if not batch.timeframe.intraday or len(batch) == 0:
        return batch
    return batch.take(session_mask(batch.ts, batch.timeframe, calendar, extended=extended))


def session_mask(
    ts: I64, timeframe: Timeframe, calendar: TradingCalendar, *, extended: bool
) -> npt.NDArray[np.bool_]:
    """:func:`session_bars`' row mask for intraday stamps ``ts`` (all True for d1/w1).

    Separate so that an adapter can drop the rows it will not store before it
    builds their other columns (Polygon serves ~2.4 extended minutes per regular one).
    """
    if not timeframe.intraday or len(ts) == 0:
        return np.ones(len(ts), dtype=bool)
    opens, closes = (
        (calendar.ext_opens, calendar.ext_closes) if extended else (calendar.opens, calendar.closes)
    )
    bar_end = ts + timeframe.seconds
    i = np.searchsorted(opens, bar_end, side="left") - 1  # last session opening before the bar ends
    keep: npt.NDArray[np.bool_] = (i >= 0) & (ts < closes[np.clip(i, 0, len(closes) - 1)])
    return keep


# -- the client ---------------------------------------------------------------


class LoopClient:
    """An ``httpx.AsyncClient`` per event loop, made on first use in that loop.

    Why: an ``AsyncClient``'s pooled connections belong to the loop that
    opened them. Every ``asyncio.run`` (``barfill ensure --wait``, each
    ``Barfill.wait()``, ``barfill worker``) is a new loop, so one client made
    at start-up and closed at exit would be closed on a dead loop ("Event loop
    is closed") or used after it was closed ("client has been closed").

    Contract: :meth:`get` (and the ``get`` shortcut) always answer on the
    running loop, creating a client if there is none, if the last one was
    made on another loop, or if it was closed. :meth:`aclose` closes the
    client on the loop it was made on, and must be awaited on that loop before
    it ends (``App.run`` does); a client whose loop already ended is dropped.
    After :meth:`aclose` the object is still usable: the next request opens a
    fresh client.

    Args:
        timeout_s: the httpx timeout (connect, read, write, pool) in seconds.
        transport: an httpx transport for every client made (tests).
    """

    def __init__(self, *, timeout_s: float = 30.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        """The client bound to the running loop (call from a coroutine)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._drop_foreign(loop)
            self._client = httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport)
            self._loop = loop
        return self._client

    async def get(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """``GET url`` with the running loop's client."""
        return await self.client().get(url, params=params, headers=headers, extensions=extensions)

    async def aclose(self) -> None:
        """Close the client if it belongs to the running loop; forget it otherwise."""
        client, loop = self._client, self._loop
        self._client, self._loop = None, None
        if client is None or client.is_closed:
            return
        if loop is asyncio.get_running_loop():
            await client.aclose()
        else:
            _close_elsewhere(client, loop)

    async def __aenter__(self) -> LoopClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Synchronous :meth:`aclose`, for code outside any loop (``App.close``)."""
        client, loop = self._client, self._loop
        self._client, self._loop = None, None
        if client is not None and not client.is_closed:
            _close_elsewhere(client, loop)

    def _drop_foreign(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._client is not None and not self._client.is_closed and self._loop is not loop:
            _close_elsewhere(self._client, self._loop)
        self._client, self._loop = None, None


def _close_elsewhere(client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop | None) -> None:
    """Close ``client`` on its own ``loop`` if that loop is idle; drop it if the loop is gone.

    A loop that has ended took its sockets with it (``asyncio.run`` closes
    them), so there is nothing left to do there; awaiting ``aclose`` on another
    loop is exactly the "Event loop is closed" crash this class exists to avoid.
    """
    if loop is None or loop.is_closed():
        return
    if loop.is_running():  # another thread's loop: hand it over
        asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop runs in this thread: borrow the idle one
        loop.run_until_complete(client.aclose())


HttpClient = httpx.AsyncClient | LoopClient
"""What an adapter sends requests with: a plain client (tests) or a :class:`LoopClient`."""


class HttpAdapter:
    """What every HTTP adapter shares: declared capabilities and a client it does not own.

    Subclasses set ``self._capabilities`` in ``__init__``; the injected client
    (a :class:`LoopClient` from bootstrap, or a plain ``httpx.AsyncClient``)
    is closed by whoever created it.
    """

    _capabilities: Capabilities

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to the caller."""
