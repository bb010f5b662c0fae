"""A Python client for a barfill server's ``/v1`` API.

``Client(base_url, api_key)``: ``ensure`` (answers at once), ``progress``,
``wait`` (live, over the event stream, with a callback or a rich progress
bar), ``events()`` (an iterator of server-sent events, resumable), and
``bars`` (a pandas DataFrame indexed by bar-open time, UTC).

``bars`` keeps a disk cache keyed by (symbol, timeframe): the last answer is
stored as Parquet with its ``ETag`` and query; the next identical request
sends ``If-None-Match`` and, on ``304 Not Modified``, is served from disk
without transferring the bars again (the original client's ChartCache).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pandas as pd

from barfill.errors import BarfillError

DEFAULT_URL = "http://127.0.0.1:8000"
_ARROW = "application/vnd.apache.arrow.stream"


class ApiError(BarfillError):
    """The server refused a request; ``status`` is the HTTP status, the message the server's."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``id`` (pass as ``last_event_id`` to resume), name, JSON data."""

    id: str | None
    event: str
    data: Any


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "barfill" / "http"


class Client:
    """A handle on one barfill server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer``; None for a loopback server with no keys.
        cache_dir: where ``bars`` keeps its cache; None disables it.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        cache_dir: Path | str | None = None,
        use_cache: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.cache_dir = None if not use_cache else Path(cache_dir) if cache_dir else default_cache_dir()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                message = str(r.json().get("error", r.text))
            except (ValueError, AttributeError):
                message = r.text[:200]
            raise ApiError(r.status_code, message)
        return r

    def ensure(
        self,
        symbols: str | Sequence[str],
        timeframe: str,
        *,
        days: int | None = None,
        start: str | int | None = None,
        end: str | int | None = None,
        priority: int = 0,
        provider: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/ensure``: ``{results, job, progress, notices}``; returns at once."""
        body: dict[str, Any] = {"timeframe": timeframe, "priority": priority}
        body |= {"symbol": symbols} if isinstance(symbols, str) else {"symbols": list(symbols)}
        for key, value in (("window_days", days), ("start", start), ("end", end), ("provider", provider)):
            if value is not None:
                body[key] = value
        return dict(self._check(self.http.post("/v1/ensure", json=body)).json())

    def progress(self, job: str) -> dict[str, Any]:
        """``GET /v1/progress/{job}``: percent, bars written, slice counts, ETA, done."""
        return dict(self._check(self.http.get(f"/v1/progress/{job}")).json())

    def events(self, job: str | None = None, *, last_event_id: str | None = None) -> Iterator[Event]:
        """Server-sent events (``bars``, ``progress``/``queue``) until the caller stops iterating."""
        params = {"job": job} if job else {}
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", "/v1/events", params=params, headers=headers, timeout=None) as r:
            self._check_stream(r)
            fields: dict[str, str] = {}
            for line in r.iter_lines():
                if not line:
                    if "event" in fields:
                        yield Event(fields.get("id"), fields["event"], json.loads(fields.get("data", "null")))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    def _check_stream(self, r: httpx.Response) -> None:
        if r.status_code >= 400:
            r.read()
            self._check(r)

    def wait(
        self,
        job: str,
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        show: bool = False,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Follow a job's progress events until nothing is queued or running; returns the last one.

        ``show`` draws a rich progress bar; ``on_progress`` sees every update.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = self.progress(job)
        bar: Any = None
        task: Any = None
        if show:
            from rich.progress import Progress as RichProgress

            bar = RichProgress()
            bar.start()
            task = bar.add_task("hydrating", total=100.0)
        try:
            if not last["done"]:
                for event in self.events(job):
                    if event.event != "progress":
                        continue
                    last = event.data
                    if on_progress is not None:
                        on_progress(last)
                    if bar is not None:
                        bar.update(task, completed=last["percent"])
                    if last["done"] or (deadline is not None and time.monotonic() > deadline):
                        break
            elif on_progress is not None:
                on_progress(last)
        finally:
            if bar is not None:
                bar.update(task, completed=last["percent"])
                bar.stop()
        return last

    # -- bars -----------------------------------------------------------------------------

    def bars(
        self,
        symbol: str,
        timeframe: str,
        *,
        start: str | int | None = None,
        end: str | int | None = None,
        limit: int | None = None,
        layers: Sequence[str] = ("historical", "intraday"),
        adjust: str | None = None,
        include_flagged: bool = False,
    ) -> pd.DataFrame:
        """Stored bars as a DataFrame (index ``ts``, UTC; open high low close volume vwap trade_count).

        ``adjust``: ``raw``, ``split`` or ``all`` (adjusted by the server for the
        splits and dividends it knows now); ``None``: as stored.
        Served from the disk cache when the server answers 304 for the same query
        (a new split or dividend changes an adjusted read's ETag, so the copy is replaced).
        Bars flagged bad are left out unless ``include_flagged``.
        """
        params: dict[str, Any] = {"timeframe": timeframe, "layers": ",".join(layers)}
        if include_flagged:
            params["include_flagged"] = "true"
        for key, value in (("start", start), ("end", end), ("limit", limit), ("adjust", adjust)):
            if value is not None:
                params[key] = value
        query = json.dumps(params, sort_keys=True)
        cached = self._cached(symbol, timeframe, query)
        headers = {"Accept": _ARROW}
        if cached is not None:
            headers["If-None-Match"] = cached[0]
        r = self.http.get(f"/v1/bars/{symbol}", params=params, headers=headers)
        if r.status_code == 304 and cached is not None:
            return cached[1]
        self._check(r)
        frame = _frame(r.content)
        self._store(symbol, timeframe, query, r.headers.get("etag"), frame)
        return frame

    def _paths(self, symbol: str, timeframe: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        server = hashlib.sha256(str(self.http.base_url).encode()).hexdigest()[:12]
        stem = self.cache_dir / server / f"{symbol.upper()}_{timeframe}"
        return stem.with_suffix(".parquet"), stem.with_suffix(".json")

    def _cached(self, symbol: str, timeframe: str, query: str) -> tuple[str, pd.DataFrame] | None:
        paths = self._paths(symbol, timeframe)
        if paths is None or not paths[1].is_file() or not paths[0].is_file():
            return None
        try:
            meta = json.loads(paths[1].read_text())
            if meta.get("query") != query or not meta.get("etag"):
                return None
            return str(meta["etag"]), pd.read_parquet(paths[0])
        except (OSError, ValueError):
            return None  # a damaged cache is a miss, never an error

    def _store(self, symbol: str, timeframe: str, query: str, etag: str | None, frame: pd.DataFrame) -> None:
        paths = self._paths(symbol, timeframe)
        if paths is None or etag is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(paths[0])
        paths[1].write_text(json.dumps({"etag": etag, "query": query}))


def _frame(arrow_stream: bytes) -> pd.DataFrame:
    import pyarrow as pa

    table = pa.ipc.open_stream(arrow_stream).read_all()
    frame = table.to_pandas()
    frame["trade_count"] = frame["trade_count"].astype("Int64")
    index = pd.DatetimeIndex(pd.to_datetime(frame.pop("ts"), unit="s", utc=True), name="ts")
    out: pd.DataFrame = frame.set_index(index)
    return out
