"""Ticker validation: canonical upper case, a small safe alphabet, 1 to 24 characters."""

from __future__ import annotations

import pytest

from barfill.domain.symbols import MAX_TICKER_LENGTH, ticker_file_stem, validate_ticker
from barfill.errors import InvalidInput


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("aapl", "AAPL"),
        ("AAPL", "AAPL"),
        (" msft ", "MSFT"),
        ("brk.b", "BRK.B"),
        ("BF-B", "BF-B"),
        ("^gspc", "^GSPC"),
        ("eur/usd", "EUR/USD"),
        ("X:BTCUSD", "X:BTCUSD"),
        ("ES=F", "ES=F"),
        ("abc_1", "ABC_1"),
        ("A", "A"),
        ("Z" * MAX_TICKER_LENGTH, "Z" * MAX_TICKER_LENGTH),
    ],
)
def test_valid_tickers_are_canonicalized(given: str, canonical: str) -> None:
    assert validate_ticker(given) == canonical


@pytest.mark.parametrize(
    "given",
    [
        "",
        "   ",
        "AA PL",
        "AAPL;",
        "A'B",
        'A"B',
        "ÄPFEL",
        "AA\tPL",
        "a*b",
        "Z" * (MAX_TICKER_LENGTH + 1),
        "$SPX",
    ],
)
def test_invalid_tickers_name_what_is_allowed(given: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_ticker(given)
    assert info.value.field == "symbol"
    assert "A-Z" in info.value.expected and str(MAX_TICKER_LENGTH) in info.value.expected
    assert info.value.got == given


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidInput):
        validate_ticker(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ticker", "stem"),
    [
        ("AAPL", "AAPL"),
        ("brk.b", "BRK.B"),
        ("EUR/USD", "EUR%2FUSD"),
        ("X:BTCUSD", "X%3ABTCUSD"),
        ("../ETC", "%2E.%2FETC"),
        ("/ROOT", "%2FROOT"),
        ("..", "%2E."),
        ("^GSPC", "^GSPC"),
    ],
)
def test_file_stems_never_leave_their_folder(ticker: str, stem: str) -> None:
    assert ticker_file_stem(ticker) == stem
    assert "/" not in stem and stem not in (".", "..") and not stem.startswith(".")


def test_file_stems_of_different_tickers_differ() -> None:
    tickers = ["EUR/USD", "EUR_USD", "EURUSD", "EUR-USD", "EUR.USD", "EUR:USD"]
    assert len({ticker_file_stem(t) for t in tickers}) == len(tickers)
