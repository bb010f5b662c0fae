"""Kept bar reads, and patching them after a write instead of reading everything again.

A chart read right after a write to its own symbol (a live edge, a vendor
correction) used to read its whole range again: two years of m1 for one new
bar. :mod:`barfill.store.stamps` logs what each commit changed (upserted
bars of a timeframe and layer between two times, or something unknown), so a
kept read whose symbol's counter moved can be patched:

* every change is an upsert of another timeframe, of a layer the read does not
  show, or of sessions outside its range → the kept read stands (its ETag moves
  with the counter, as a cold read's does);
* upserts of its own timeframe and layers → just the sessions they touched
  (whole sessions: a read picks one source per session) are read again and
  spliced into the kept columns; the ETag's fingerprint is computed again from
  the kept rows' :class:`~barfill.store.bar_rows.RowStamps`, the same numbers a
  cold read finds;
* anything else — flags, deletions, corporate actions, an unknown writer, a
  read of the newest N (its start moves), ``adjust=all`` (its dividend factors
  read closes of any timeframe), sources of more than one basis (a read picks
  its basis from the best source of all its rows) — is read again in full.

Everything here but :func:`respliced` is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy.engine import Connection

from barfill.domain.adjust import Adjust
from barfill.domain.bars import Basis, Layer
from barfill.store.bar_reads import Scan, read_bars_scan
from barfill.store.bar_rows import NO_ROWS, Fingerprint, RowStamps, merge_fingerprints
from barfill.store.stamps import UPSERT, Change

if TYPE_CHECKING:
    from barfill.server.bars_out import BarQuery

Array = np.ndarray[Any, Any]
Columns = dict[str, Array]
# JSON key → BarBatch column.
COLUMNS = {
    "t": "ts",
    "o": "open",
    "h": "high",
    "l": "low",
    "c": "close",
    "v": "volume",
    "vw": "vwap",
    "n": "trade_count",
}
_DTYPES = {"t": np.int64, "n": np.int64}
# A change this large a share of the read is read in full: splicing saves little then.
MAX_SPLICED_SHARE = 0.25


class KeptRead(NamedTuple):
    """A validated bar read: its query, ETag, the symbol's change counter read before its data,
    the fingerprint the ETag was made from, whether it was a read of the newest N, and, for an
    adjusted read, when the symbol's next announced action takes effect (the answer changes
    then, with nothing written: it must be read again in full)."""

    query: BarQuery
    tag: str
    seq: int
    fingerprint: tuple[Any, ...]
    limited: bool = False
    pending: float | None = None
    notes: tuple[tuple[str, str], ...] = ()  # response headers saying what an adjusted read lacks


@dataclass(frozen=True)
class KeptLayer:
    """One layer's bars over a read's whole range, as served (``cols``, ``provider``), with what
    patching them needs: each bar's provider, every stored row's stamps, and the symbol's change
    counter read before them (None: not known, never patched)."""

    cols: Columns
    provider: str
    provider_codes: Array
    provider_names: tuple[str, ...]
    stamps: RowStamps
    bases: frozenset[str]
    seq: int | None = None

    @classmethod
    def of(cls, scans: Sequence[Scan]) -> KeptLayer:
        """The scans of adjacent ranges, in order, as one."""
        if not scans:
            empty = {k: np.empty(0, dtype=_DTYPES.get(k, np.float64)) for k in COLUMNS}
            none = RowStamps(empty["t"], empty["o"], np.zeros(0, dtype=np.bool_))
            return cls(empty, "", np.zeros(0, dtype=np.int64), (), none, frozenset())
        names = tuple(dict.fromkeys(n for s in scans for n in s.provider_names))
        codes = [_recode(s.provider_codes, s.provider_names, names) for s in scans]
        if len(scans) == 1:
            cols = {key: getattr(scans[0].batch, name) for key, name in COLUMNS.items()}
            stamps = scans[0].stamps
        else:
            cols = {
                key: np.concatenate([getattr(s.batch, name) for s in scans]) for key, name in COLUMNS.items()
            }
            stamps = RowStamps(
                *(
                    np.concatenate([getattr(s.stamps, f) for s in scans])
                    for f in ("ts", "fetched_at", "flagged")
                )
            )
        code = codes[0] if len(codes) == 1 else np.concatenate(codes)
        bases = frozenset().union(*(s.bases for s in scans))
        return cls(cols, _label(code, names), code, names, stamps, bases)

    def fingerprint(self) -> Fingerprint:
        return self.stamps.fingerprint()

    @property
    def nbytes(self) -> int:
        arrays = [*self.cols.values(), self.provider_codes, self.stamps.ts, self.stamps.fetched_at]
        return sum(int(a.nbytes) for a in arrays) + int(self.stamps.flagged.nbytes) + 1_000


def layers_fingerprint(kept: Sequence[KeptLayer]) -> Fingerprint:
    """The bars' fingerprint of a read from its layers (as a cold read merges its chunks')."""
    return merge_fingerprints([k.fingerprint() for k in kept]) if kept else NO_ROWS


def _recode(codes: Array, names: tuple[str, ...], into: tuple[str, ...]) -> Array:
    if names == into[: len(names)]:
        return codes
    remap = np.array([into.index(n) for n in names], dtype=np.int64)
    out: Array = remap[codes]
    return out


def _label(codes: Array, names: tuple[str, ...]) -> str:
    """The provider label of a layer: its bars' providers, sorted, joined with ``+``."""
    if not len(codes):
        return ""
    used = np.flatnonzero(np.bincount(codes, minlength=len(names)))
    return "+".join(sorted({names[i] for i in used.tolist()}))


