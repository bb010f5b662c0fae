"""Ticker symbols: what barfill accepts as a symbol name.

The allowed alphabet covers US equities (``BRK.B``, ``BF-B``), indices
(``^GSPC``), futures and FX as providers spell them (``ES=F``, ``EUR/USD``,
``X:BTCUSD``) and share classes with underscores, while refusing whitespace,
quotes and anything else that could smuggle a second meaning into a URL, a
file name or a log line.
"""

from __future__ import annotations

import re

from barfill.errors import InvalidInput

MAX_TICKER_LENGTH = 24
_TICKER = re.compile(rf"[A-Z0-9.\-/:^=_]{{1,{MAX_TICKER_LENGTH}}}")
_EXPECTED = (
    f"1 to {MAX_TICKER_LENGTH} characters among A-Z, 0-9 and . - / : ^ = _ (e.g. AAPL, BRK.B, ^GSPC, EUR/USD)"
)


def validate_ticker(value: str) -> str:
    """Return the canonical (upper-case, trimmed) ticker.

    Raises:
        InvalidInput: (field ``symbol``) naming the allowed characters and length.
    """
    if not isinstance(value, str):
        raise InvalidInput("symbol", _EXPECTED, value)
    ticker = value.strip().upper()
    if _TICKER.fullmatch(ticker) is None:
        raise InvalidInput("symbol", _EXPECTED, value)
    return ticker


_FILE_SAFE = re.compile(r"[A-Z0-9_=.\-^]")


def ticker_file_stem(ticker: str) -> str:
    """A file-name stem for ``ticker`` that stays one plain name in its folder.

    Tickers may hold ``/`` (``EUR/USD``), ``:`` and dots, which in a path could
    climb out of a folder (``../X``, ``/X``), hide a file (``.X``) or be
    illegal on Windows. ``/`` and ``:``, and a leading ``.``, become ``%XX``
    (the character's code in hex); ``%`` is never part of a ticker, so two
    tickers never share a stem. ``EUR/USD`` → ``EUR%2FUSD``, ``../X`` →
    ``%2E.%2FX``, ``BRK.B`` stays ``BRK.B``.
    """
    canonical = validate_ticker(ticker)
    return "".join(
        c if _FILE_SAFE.fullmatch(c) and not (i == 0 and c == ".") else f"%{ord(c):02X}"
        for i, c in enumerate(canonical)
    )
