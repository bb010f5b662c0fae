"""What the ``/v1`` route modules share: the App and scope dependencies, the ticker path, times.

:mod:`barfill.server.v1` and :mod:`barfill.server.bars_route` both take a
ticker, a timeframe and times; they are parsed here, once, so every route
answers bad input with the same 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from barfill.bootstrap import App
from barfill.domain.timeframes import Timeframe
from barfill.errors import InvalidInput
from barfill.server.deps import get_app, require
from barfill.service.ensure import parse_time

Read = Depends(require("read"))
Write = Depends(require("write"))
Admin = Depends(require("admin"))
AppDep = Annotated[App, Depends(get_app)]
MIN_TIME, MAX_TIME = 0, 4_102_444_800  # 1970 .. 2100
Symbol = Annotated[str, Path(min_length=1, max_length=32, description="Ticker, e.g. AAPL")]


def parse_timeframe(value: str) -> Timeframe:
    return Timeframe.parse(value)


def parse_query_time(value: str | None, field: str, tz: str) -> int | None:
    """Unix seconds, or a date (exchange-local; an end date is inclusive) or ISO time, via ``parse_time``."""
    if value is None:
        return None
    text = value.strip()
    number = text.lstrip("-").isdigit()
    ts = int(text) if number and len(text) < 15 else parse_time(text, field, tz=tz, end=field == "end")
    if not MIN_TIME <= ts <= MAX_TIME:
        raise InvalidInput(field, "a time between 1970 and 2100", value)
    return ts
