"""Polygon pages parsed as columns give, bar for bar, what the row parser gives.

Every page here is parsed both ways: :meth:`PolygonProvider._parse_answer`
(typed decoding into columns, which hands a page not of the documented shape
to the row parser) and ``BarBatch.from_rows(_parse_rows(...))``, the
row-by-row parser of before. Whole answers go through the adapter over ``httpx.MockTransport``
(bodies in Polygon's documented shape, some damaged), to check what reaches
the caller: the same bars, or the same error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfill.domain.bars import BarBatch
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.providers import PolygonProvider, polygon
from barfill.providers.http import session_bars
from barfill.providers.polygon import _PAGE

from .servers import Truth, ny

CAL = get_calendar("XNYS")
KEY = "k-0123456789"
BASE = "http://127.0.0.1:9"
START, END = ny(2024, 3, 4), ny(2024, 3, 9)
T0 = ny(2024, 3, 4, 9, 30) * 1000

Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler | None = None) -> PolygonProvider:
    def refuse(_: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler or refuse))
    return PolygonProvider(client, api_key=KEY, base_url=BASE, calendar=CAL)


def page(results: list[Any] | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ticker": "AAPL", "status": "OK", "adjusted": False, "request_id": "r", **extra}
    if results is not None:
        body["results"] = results
        body["resultsCount"] = len(results)
    return body


def bar(i: int, **fields: Any) -> dict[str, Any]:
    row = {"t": T0 + 60_000 * i, "o": 10.0 + i, "h": 11.5 + i, "l": 9.5 + i, "c": 10.5 + i, "v": 100 + i}
    row |= {"vw": 10.25 + i, "n": 7 + i}
    row.update(fields)
    return {k: v for k, v in row.items() if v is not _ABSENT}


_ABSENT = object()


def assert_same(got: BarBatch, want: BarBatch) -> None:
    assert (got.symbol, got.timeframe, got.provider, got.basis) == (
        want.symbol,
        want.timeframe,
        want.provider,
        want.basis,
    )
    for name in ("ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # NaN equals NaN here


_PARSER: list[PolygonProvider] = []


def parser() -> PolygonProvider:
    """One adapter for the parsing tests (they send nothing)."""
    if not _PARSER:
        _PARSER.append(provider())
    return _PARSER[0]


def answer(body: Any) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(body).encode(), request=httpx.Request("GET", BASE))


def columnar(body: Any) -> BarBatch:
    return parser()._parse_answer(answer(body), "AAPL", Timeframe.m1)[0]


def typed(body: Any) -> bool:
    """Whether the typed decoder takes the page (the columnar path runs)."""
    try:
        _PAGE.decode(json.dumps(body).encode())
    except msgspec.ValidationError:
        return False
    return True


def both_ways(body: dict[str, Any]) -> tuple[BarBatch, BarBatch]:
    p = parser()
    fast = columnar(body)
    rows = BarBatch.from_rows("AAPL", Timeframe.m1, "polygon", p._parse_rows(body.get("results", []), "AAPL"))
    return fast, rows


# -- pages the columnar path takes whole ---------------------------------------------------------


PLAIN_PAGES = {
    "plain": [bar(i) for i in range(50)],
    "integer prices and volume": [bar(i, o=10 + i, h=12 + i, l=9 + i, c=11 + i, v=100 + i) for i in range(5)],
    "vw and n null": [bar(i, vw=None, n=None) for i in range(5)],
    "vw and n missing": [bar(i, vw=_ABSENT, n=_ABSENT) for i in range(5)],
    "some vw/n missing, some null": [
        bar(0),
        bar(1, vw=None),
        bar(2, n=_ABSENT),
        bar(3, vw=_ABSENT, n=None),
        bar(4, otc=True),
    ],
    "unsorted with a repeated t": [bar(3), bar(1), bar(2), bar(1, o=99.0, h=100.0)],
    "negative and zero values (validation's business, not the parser's)": [bar(0, v=0, o=-1.0)],
    "one bar": [bar(0)],
    "empty results list": [],
}


@pytest.mark.parametrize("results", PLAIN_PAGES.values(), ids=PLAIN_PAGES.keys())
def test_plain_pages_are_read_as_columns_and_equal_the_row_parser(results: list[Any]) -> None:
    assert typed(page(results))  # the columnar path really runs
    fast, rows = both_ways(page(results))
    assert len(fast) == len(results)
    assert_same(fast.take(np.argsort(fast.ts, kind="stable")), rows)


def test_a_page_without_results_is_empty() -> None:
    assert typed(page(None, resultsCount=0))
    fast, rows = both_ways(page(None, resultsCount=0))
    assert len(fast) == 0
    assert_same(fast, rows)


def test_null_vwap_is_nan_and_null_trades_is_minus_one() -> None:
    fast, _ = both_ways(page([bar(0, vw=None, n=None), bar(1, vw=_ABSENT, n=_ABSENT), bar(2)]))
    assert np.isnan(fast.vwap[:2]).all() and fast.vwap[2] == 12.25
    assert fast.trade_count.tolist() == [-1, -1, 9]


# -- pages the columnar path hands to the row parser ---------------------------------------------


HANDED_OVER = {
    "integral float t": ([bar(0, t=float(T0)), bar(1)], None),
    "integral float n": ([bar(0, n=7.0)], None),
    "a string price": ([bar(0), bar(1, o="NaN")], "field 'o': expected a number, got 'NaN'"),
    "a bool volume": ([bar(0, v=True)], "field 'v': expected a number, got True"),
    "a missing close": ([bar(0, c=_ABSENT)], "field 'c': expected a number, got None"),
    "a null high": ([bar(0, h=None)], "field 'h': expected a number, got None"),
    "a fractional n": ([bar(0, n=2.5)], "field 'n': expected an integer, got 2.5"),
    "a string vw": ([bar(0, vw="1.5")], "field 'vw': expected a number, got '1.5'"),
    "a missing t": ([bar(0, t=_ABSENT)], "AAPL results[0]: field 't': expected a number, got None"),
    "a row that is a list": ([bar(0), [1, 2, 3]], "AAPL results[1]: expected an object, got list"),
}


@pytest.mark.parametrize(("results", "error"), HANDED_OVER.values(), ids=HANDED_OVER.keys())
def test_other_pages_go_row_by_row_with_the_same_outcome(results: list[Any], error: str | None) -> None:
    assert not typed(page(results))
    if error is None:
        fast, rows = both_ways(page(results))
        assert_same(fast, rows)
        return
    with pytest.raises(ProviderError) as info:
        both_ways(page(results))
    assert info.value.code == "bad_payload"
    assert error in str(info.value)


number = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False, width=64))
anything = st.one_of(number, st.none(), st.booleans(), st.text(max_size=3), st.just(_ABSENT))


@st.composite
def rows_of(draw: Any, value: Any, trades: Any) -> list[Any]:
    n = draw(st.integers(0, 20))
    out = []
    for i in range(n):
        fields = {k: draw(value) for k in ("o", "h", "l", "c", "v")}
        fields |= {"vw": draw(st.one_of(number, st.none(), st.just(_ABSENT), value))}
        fields |= {"n": draw(st.one_of(st.integers(0, 10**6), st.none(), st.just(_ABSENT), trades))}
        out.append(bar(draw(st.integers(0, 5)) + i, **fields))
    return out


@settings(max_examples=100, deadline=None)
@given(rows_of(number, st.integers(-(2**40), 2**40)))
def test_any_well_typed_page_is_equal_both_ways(results: list[Any]) -> None:
    columnar, rows = both_ways(page(results))
    assert_same(columnar.take(np.argsort(columnar.ts, kind="stable")), rows)


@settings(max_examples=100, deadline=None)
@given(rows_of(anything, anything))
def test_any_page_gives_the_same_bars_or_the_same_error(results: list[Any]) -> None:
    """Whatever the row parser does with a page (bars, bad_payload, any error), so does the adapter."""
    p = parser()
    try:
        want: BarBatch | str = BarBatch.from_rows(
            "AAPL", Timeframe.m1, "polygon", p._parse_rows(results, "AAPL")
        )
    except Exception as e:
        want = f"{type(e).__name__}: {e}"
    try:
        got: BarBatch | str = columnar(page(results))
    except Exception as e:
        got = f"{type(e).__name__}: {e}"
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        assert_same(got.take(np.argsort(got.ts, kind="stable")), want)


tricky = st.one_of(  # values that hold what the piece cutter looks for
    anything,
    st.sampled_from(["},{", "]", '"results":[', "}", "{"]),
    st.lists(st.fixed_dictionaries({"a": number}), max_size=3),
    st.dictionaries(st.sampled_from(["x", "results"]), st.lists(number, max_size=2), max_size=2),
    st.fixed_dictionaries(
        {"results": st.lists(st.fixed_dictionaries({"t": st.just(T0), "o": number}), max_size=2)}
    ),
)


@settings(max_examples=60, deadline=None)  # the odd answers are also listed by hand below
@given(rows_of(anything, anything), tricky, st.booleans())
def test_pieces_decode_as_the_whole_answer_does(results: list[Any], extra: Any, rows_last: bool) -> None:
    """Cut at every row (pieces of 1 byte), with odd values in rows and around them."""
    for i, row in enumerate(results):
        if i % 3 == 1 and extra is not _ABSENT:
            row["z"] = extra
    body = page(results, message=extra if extra is not _ABSENT else None)
    if rows_last:  # Polygon sends status, request_id and next_url after the rows; try both
        body = {k: v for k, v in body.items() if k != "results"} | {"results": results}
    content = orjson.dumps(body)
    assert _in_pieces_of_one_byte(content) == _whole(content)


def _in_pieces_of_one_byte(content: bytes) -> Any:
    original = polygon._PIECE_BYTES
    polygon._PIECE_BYTES = 1
    try:
        return polygon._decode_in_pieces(content)
    except msgspec.MsgspecError as e:
        return repr(e)
    finally:
        polygon._PIECE_BYTES = original


def _whole(content: bytes) -> Any:
    try:
        return _PAGE.decode(content)
    except msgspec.MsgspecError as e:
        return repr(e)


ODD_ANSWERS = {
    "rows after a message holding an empty results": page([bar(0), bar(1)], message={"results": []}),
    "no rows, a message holding bar-shaped results": page([], message={"results": [bar(5), bar(6)]}),
    "no results key, a message holding one": page(None, message={"results": [bar(5)]}),
    "a row holding a list of objects": page([bar(0, z=[{"a": 1}, {"a": 2}]), bar(1)]),
    "a row holding the cut in a string": page([bar(0, z="},{"), bar(1, z="]")]),
    "a row holding an empty list": page([bar(0, z=[]), bar(1)]),
    "next_url after the rows": {**page([bar(0), bar(1)]), "next_url": "http://127.0.0.1:9/x"},
}


@pytest.mark.parametrize("body", ODD_ANSWERS.values(), ids=ODD_ANSWERS.keys())
@pytest.mark.parametrize("indent", [False, True])
def test_odd_answers_decode_in_pieces_as_whole(body: dict[str, Any], indent: bool) -> None:
    content = json.dumps(body, indent=2).encode() if indent else orjson.dumps(body)
    assert _in_pieces_of_one_byte(content) == _whole(content)


def test_a_page_is_decoded_in_pieces_of_about_piece_bytes() -> None:
    results = [bar(i) for i in range(300)]
    content = orjson.dumps(page(results))
    seen: list[int] = []
    rows = polygon._ROWS

    class Counting:
        def decode(self, piece: bytes) -> Any:
            seen.append(len(piece))
            return rows.decode(piece)

    original = polygon._ROWS, polygon._PIECE_BYTES
    polygon._ROWS, polygon._PIECE_BYTES = Counting(), 2_000  # type: ignore[assignment]
    try:
        decoded = polygon._decode_in_pieces(content)
    finally:
        polygon._ROWS, polygon._PIECE_BYTES = original
    assert decoded == _PAGE.decode(content)
    assert len(seen) > 10 and max(seen) < 2_000 + 200  # each piece ends at the first row end past the size


def test_a_t_beyond_float_precision_is_read_as_the_row_parser_reads_it() -> None:
    """The row parser reads integers through float(): the columnar path defers to it there."""
    body = page([bar(0, t=2**60 + 1), bar(1)])
    assert typed(body)
    fast, rows = both_ways(body)
    assert_same(fast, rows)
    assert fast.ts.max() == int(float(2**60 + 1)) // 1000


def test_pages_that_are_not_objects_go_to_the_generic_decoder() -> None:
    for body, error in (
        ([1, 2], "answer: expected an object, got list"),
        ({"status": "OK", "results": None}, "results: expected a list, got NoneType"),
    ):
        with pytest.raises(ProviderError) as info:
            columnar(body)
        assert info.value.code == "bad_payload" and error in str(info.value)


def test_an_error_status_is_reported_on_both_paths() -> None:
    for results in ([bar(0)], [{"t": "x"}]):
        body = {"status": "ERROR", "error": f"bad key {KEY}", "results": results}
        with pytest.raises(ProviderError) as info:
            columnar(body)
        assert (info.value.code, info.value.retryable) == ("provider_error", False)
        assert str(info.value) == "polygon: AAPL: status ERROR: bad key ***"


# -- whole answers through the adapter -----------------------------------------------------------


@pytest.fixture
async def truth_pages() -> AsyncIterator[list[dict[str, Any]]]:
    """Two pages of true m1 bars (extended hours), the second reached by next_url."""
    batch = Truth(CAL).bars("AAPL", Timeframe.m1, START, END, extended=True)
    results = [
        {"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": lo, "t": t * 1000, "n": n}
        for t, o, h, lo, c, v, vw, n in zip(
            batch.ts.tolist(),
            batch.open.tolist(),
            batch.high.tolist(),
            batch.low.tolist(),
            batch.close.tolist(),
            batch.volume.tolist(),
            batch.vwap.tolist(),
            batch.trade_count.tolist(),
            strict=True,
        )
    ]
    half = len(results) // 2
    yield [page(results[:half], next_url=f"{BASE}/v2/next?cursor=2"), page(results[half:])]


def serving(bodies: list[bytes]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        body = bodies[1] if request.url.path == "/v2/next" else bodies[0]
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return handle


async def fetch(bodies: list[bytes]) -> BarBatch:
    return (await provider(serving(bodies)).fetch(["AAPL"], Timeframe.m1, START, END))["AAPL"]


async def test_two_pages_fetched_equal_the_row_parser_of_both(truth_pages: list[dict[str, Any]]) -> None:
    got = await fetch([orjson.dumps(p) for p in truth_pages])
    rows = [r for body in truth_pages for r in parser()._parse_rows(body["results"], "AAPL")]
    want = session_bars(BarBatch.from_rows("AAPL", Timeframe.m1, "polygon", rows), CAL, extended=False)
    assert len(got) > 1000
    assert_same(got, want.between(START, END))


async def test_a_truncated_page_is_bad_payload(truth_pages: list[dict[str, Any]]) -> None:
    whole = orjson.dumps(truth_pages[1])
    with pytest.raises(ProviderError) as info:
        await fetch([orjson.dumps(truth_pages[0]), whole[: len(whole) // 2]])
    assert (info.value.code, info.value.retryable) == ("bad_payload", True)
    assert str(info.value) == (
        f"polygon: GET /v2/next: answer is not valid JSON ({len(whole) // 2} bytes, truncated or not JSON)"
    )


async def test_a_nan_literal_is_still_read_as_the_standard_decoder_reads_it() -> None:
    """orjson refuses ``NaN``; the standard decoder (used before) reads it, and validation rejects it."""
    body = json.dumps(page([bar(0, o=float("nan")), bar(1)])).encode()
    assert b"NaN" in body
    got = await fetch([body])
    assert len(got) == 2 and np.isnan(got.open[0]) and got.open[1] == 11.0


@pytest.mark.parametrize("typed_path", [True, False], ids=["typed", "row by row"])
async def test_a_page_that_read_the_limit_is_cut_at_its_last_bar_as_served(typed_path: bool) -> None:
    """Extended-hours rows are dropped while parsing, but the cut still falls at the page's
    last bar as served (post-market here): the regular-session bars before it are kept."""
    minute = 60_000
    day_close = ny(2024, 3, 4, 16, 0) * 1000
    rows = [bar(0), bar(1), bar(389)]  # 09:30, 09:31, 15:59
    rows += [bar(0, t=day_close + 60 * minute), bar(0, t=day_close + 3 * 60 * minute)]  # 17:00, 19:00
    if not typed_path:
        rows[1]["n"] = 7.0  # not an int: the typed decoder refuses the page
    body = page(rows, queryCount=50_000)
    assert typed(body) is typed_path
    got = await fetch([json.dumps(body).encode()])
    assert got.ts.tolist() == [T0 // 1000, T0 // 1000 + 60, T0 // 1000 + 389 * 60]
