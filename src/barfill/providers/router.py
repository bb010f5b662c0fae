"""The router: which provider serves a request, and what to do when one fails.

Choosing is by date, timeframe and layer, from each provider's declared
:class:`~barfill.domain.capabilities.Capabilities` and the live-edge rule of
:mod:`barfill.domain.finality` only:

* A ``historical`` (final) range goes to the ``historical`` order, and a
  provider is able only once the range is final *for it*
  (:func:`~barfill.domain.finality.classify`; flat files: once published).
* An ``intraday`` (provisional) range goes to the ``realtime`` order; only
  providers declaring ``realtime`` are kept, and only up to the end of the
  last complete bar.
* Providers that lack the timeframe natively, or whose history
  (``history_start``, ``history_days``) does not reach back to ``start``, are
  skipped.
* Names in the order lists that are not configured are skipped, so the
  default orders work whatever keys a user has.

:meth:`Router.assign` answers the planner's question, which is not "who can
serve this now" but "who is the most preferred provider that will *ever*
serve it": a range that provider cannot serve *yet* waits for it (pending)
instead of going to the next provider.

``now`` is always passed in: the database clock (Unix seconds UTC).

Falling back: on :class:`~barfill.errors.NotSupported` or a non-retryable
:class:`~barfill.errors.ProviderError` (bad symbol, missing file, auth) the
next provider is tried. A *retryable* error (429, 5xx, timeout) is re-raised
at once: the provider is fine, just busy or flaky, and the worker's backoff
and ``Retry-After`` handling (which also penalizes that provider's shared rate
limit) is the right response. Silently moving on would hammer the next
provider and change a slice's source for a transient reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from barfill.domain import intervals as iv
from barfill.domain.bars import BarBatch, Layer
from barfill.domain.calendar import TradingCalendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.finality import Finality, classify, servable_until
from barfill.domain.intervals import Interval
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, NotSupported, ProviderError
from barfill.ports import Provider

_DAY = 86_400
_FAR = 2**62

OnAttempt = Callable[[str], Awaitable[None]]


class Router:
    """Chooses providers by date and timeframe, and falls back on permanent failures.

    Args:
        providers: configured providers by name.
        historical: preferred order for ranges of finished sessions.
        realtime: preferred order for ranges reaching into the live session.
        calendar: the exchange calendar of the symbols routed.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        historical: Sequence[str],
        realtime: Sequence[str],
        calendar: TradingCalendar,
    ) -> None:
        self.providers = dict(providers)
        self.historical = [n for n in dict.fromkeys(historical) if n in self.providers]
        self.realtime = [n for n in dict.fromkeys(realtime) if n in self.providers]
        self.calendar = calendar

    def capabilities(self, name: str) -> Capabilities:
        return self.providers[name].capabilities

    def choose(
        self,
        timeframe: Timeframe,
        start: int,
        end: int,
        *,
        now: int,
        layer: Layer = Layer.historical,
        pinned: str | None = None,
        prefer: str | None = None,
    ) -> list[str]:
        """Provider names able to serve [start, end) of ``timeframe`` *now*, most preferred first.

        ``layer`` ``historical``: the range must be final for the provider;
        ``intraday``: a realtime provider serving complete bars. ``now`` is
        Unix seconds UTC (database clock). ``prefer`` moves one able provider
        to the front (a slice is tried first with the provider it was sized
        for). An empty list means nobody can; see :meth:`explain` for why.

        Raises:
            InvalidInput: ``pinned`` names no configured provider.
        """
        chosen = self._rank(timeframe, start, end, now=now, layer=layer, pinned=pinned)[0]
        if prefer is not None and prefer in chosen:
            chosen.remove(prefer)
            chosen.insert(0, prefer)
        return chosen

    def explain(
        self,
        timeframe: Timeframe,
        start: int,
        end: int,
        *,
        now: int,
        layer: Layer = Layer.historical,
        pinned: str | None = None,
    ) -> list[str]:
        """Why each candidate provider was skipped, one line each."""
        return self._rank(timeframe, start, end, now=now, layer=layer, pinned=pinned)[1]

    def _candidates(self, layer: Layer, pinned: str | None) -> list[str]:
        if pinned is not None:
            if pinned not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none configured"
                raise InvalidInput("provider", f"one of: {known}", pinned)
            return [pinned]
        return self.realtime if layer is Layer.intraday else self.historical

    def _rank(
        self, timeframe: Timeframe, start: int, end: int, *, now: int, layer: Layer, pinned: str | None
    ) -> tuple[list[str], list[str]]:
        layer = Layer(layer)
        candidates = self._candidates(layer, pinned)
        chosen: list[str] = []
        skipped: list[str] = []
        for name in candidates:
            caps = self.providers[name].capabilities
            reach = caps.reach_start(timeframe, now)
            if not caps.supports(timeframe):
                skipped.append(f"{name}: no {timeframe.value} bars")
            elif reach is not None and start < reach:
                skipped.append(f"{name}: {timeframe.value} history {_reach_text(caps, timeframe)}")
            elif layer is Layer.intraday and not caps.realtime:
                skipped.append(f"{name}: no provisional bars (not a realtime provider)")
            elif layer is Layer.intraday and end > servable_until(caps, self.calendar, timeframe, now):
                skipped.append(f"{name}: [{_iso(start)}, {_iso(end)}) holds a bar not complete yet")
            elif layer is not Layer.intraday and (
                classify(caps, self.calendar, timeframe, start, end, now) is not Finality.final
            ):
                skipped.append(f"{name}: [{_iso(start)}, {_iso(end)}) is not final yet")
            else:
                chosen.append(name)
        if not candidates:
            kind = "realtime" if layer is Layer.intraday else "historical"
            skipped.append(f"no provider configured for {kind} ranges")
        return chosen, skipped

    # -- planning: who will ever serve a range -------------------------------------------------

    def assign(
        self,
        timeframe: Timeframe,
        ranges: Sequence[Interval],
        *,
        now: int,
        pinned: str | None = None,
    ) -> tuple[list[tuple[str, list[Interval]]], list[tuple[Interval, str]]]:
        """Each part of ``ranges`` to the most preferred historical provider that will ever serve it.

        "Ever": it serves the timeframe and its history reaches back to the
        part (``history_start``, ``history_days`` at ``now``); whether the part
        is final for it *yet* does not matter (a part it cannot serve yet
        waits for it). Returns ``(provider, parts)`` pairs in preference order
        and the unfillable parts with a reason each: what no configured
        provider can ever serve.
        """
        remaining = iv.normalize(ranges)
        out: list[tuple[str, list[Interval]]] = []
        candidates = self._candidates(Layer.historical, pinned)
        for name in candidates:
            if not remaining:
                break
            caps = self.providers[name].capabilities
            if not caps.supports(timeframe):
                continue
            reach = caps.reach_start(timeframe, now)
            mine = remaining if reach is None else iv.intersect(remaining, [Interval(reach, _FAR)])
            if mine:
                out.append((name, mine))
                remaining = iv.subtract(remaining, mine)
        unfillable = [(part, self._why_unfillable(timeframe, candidates, now)) for part in remaining]
        return out, unfillable

    def realtime_for(
        self, timeframe: Timeframe, start: int, *, now: int, pinned: str | None = None
    ) -> str | None:
        """The most preferred realtime provider serving ``timeframe`` from ``start`` on (None: none)."""
        for name in self._candidates(Layer.intraday, pinned):
            caps = self.providers[name].capabilities
            reach = caps.reach_start(timeframe, now)
            if caps.realtime and caps.supports(timeframe) and (reach is None or start >= reach):
                return name
        return None

    def _why_unfillable(self, timeframe: Timeframe, candidates: Sequence[str], now: int) -> str:
        able = [n for n in candidates if self.providers[n].capabilities.supports(timeframe)]
        if not candidates:
            return "no historical provider configured"
        if not able:
            return f"no configured provider serves {timeframe.value} bars ({', '.join(candidates)})"
        reaches = "; ".join(
            f"{n}: {timeframe.value} history {_reach_text(self.providers[n].capabilities, timeframe)}"
            for n in able
        )
        return f"before the history of every provider serving {timeframe.value} ({reaches})"

    async def fetch(
        self,
        symbols: Sequence[str],
        timeframe: Timeframe,
        start: int,
        end: int,
        *,
        now: int,
        layer: Layer = Layer.historical,
        pinned: str | None = None,
        prefer: str | None = None,
        on_attempt: OnAttempt | None = None,
    ) -> tuple[str, dict[str, BarBatch]]:
        """Fetch from the first provider that can serve; returns (its name, batches by symbol).

        Every requested symbol is in the result (an empty batch if it had no
        bars). ``on_attempt(name)`` is awaited before each request to a
        provider: the worker acquires that provider's rate-limit slot there.
        Symbols beyond a provider's ``max_symbols`` are sent in several requests.

        Raises:
            ProviderError: a retryable error, as raised by the provider (no
                fallback); or, once every candidate failed, a non-retryable
                error listing each failure (:class:`NotSupported` if all were).
        """
        names = self.choose(timeframe, start, end, now=now, layer=layer, pinned=pinned, prefer=prefer)
        if not names:
            reasons = "; ".join(self.explain(timeframe, start, end, now=now, layer=layer, pinned=pinned))
            raise NotSupported(f"no provider can serve {timeframe.value} [{start}, {end}): {reasons}")
        failures: list[tuple[str, ProviderError]] = []
        for name in names:
            try:
                return name, await self._fetch_from(name, symbols, timeframe, start, end, on_attempt)
            except ProviderError as e:
                if e.retryable:
                    raise
                failures.append((name, e))
        if len(failures) == 1:
            raise _with_name(*failures[0])  # its own message says it all, once
        summary = "every provider failed: " + "; ".join(_named(name, e) for name, e in failures)
        hard = [e for _, e in failures if not isinstance(e, NotSupported)]
        if not hard:
            raise NotSupported(summary)
        raise ProviderError(hard[0].code, summary, retryable=False)

    async def _fetch_from(
        self,
        name: str,
        symbols: Sequence[str],
        timeframe: Timeframe,
        start: int,
        end: int,
        on_attempt: OnAttempt | None,
    ) -> dict[str, BarBatch]:
        provider = self.providers[name]
        caps = provider.capabilities
        step = max(caps.max_symbols, 1)
        unique = list(dict.fromkeys(symbols))
        out: dict[str, BarBatch] = {}
        for i in range(0, len(unique), step):
            chunk = unique[i : i + step]
            if on_attempt is not None:
                await on_attempt(name)
            out.update(await provider.fetch(chunk, timeframe, start, end))
        for symbol in unique:
            if symbol not in out:
                out[symbol] = BarBatch.empty(symbol, timeframe, name)
        # The provider's declared adjustment basis goes with its bars into the store.
        return {symbol: batch.with_basis(caps.basis) for symbol, batch in out.items()}


def _named(name: str, error: ProviderError) -> str:
    """``name (code): message`` without repeating a name the message already starts with."""
    text = str(error).removeprefix(f"{name}: ")
    return f"{name} ({error.code}): {text}"


def _with_name(name: str, error: ProviderError) -> ProviderError:
    """``error`` itself if its message starts with the provider's name, else a copy that does."""
    if str(error).startswith(f"{name}: "):
        return error
    if isinstance(error, NotSupported):
        return NotSupported(f"{name}: {error}")
    return ProviderError(
        error.code, f"{name}: {error}", retryable=error.retryable, retry_after_s=error.retry_after_s
    )


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reach_text(caps: Capabilities, timeframe: Timeframe) -> str:
    parts: list[str] = []
    if caps.history_start is not None:
        parts.append(f"starts {datetime.fromtimestamp(caps.history_start, UTC).date().isoformat()}")
    days = caps.history_days.get(timeframe)
    if days is not None:
        parts.append(f"reaches back {days} days only")
    return " and ".join(parts) or "is unlimited"
