"""A provider's JSON bar rows as numpy columns, without a Python object per bar.

A page of 50,000 bars parsed row by row (a tuple per bar, a checked
``float()`` per field) costs about a second of CPU and holds ~400k Python
objects; here each column is gathered with one C-level ``map`` over the rows,
its JSON types checked with one ``set(map(type, ...))`` and converted by numpy
in one call: milliseconds, and only the arrays survive.

Only the common case is taken this way: every row a JSON object and every
value of its documented JSON type. Anything else (a string price, a bool, an
integral float where an integer belongs, a row that is not an object) makes
:func:`json_columns` return ``None``, and the adapter parses that page row by
row as before: the row parser alone decides what is an error and how its
message reads (symbol, bar, field), so both paths accept the same pages and
give the same bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from itertools import repeat
from typing import Any

import numpy as np

_EXACT_INT = 2**53  # the row parser reads integers through float(): exact below this


class Kind(Enum):
    """What a field must hold; optional fields may be ``null`` or absent."""

    number = "number"  # int or float, not bool: float64
    integer = "integer"  # int: int64
    optional_number = "optional_number"  # float64, NaN when null/absent
    optional_integer = "optional_integer"  # int64, -1 when null/absent


_NUMBER = frozenset({int, float})
_ACCEPTS: dict[Kind, frozenset[type]] = {
    Kind.number: _NUMBER,
    Kind.integer: frozenset({int}),
    Kind.optional_number: _NUMBER | {type(None)},
    Kind.optional_integer: frozenset({int, type(None)}),
}

Columns = dict[str, np.ndarray[Any, Any]]


def json_columns(rows: Sequence[Any], fields: Mapping[str, Kind]) -> Columns | None:
    """One array per field of ``rows`` (decoded JSON objects), or None to parse row by row.

    Args:
        rows: the decoded list of bar objects.
        fields: each key to read and what it must hold.

    Returns:
        ``{key: array}`` with one value per row, in row order; None when any
        row or value is not of the expected JSON type (the caller's row
        parser then reports it, or accepts it in its own way).
    """
    if rows and set(map(type, rows)) != {dict}:
        return None
    out: Columns = {}
    for key, kind in fields.items():
        values = list(map(dict.get, rows, repeat(key)))
        column = _column(values, kind)
        if column is None:
            return None
        out[key] = column
    return out


def _column(values: list[Any], kind: Kind) -> np.ndarray[Any, Any] | None:
    types = set(map(type, values))
    if not types <= _ACCEPTS[kind]:
        return None
    try:
        if kind in (Kind.number, Kind.optional_number):
            return np.array(values, dtype=np.float64)  # null -> NaN
        if type(None) in types:
            values = [-1 if v is None else v for v in values]
        column = np.array(values, dtype=np.int64)
    except OverflowError:
        return None
    if len(column) and int(np.abs(column).max()) >= _EXACT_INT:
        return None
    return column
