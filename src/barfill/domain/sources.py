"""One source per range on read: which stored bars a read returns.

The store keeps every provider's bars side by side (keyed by provider and
layer). A read must not splice them bar by bar: Polygon's h1 bar labelled
09:00 holds pre-market trades, an h1 resampled from session-only m15 does
not; Yahoo's prices are split-adjusted, Polygon's raw. So a read picks, for
each **range**, exactly one **source** and returns only that source's bars.

* A *range* is the session a bar belongs to: its d1 bucket on the exchange's
  clock (:meth:`TradingCalendar.bucket`). For w1 bars, and for d1 bars read
  to build w1 bars, it is the week bucket (:func:`range_timeframe`).
* A *source* is one ``(provider, layer)`` pair. Derived bars are their own
  providers, named ``resample:<source timeframe>``.

Precedence, best first (:func:`source_key`):

1. layer: ``historical`` (final) before ``intraday`` (provisional) before
   ``forecast`` (model output: only where no real bar exists for the session);
2. within a layer, native bars before resampled ones (``resample:*``);
3. native providers in the configured order for that layer (the router's
   historical order for ``historical``, its realtime order for ``intraday``),
   then providers missing from the order, alphabetically;
4. resampled providers by their source timeframe, finest first (an h1 from
   m1 before one from m15), then by name.

So a session's candles are: historical native bars of the preferred
provider; else of the next one; else historical resampled bars; else
intraday native bars; else intraday resampled; else forecast.

One basis per read: the caller's ``basis``, or else the basis of the best
source present in the rows (the most recently fetched basis, if that source
holds several because its configuration changed). Rows of any other basis are
dropped *before* sources are chosen, so a range that only another basis
covers comes back empty rather than mixed.

Everything here is pure: numpy arrays in, a boolean mask out. Times are Unix
seconds, UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from barfill.domain.bars import I64, Basis, Layer
from barfill.domain.calendar import TradingCalendar
from barfill.domain.resample import bucket_ends
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput

RESAMPLED_PREFIX = "resample:"

Bools = np.ndarray[Any, np.dtype[np.bool_]]

_LAYER_RANK = {Layer.historical.value: 0, Layer.intraday.value: 1, Layer.forecast.value: 2}
# Range labels are computed only for times the calendar's time-zone arithmetic handles;
# reads of "everything" pass bounds like 0 and 2**62.
_SAFE_SPAN = (0, 2**33)  # 1970 .. 2242


@dataclass(frozen=True)
class Precedence:
    """Preferred provider order per layer (best first); the router's orders in an app.

    Attributes:
        historical: order among native ``historical`` providers (the router's historical order).
        intraday: order among native ``intraday`` providers (the router's realtime order).
    """

    historical: tuple[str, ...] = ()
    intraday: tuple[str, ...] = ()

    @classmethod
    def of(cls, value: Precedence | Sequence[str] | None) -> Precedence:
        """``None``: no preference (alphabetical); a plain sequence: the same order for both layers.

        Raises:
            InvalidInput: for a bare string (a provider order is a sequence of names).
        """
        if value is None:
            return cls()
        if isinstance(value, Precedence):
            return value
        if isinstance(value, str):
            raise InvalidInput("precedence", "a sequence of provider names, best first", value)
        order = tuple(str(v) for v in value)
        return cls(order, order)

    def order(self, layer: str) -> tuple[str, ...]:
        if layer == Layer.historical.value:
            return self.historical
        if layer == Layer.intraday.value:
            return self.intraday
        return ()


def source_key(provider: str, layer: str, precedence: Precedence) -> tuple[int, int, int, str]:
    """Sort key of a source: smaller is preferred (see the module docstring for the order)."""
    layer_rank = _LAYER_RANK.get(layer, len(_LAYER_RANK))
    if provider.startswith(RESAMPLED_PREFIX):
        token = provider[len(RESAMPLED_PREFIX) :]
        try:
            finest = Timeframe.parse(token).seconds
        except InvalidInput:
            finest = 2**31
        return (layer_rank, 1, finest, provider)
    order = precedence.order(layer)
    position = order.index(provider) if provider in order else len(order)
    return (layer_rank, 0, position, provider)


@dataclass(frozen=True)
class Selection:
    """What a read keeps.

    Attributes:
        keep: one bool per candidate row.
        basis: the basis of every kept row (the asked one, else the best
            source's; ``None`` when there were no rows and none was asked).
        sources: the chosen ``(provider, layer)`` pairs, best first.
    """

    keep: Bools
    basis: Basis | None
    sources: tuple[tuple[str, str], ...]

    @property
    def providers(self) -> tuple[str, ...]:
        """Distinct providers of the kept rows, best first."""
        return tuple(dict.fromkeys(p for p, _ in self.sources))


def select_sources(
    ranges: Sequence[int] | I64,
    providers: Sequence[str] | np.ndarray[Any, Any],
    layers: Sequence[str] | np.ndarray[Any, Any],
    bases: Sequence[str] | np.ndarray[Any, Any],
    *,
    precedence: Precedence | Sequence[str] | None = None,
    basis: Basis | str | None = None,
    fetched_at: Sequence[float] | np.ndarray[Any, Any] | None = None,
) -> Selection:
    """Choose one source per range and one basis for the whole read.

    Args:
        ranges: each candidate row's range label (:func:`range_labels`).
        providers, layers, bases: each row's provider, layer and basis.
        precedence: the provider order (see :class:`Precedence`).
        basis: read only this basis; ``None``: the best source's.
        fetched_at: each row's fetch time, used only to pick the basis of a
            best source that holds several.

    Returns:
        A :class:`Selection`: within each range every kept row has the same
        ``(provider, layer)``, and every kept row has the read's basis.

    Raises:
        InvalidInput: ``basis`` is not a known basis; the columns differ in length.
    """
    prec = Precedence.of(precedence)
    wanted = _parse_basis(basis)
    labels = np.asarray(ranges, dtype=np.int64)
    prov = np.asarray(providers, dtype=object)
    lay = np.asarray(layers, dtype=object)
    bas = np.asarray(bases, dtype=object)
    n = len(labels)
    if not len(prov) == len(lay) == len(bas) == n:
        raise InvalidInput("rows", "ranges, providers, layers and bases of one length each", n)
    if n == 0:
        return Selection(np.zeros(0, dtype=np.bool_), wanted, ())
    # Rank each distinct (provider, layer) pair once, then spread ranks over the rows.
    prov_code, prov_names = _factorize(prov)
    layer_code, layer_names = _factorize(lay)
    width = len(layer_names)
    pair_ids, pair_of_row = np.unique(prov_code * width + layer_code, return_inverse=True)
    pairs = [(str(prov_names[i // width]), str(layer_names[i % width])) for i in pair_ids.tolist()]
    keys = [source_key(p, layer, prec) for p, layer in pairs]
    rank_of_pair = np.empty(len(pairs), dtype=np.int64)
    rank_of_pair[sorted(range(len(pairs)), key=keys.__getitem__)] = np.arange(len(pairs))
    rank = rank_of_pair[pair_of_row]
    if wanted is None:
        wanted = _best_basis(rank, bas, fetched_at)
    candidate = np.flatnonzero(bas == wanted.value)
    keep = np.zeros(n, dtype=np.bool_)
    if len(candidate):
        range_ids, range_of_row = np.unique(labels[candidate], return_inverse=True)
        best = np.full(len(range_ids), np.iinfo(np.int64).max)
        np.minimum.at(best, range_of_row, rank[candidate])
        keep[candidate[rank[candidate] == best[range_of_row]]] = True
    by_rank = {int(rank_of_pair[i]): pairs[i] for i in range(len(pairs))}
    sources = tuple(by_rank[int(r)] for r in np.unique(rank[keep]))
    return Selection(keep, wanted, sources)


def _factorize(values: np.ndarray[Any, Any]) -> tuple[I64, list[Any]]:
    """Each value's code and the distinct values, by hashing: sorting 10^5 Python strings is slow."""
    distinct = list(dict.fromkeys(values.tolist()))
    code = {v: i for i, v in enumerate(distinct)}
    return np.fromiter(map(code.__getitem__, values.tolist()), dtype=np.int64, count=len(values)), distinct


def _parse_basis(basis: Basis | str | None) -> Basis | None:
    if basis is None:
        return None
    try:
        return Basis(basis)
    except ValueError as e:
        raise InvalidInput("basis", "one of " + ", ".join(b.value for b in Basis), basis) from e


def _best_basis(
    rank: I64, bases: np.ndarray[Any, Any], fetched_at: Sequence[float] | np.ndarray[Any, Any] | None
) -> Basis:
    best = np.flatnonzero(rank == rank.min())
    if fetched_at is not None:
        stamps = np.asarray(fetched_at, dtype=np.float64)[best]
        return Basis(str(bases[best[int(np.argmax(stamps))]]))
    return Basis(str(bases[best[0]]))


def range_timeframe(timeframe: Timeframe) -> Timeframe:
    """The range a bar of ``timeframe`` is selected by: its session (d1), or its week for w1."""
    return Timeframe.w1 if timeframe == Timeframe.w1 else Timeframe.d1


def range_labels(calendar: TradingCalendar, by: Timeframe, ts: I64) -> I64:
    """Each bar's range label: the ``by`` bucket (d1: session date, w1: week) holding its open."""
    return calendar.bucket(by, np.asarray(ts, dtype=np.int64))


def range_span(calendar: TradingCalendar, by: Timeframe, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened to whole ranges, so a partial read selects as a whole one would.

    Bounds outside 1970-2242 (a read of "everything") are left as they are.
    """
    lo, hi = start, end
    if _SAFE_SPAN[0] < start < _SAFE_SPAN[1]:
        lo = min(start, int(calendar.bucket(by, np.asarray([start], dtype=np.int64))[0]))
    if _SAFE_SPAN[0] < end <= _SAFE_SPAN[1]:
        last = calendar.bucket(by, np.asarray([end - 1], dtype=np.int64))
        hi = max(end, int(bucket_ends(by, last, calendar)[0]))
    return lo, hi