def patch(kept: KeptLayer, start: int, end: int, scan: Scan) -> KeptLayer:
    """``kept`` with its bars and stamps in ``[start, end)`` replaced by ``scan`` (a read of that range)."""
    t = kept.cols["t"]
    i, j = np.searchsorted(t, [start, end], side="left").tolist()
    cols = {
        key: np.concatenate([kept.cols[key][:i], getattr(scan.batch, name), kept.cols[key][j:]])
        for key, name in COLUMNS.items()
    }
    s = kept.stamps
    a, b = np.searchsorted(s.ts, [start, end], side="left").tolist()
    n = scan.stamps
    stamps = RowStamps(
        np.concatenate([s.ts[:a], n.ts, s.ts[b:]]),
        np.concatenate([s.fetched_at[:a], n.fetched_at, s.fetched_at[b:]]),
        np.concatenate([s.flagged[:a], n.flagged, s.flagged[b:]]),
    )
    names = tuple(dict.fromkeys((*kept.provider_names, *scan.provider_names)))
    codes = np.concatenate(
        [
            kept.provider_codes[:i],
            _recode(scan.provider_codes, scan.provider_names, names),
            kept.provider_codes[j:],
        ]
    )
    return KeptLayer(cols, _label(codes, names), codes, names, stamps, kept.bases | scan.bases, kept.seq)


@dataclass(frozen=True)
class Plan:
    """What a kept read must read again: per layer, disjoint ``[start, end)`` spans of whole
    sessions (clipped to the read). No spans: it stands as it is."""

    spans: Mapping[Layer, Sequence[tuple[int, int]]]


def plan(
    changes: Sequence[Change], read: KeptRead, widen: Callable[[int, int], tuple[int, int]]
) -> Plan | None:
    """How to bring ``read`` up to date after ``changes``, or None when it must be read in full.

    ``widen`` turns ``[start, end)`` into the whole sessions holding it
    (:func:`barfill.store.bar_reads.session_span`).
    """
    q = read.query
    if not changes:
        return Plan({})
    if q.adjust == Adjust.all_adjusted:
        return None
    spans: dict[Layer, list[tuple[int, int]]] = {}
    for c in changes:
        if c.kind != UPSERT or c.first_ts is None or c.last_ts is None or c.layer is None:
            return None
        if c.timeframe != q.timeframe.value or Layer(c.layer) not in q.layers:
            continue
        lo, hi = widen(c.first_ts, c.last_ts + 1)
        lo, hi = max(lo, q.start), min(hi, q.end)
        if lo >= hi:
            continue
        if read.limited:  # the newest N may start elsewhere now
            return None
        spans.setdefault(Layer(c.layer), []).append((lo, hi))
    merged = {layer: _merge(found) for layer, found in spans.items()}
    total = sum(hi - lo for found in merged.values() for lo, hi in found)
    if total > MAX_SPLICED_SHARE * (q.end - q.start) * max(1, len(merged)):
        return None
    return Plan(merged)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def respliced(
    conn: Connection, q: BarQuery, kept: Mapping[Layer, KeptLayer], todo: Plan
) -> dict[Layer, KeptLayer] | None:
    """``kept`` with ``todo``'s spans read again in ``conn``'s transaction and spliced in, or None
    when a span's sources are of another basis than the rest (then the read's basis, chosen
    from all its rows, may change everywhere: read it in full)."""
    out = dict(kept)
    for layer, spans in todo.spans.items():
        layer_kept = out[layer]
        for start, end in spans:
            # adjust=raw reads raw rows only; otherwise the read's one basis, if it has one.
            if q.adjust == Adjust.raw:
                basis = None
            elif len(layer_kept.bases) > 1:
                return None
            else:
                basis = next(iter(layer_kept.bases), None)
            scan = scan_layer(conn, q, layer, start, end, basis=basis)
            if q.adjust != Adjust.raw and len(layer_kept.bases | scan.bases) > 1:
                return None
            layer_kept = patch(layer_kept, start, end, scan)
        out[layer] = layer_kept
    return out


def scan_layer(
    conn: Connection, q: BarQuery, layer: Layer, start: int, end: int, *, basis: Basis | str | None = None
) -> Scan:
    """One layer of ``q``'s bars in ``[start, end)`` with their stamps: how a cold read scans
    its chunks and a patch its sessions, so both see the same rows."""
    return read_bars_scan(
        conn,
        q.symbol_id,
        q.timeframe,
        start,
        end,
        layers=[layer],
        adjust=q.adjust,
        include_flagged=q.include_flagged,
        basis=basis,
    )
