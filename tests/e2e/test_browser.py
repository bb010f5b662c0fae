"""The web page in a real browser (Debian's Chromium, headless) against a live server.

The synthetic provider is gated (see :class:`GatedProvider`): each fetch
waits until the test releases it, so every state the page passes through is
reached on purpose. Nothing here measures time; every wait is on a condition
with a generous timeout. Screenshots go to the test's tmp folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from barfill.domain.bars import Layer
from barfill.domain.calendar import get_calendar
from barfill.domain.timeframes import Timeframe
from barfill.errors import ProviderError
from barfill.service.ensure import ensure
from barfill.store import web_reports
from barfill.store.api_keys import create_key
from barfill.store.bars import delete_bars, upsert_bars
from barfill.store.db import Database
from barfill.store.symbols import symbol_id
from tests.e2e.browser_support import CHROMIUM, CHROMIUM_ARGS, GatedProvider, LiveServer, live_server
from tests.e2e.helpers import make_app

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():  # never skipped: `make test` installs it first
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def gated() -> GatedProvider:
    # Small pages: a 30-day h1 window becomes several slices that land one by one.
    return GatedProvider(calendar=get_calendar(), page_limit=21)


@pytest.fixture
def server(db: Database, gated: GatedProvider) -> Iterator[LiveServer]:
    app = make_app(db, {"synthetic": gated}, tick_interval_s=3600.0, worker_poll_s=0.05)
    try:
        # One slice at a time: the page sees the slices land in the queue's own order.
        with live_server(app, concurrency=1) as srv:
            try:
                yield srv
            finally:
                gated.release_all()  # never leave a fetch hanging at shutdown
    finally:
        app.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def chart_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.eval_on_selector(
        "#chart",
        "el => ({bars: +el.dataset.bars, first: +el.dataset.first || 0, last: +el.dataset.last || 0,"
        " source: el.dataset.source, renders: +el.dataset.renders})",
    )
    return state


def banner(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.eval_on_selector(
        "#banner", "el => ({shown: !el.hidden, text: el.textContent.trim(), pct: +(el.dataset.percent || 0)})"
    )
    return state


def wait_until(page: Page, condition: Callable[[], bool], *, tries: int = 1200) -> None:
    """Poll a server-side condition while letting the page run (a condition, never a duration)."""
    for _ in range(tries):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError("condition not reached")


def shot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_chart_fills_in_right_edge_first_then_paints_from_cache(
    server: LiveServer, gated: GatedProvider, page: Page, tmp_path: Path
) -> None:
    url = f"{server.base}/chart?symbol=NEWCO&timeframe=h1&days=30"
    page.goto(url)
    # Nothing stored yet: the banner appears at 0 % and the chart says so in words.
    page.wait_for_selector("#banner:not([hidden])", timeout=WAIT_MS)
    page.wait_for_function("() => document.querySelector('#empty').hidden === false", timeout=WAIT_MS)
    assert "Hydrating h1…" in banner(page)["text"]
    assert chart_state(page)["bars"] == 0
    # The worker has claimed the first slice; its fetch waits at the gate.
    wait_until(page, lambda: gated.waiting() == 1)
    assert sum(server.app.queue.counts().values()) >= 3  # several slices to fill
    shot(page, tmp_path, "01-empty-hydrating")

    # The first slice the server hands out lands: candles appear, the percentage rises.
    assert gated.release_next(1) == 1
    page.wait_for_function("() => +document.querySelector('#chart').dataset.bars > 0", timeout=WAIT_MS)
    page.wait_for_function("() => +document.querySelector('#banner').dataset.percent > 0", timeout=WAIT_MS)
    first_paint = chart_state(page)
    first_pct = banner(page)["pct"]
    assert banner(page)["shown"]
    assert 0 < first_pct < 100
    shot(page, tmp_path, "02-right-edge")

    # One more: more bars, older ones, the right edge unchanged, a higher percentage.
    wait_until(page, lambda: gated.waiting() == 1)
    assert gated.release_next(1) == 1
    page.wait_for_function(
        f"() => +document.querySelector('#chart').dataset.bars > {first_paint['bars']}", timeout=WAIT_MS
    )
    page.wait_for_function(
        f"() => +document.querySelector('#banner').dataset.percent > {first_pct}", timeout=WAIT_MS
    )
    second = chart_state(page)
    assert second["first"] < first_paint["first"]
    assert second["last"] == first_paint["last"]
    assert second["source"] == "live"

    # The rest: the banner leaves at 100 %, every bar of the window is drawn.
    gated.release_all()
    page.wait_for_selector("#banner", state="hidden", timeout=WAIT_MS)
    done = chart_state(page)
    assert done["bars"] > second["bars"]
    assert done["last"] == first_paint["last"]  # the right edge came first: newest slice claimed first
    assert page.is_hidden("#error")
    shot(page, tmp_path, "03-filled")
    # The readout shows OHLCV of the newest bar.
    readout = page.text_content("#readout") or ""
    assert "NEWCO · h1" in readout and " O " in readout and " V " in readout

    # Open it again with every API request held back: the candles come from the browser's cache.
    held: list[Route] = []
    page.route("**/v1/**", lambda route: held.append(route))
    page.goto(f"{server.base}/chart?symbol=NEWCO&timeframe=h1")  # its window: the stored definition's
    page.wait_for_function(
        "() => document.querySelector('#chart').dataset.source === 'cache'", timeout=WAIT_MS
    )
    cached = chart_state(page)
    assert cached["bars"] == done["bars"]
    assert cached["last"] == done["last"]
    wait_until(page, lambda: bool(held))
    assert held, "the page should have asked the server"
    assert chart_state(page)["source"] == "cache"  # drawn while no answer has come
    shot(page, tmp_path, "04-from-cache")
    for route in held:
        route.continue_()
    page.unroute("**/v1/**")
    page.wait_for_function(
        "() => document.querySelector('#chart').dataset.source === 'network'", timeout=WAIT_MS
    )
    assert chart_state(page)["bars"] == done["bars"]
    assert page.is_hidden("#banner")  # covered: nothing to hydrate


def test_dashboard_shows_the_job_and_the_map_turns_covered(
    server: LiveServer, gated: GatedProvider, page: Page, tmp_path: Path
) -> None:
    ensure(server.app, ["DASH"], "h1", days=30)
    page.goto(f"{server.base}/dashboard?timeframe=h1&days=30")
    row = "#jobs tr[data-symbol='DASH']"
    page.wait_for_selector(f"{row}[data-active='true']", timeout=WAIT_MS)
    page.wait_for_selector("#covmap tr[data-symbol='DASH'] [data-state='gap']", timeout=WAIT_MS)
    open_slices = page.eval_on_selector_all(
        "#counts [data-status='queued'] b, #counts [data-status='running'] b",
        "els => els.reduce((n, e) => n + Number(e.textContent.replace(/,/g, '')), 0)",
    )
    assert open_slices > 0
    assert page.locator("#providers tr[data-provider='synthetic']").count() == 1
    shot(page, tmp_path, "05-dashboard-gaps")

    gated.release_all()
    page.wait_for_selector(f"{row}[data-active='false']", timeout=WAIT_MS)
    page.wait_for_function(
        "() => { const r = document.querySelector(\"#covmap tr[data-symbol='DASH']\");"
        " return r && !r.querySelector(\"[data-state='gap']\")"
        " && r.querySelector(\"[data-state='covered']\"); }",
        timeout=WAIT_MS,
    )
    states = page.eval_on_selector_all(
        "#covmap tr[data-symbol='DASH'] [data-state]", "els => els.map(e => e.dataset.state)"
    )
    # Provisional: the current session between its close and 20:00 New York (the real clock runs here).
    assert set(states) <= {"covered", "provisional", "closed", "outside"}
    assert "closed" in states  # 30 days hold weekends
    assert page.locator(f"{row} progress").get_attribute("value") == "100"
    page.wait_for_function(
        "() => document.querySelector('#rate-now').textContent.includes('last hour')", timeout=WAIT_MS
    )
    shot(page, tmp_path, "06-dashboard-covered")


def test_pickers_work_from_the_keyboard(server: LiveServer, gated: GatedProvider, page: Page) -> None:
    gated.release_all()
    for ticker in ("AAPL", "AAL", "MSFT"):
        ensure(server.app, [ticker], "d1", days=5)
    page.goto(f"{server.base}/chart?symbol=MSFT&timeframe=d1&days=30")
    # Timeframes: the checked one takes the focus, arrows move it, Enter chooses.
    checked = page.locator("#timeframes [aria-checked='true']")
    assert checked.inner_text() == "d1"
    checked.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.value") == "w1"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.dataset.value") == "h4"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "timeframe=h4" in page.url and "symbol=MSFT" in page.url

    # Symbol search: type, arrow down to a stored symbol, Enter.
    page.focus("#symbol")
    page.keyboard.type("AA")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#symbol-list [role=option]')]"
        ".map(o => o.textContent).join(' ') === 'AAL AAPL'",
        timeout=WAIT_MS,
    )
    options = page.locator("#symbol-list [role='option']").all_inner_texts()
    assert options == ["AAL", "AAPL"]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.get_attribute("#symbol", "aria-activedescendant") == "symbol-list-opt-1"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "symbol=AAPL" in page.url and "timeframe=h4" in page.url


def test_bad_symbol_is_explained_in_words(server: LiveServer, page: Page, tmp_path: Path) -> None:
    page.goto(f"{server.base}/chart?symbol=NOT%20A%20TICKER&timeframe=h1")
    page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
    text = page.text_content("#error") or ""
    assert "Cannot chart NOT A TICKER h1" in text
    assert page.is_visible("#empty")  # never a blank chart: it says there are no bars
    assert "No h1 bars of NOT A TICKER" in (page.text_content("#empty") or "")
    shot(page, tmp_path, "07-bad-symbol")


def test_index_links_to_both_pages(server: LiveServer, page: Page) -> None:
    page.goto(server.base + "/")
    hrefs = page.eval_on_selector_all("a", "els => els.map(a => a.getAttribute('href'))")
    assert "/dashboard" in hrefs
    assert any(h.startswith("/chart?") for h in hrefs)
    assert page.locator(".error").count() == 0  # the chart library is installed


def test_opening_a_chart_keeps_the_stored_window(
    server: LiveServer, gated: GatedProvider, page: Page
) -> None:
    gated.release_all()
    ensure(server.app, ["KEEP"], "d1", days=730)
    page.goto(f"{server.base}/chart?symbol=KEEP&timeframe=d1")
    page.wait_for_selector("#windows [aria-checked='true'][data-value='730']", timeout=WAIT_MS)
    page.wait_for_function("() => +document.querySelector('#chart').dataset.bars > 0", timeout=WAIT_MS)
    with server.app.db.read() as conn:
        defs = [d for d in web_reports.definitions_for(conn) if d["symbol"] == "KEEP"]
    assert [d["window_days"] for d in defs] == [730]


def test_intraday_is_marked_and_forecast_is_a_line(
    server: LiveServer, gated: GatedProvider, page: Page, tmp_path: Path
) -> None:
    gated.release_all()
    ensure(server.app, ["LAYR"], "h1", days=10)
    page.goto(f"{server.base}/chart?symbol=LAYR&timeframe=h1&days=10")
    page.wait_for_selector("#banner", state="hidden", timeout=WAIT_MS)
    page.wait_for_function("() => +document.querySelector('#chart').dataset.bars > 0", timeout=WAIT_MS)
    last = chart_state(page)["last"]
    # The last two days become provisional (intraday) bars, and a forecast follows a week later.
    lo, hi = last - 2 * 86_400, last + 3_600
    truth = gated.truth("LAYR", Timeframe.h1, lo, hi)
    assert len(truth) > 3
    with server.app.db.write() as conn:
        sid = symbol_id(conn, "LAYR")
        assert sid is not None
        delete_bars(conn, sid, Timeframe.h1, lo, hi, layer=Layer.historical)
        upsert_bars(conn, sid, truth, layer=Layer.intraday, fetched_at=server.app.db.now())
    week = 7 * 86_400
    t = [int(x) + week for x in truth.ts]
    closes = [float(x) for x in truth.close]
    forecast = {"t": t, "o": closes, "h": closes, "l": closes, "c": closes}
    r = httpx.post(
        f"{server.base}/v1/forecasts", json={"symbol": "LAYR", "timeframe": "h1", "bars": forecast}
    )
    assert r.status_code == 200, r.text
    page.reload()
    page.wait_for_function(
        "() => document.querySelector('#chart').dataset.source === 'network'"
        " && +document.querySelector('#chart').dataset.intraday > 0",
        timeout=WAIT_MS,
    )
    drawn = page.eval_on_selector("#chart", "el => ({...el.dataset})")
    assert int(drawn["intraday"]) == len(truth)
    assert int(drawn["forecast"]) == len(truth)
    assert int(drawn["last"]) == last  # the candles end with the provisional ones
    assert "intraday (provisional)" in (page.text_content("#readout") or "")
    shot(page, tmp_path, "08-layers")


def test_a_failing_provider_is_explained_in_words(
    server: LiveServer, gated: GatedProvider, page: Page, tmp_path: Path
) -> None:
    gated.failure = ProviderError("http_403", "not entitled to this data", retryable=False)
    gated.release_all()
    page.goto(f"{server.base}/chart?symbol=FAIL&timeframe=h1&days=10")
    page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
    page.wait_for_function(
        "() => document.querySelector('#error').textContent.includes('not entitled')", timeout=WAIT_MS
    )
    text = page.text_content("#error") or ""
    assert "could not be fetched from the provider" in text and "http_403" in text
    page.wait_for_selector("#banner", state="hidden", timeout=WAIT_MS)
    assert page.is_visible("#empty")  # not a blank chart: it says nothing is stored
    shot(page, tmp_path, "09-provider-failing")

    # The dashboard groups the failures and retries them with one button.
    page.goto(f"{server.base}/dashboard")
    button = page.get_by_role("button", name="Retry")
    button.wait_for(timeout=WAIT_MS)
    assert "http_403" in (page.text_content("#failures") or "")
    gated.failure = None
    button.click()
    page.wait_for_selector("#no-failures:not([hidden])", timeout=WAIT_MS)
    page.wait_for_selector("#covmap tr[data-symbol='FAIL'] [data-state='covered']", timeout=WAIT_MS)


def test_an_api_key_is_asked_once_and_kept(server: LiveServer, gated: GatedProvider, page: Page) -> None:
    gated.release_all()
    with server.app.db.write() as conn:
        _, key = create_key(conn, "browser", "write")
    page.goto(f"{server.base}/chart?symbol=KEYD&timeframe=d1&days=30")
    page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
    assert "needs an API key" in (page.text_content("#error") or "")
    page.click("details.key summary")
    page.fill("#api-key", key)
    with page.expect_navigation():
        page.click("#api-key-save")
    page.wait_for_function("() => +document.querySelector('#chart').dataset.bars > 0", timeout=WAIT_MS)
    assert page.is_hidden("#error")
    assert page.evaluate("localStorage.getItem('barfill.apiKey')") == key
    # Kept: the dashboard in the same browser needs no second entry.
    page.goto(f"{server.base}/dashboard")
    page.wait_for_selector("#jobs tr[data-symbol='KEYD']", timeout=WAIT_MS)
    assert page.is_hidden("#error")
