"""What the providers' corporate-action parsers share: checked dates and checked actions.

A provider's split or dividend that is missing a field or impossible (a ratio
of 0, negative cash, a date that is not a date) fails the whole answer as
``bad_payload``, naming the provider, the symbol, the row and the field, like
a bad bar does: stored actions change every adjusted read, so a wrong one must
never be stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from barfill.domain.actions import CorporateAction
from barfill.errors import InvalidInput
from barfill.providers.http import fail_payload


def iso_date(value: Any, *, provider: str, where: str, field: str) -> dt.date:
    """A ``YYYY-MM-DD`` string as a date; else ``bad_payload``."""
    if not isinstance(value, str):
        fail_payload(provider, f"{where}: field {field!r}: expected a YYYY-MM-DD date, got {value!r}")
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        fail_payload(provider, f"{where}: field {field!r}: expected a YYYY-MM-DD date, got {value!r}")


@contextmanager
def refused_as_bad_payload(provider: str, where: str) -> Iterator[None]:
    """Turn a value the domain refuses (:class:`InvalidInput`) into ``bad_payload`` naming ``where``."""
    try:
        yield
    except InvalidInput as e:
        fail_payload(provider, f"{where}: {e}")


def within(actions: list[CorporateAction], start: dt.date, end: dt.date) -> list[CorporateAction]:
    """Actions with ``start <= ex_date <= end``, by ex date then kind (one order for every provider)."""
    kept = [a for a in actions if start <= a.ex_date <= end]
    return sorted(kept, key=lambda a: (a.ex_date, a.kind.value))
