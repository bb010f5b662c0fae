"""The router: which provider serves a request, and what to do when one fails.

Choosing is by date and timeframe, from each provider's declared
:class:`~barfill.domain.capabilities.Capabilities` only:

* A range that ends before the *live* session (the first session, counted
  with extended hours, that has not closed yet at ``now``) holds only final
  bars and goes to the ``historical`` order. A range that reaches into the
  live session (its bars are forming or about to) goes to the ``realtime``
  order, and only providers declaring ``realtime`` are kept. The boundary is
  the live session's d1 label (00:00 local of its date): every bar of that
  session is labelled at or after it, except its w1 bar, labelled on the
  Monday before, whose ranges also end after it and so count as live too.
* Providers that lack the timeframe natively, or whose ``history_days`` for it
  does not reach back to ``start``, are skipped.
* Names in the order lists that are not configured are skipped, so the
  default orders work whatever keys a user has.

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

import numpy as np

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import TradingCalendar
from barfill.domain.capabilities import Capabilities
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput, NotSupported, ProviderError
from barfill.ports import Provider

_DAY = 86_400

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

    def live_boundary(self, now: int) -> int:
        """The d1 label (UTC seconds) of the first session not closed (extended hours) at ``now``."""
        i = int(np.searchsorted(self.calendar.ext_closes, now, side="right"))
        if i >= len(self.calendar.midnights):
            return int(self.calendar.midnights[-1]) + _DAY
        return int(self.calendar.midnights[i])

    def is_live(self, end: int, *, now: int) -> bool:
        """Whether [start, end) reaches into the live (current or next) session."""
        return end > self.live_boundary(now)

    def capabilities(self, name: str) -> Capabilities:
        return self.providers[name].capabilities

    def choose(
        self,
        timeframe: Timeframe,
        start: int,
        end: int,
        *,
        now: int,
        pinned: str | None = None,
        prefer: str | None = None,
    ) -> list[str]:
        """Provider names able to serve [start, end) of ``timeframe``, most preferred first.

        ``now`` is Unix seconds (UTC). ``prefer`` moves one able provider to the
        front (a slice is tried first with the provider it was sized for). An
        empty list means nobody can; see :meth:`explain` for why.

        Raises:
            InvalidInput: ``pinned`` names no configured provider.
        """
        chosen = self._rank(timeframe, start, end, now=now, pinned=pinned)[0]
        if prefer is not None and prefer in chosen:
            chosen.remove(prefer)
            chosen.insert(0, prefer)
        return chosen

    def deepest(self, timeframe: Timeframe, *, pinned: str | None = None) -> str | None:
        """The provider whose ``timeframe`` history reaches back furthest (None: nobody serves it).

        Used to size slices for a window no provider fully reaches: the planner
        then reports the part beyond that history as unfillable.
        """
        names = [pinned] if pinned is not None else [*self.historical, *self.realtime]
        able = [n for n in names if n in self.providers and self.capabilities(n).supports(timeframe)]
        if not able:
            return None
        unlimited = 10**9
        return max(able, key=lambda n: self.capabilities(n).history_days.get(timeframe, unlimited))

    def explain(
        self, timeframe: Timeframe, start: int, end: int, *, now: int, pinned: str | None = None
    ) -> list[str]:
        """Why each candidate provider was skipped, one line each."""
        return self._rank(timeframe, start, end, now=now, pinned=pinned)[1]

    def _rank(
        self, timeframe: Timeframe, start: int, end: int, *, now: int, pinned: str | None
    ) -> tuple[list[str], list[str]]:
        live = self.is_live(end, now=now)
        if pinned is not None:
            if pinned not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none configured"
                raise InvalidInput("provider", f"one of: {known}", pinned)
            candidates = [pinned]
        else:
            candidates = self.realtime if live else self.historical
        chosen: list[str] = []
        skipped: list[str] = []
        for name in candidates:
            caps = self.providers[name].capabilities
            days = caps.history_days.get(timeframe)
            if not caps.supports(timeframe):
                skipped.append(f"{name}: no {timeframe.value} bars")
            elif live and not caps.realtime:
                skipped.append(f"{name}: no bars of the current session")
            elif days is not None and start < now - days * _DAY:
                skipped.append(f"{name}: {timeframe.value} history reaches back {days} days only")
            else:
                chosen.append(name)
        if not candidates:
            skipped.append(f"no provider configured for {'realtime' if live else 'historical'} ranges")
        return chosen, skipped

    async def fetch(
        self,
        symbols: Sequence[str],
        timeframe: Timeframe,
        start: int,
        end: int,
        *,
        now: int,
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
        names = self.choose(timeframe, start, end, now=now, pinned=pinned, prefer=prefer)
        if not names:
            reasons = "; ".join(self.explain(timeframe, start, end, now=now, pinned=pinned))
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
