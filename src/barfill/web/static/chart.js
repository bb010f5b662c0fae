// The chart page: paint from the browser cache, then from the server, then ensure coverage and
// follow the hydration over SSE, merging new bars in place without losing the user's zoom.

import { ApiError, fmtDuration, fmtInt, getJSON, postJSON, subscribe, wireKeyField } from "./api.js";
import { loadChart, saveChart } from "./cache.js";
import { wireCombobox, wireRadioGroup } from "./pickers.js";

const TIMEFRAMES = ["m1", "m5", "m15", "m30", "h1", "h4", "d1", "w1"];
const DEFAULT_DAYS = { m1: 7, m5: 30, m15: 30, m30: 60, h1: 90, h4: 90, d1: 365, w1: 365 };
const PRESETS = [
  ["5D", 5], ["1M", 30], ["3M", 90], ["1Y", 365], ["2Y", 730], ["5Y", 1826],
];
const COLORS = {
  up: "#1b8a5a", down: "#d43f3a",
  intraUp: "#3b82f6", intraDown: "#f59e0b",
  forecast: "#7c3aed",
};
const LAYERS = ["historical", "intraday", "forecast"];
const DAY = 86400;
const MAX_BARS = 50000;
const FORECAST_DAYS = 30;

const $ = (id) => document.getElementById(id);
const el = {
  chart: $("chart"), empty: $("empty"), banner: $("banner"), bannerText: $("banner-text"),
  bannerBar: $("banner-bar"), error: $("error"), notice: $("notice"), readout: $("readout"),
  symbol: $("symbol"), symbolList: $("symbol-list"),
};

const params = new URLSearchParams(location.search);
const state = {
  symbol: (params.get("symbol") || "AAPL").trim().toUpperCase(),
  timeframe: TIMEFRAMES.includes(params.get("timeframe")) ? params.get("timeframe") : "h1",
  days: null,
  candles: new Map(), // time -> {time, open, high, low, close, volume, layer}
  forecast: new Map(), // time -> value
  userMoved: false,
  stopEvents: null,
  hydrating: false,
};
state.days = Number.parseInt(params.get("days"), 10) || null;

// Without an explicit window, keep the one already desired for this chart (ensure replaces a
// definition's window: opening a chart must not shrink two years of history to the default).
async function chooseWindow() {
  if (state.days) return;
  state.days = DEFAULT_DAYS[state.timeframe];
  try {
    const { definitions } = await getJSON("/v1/definitions");
    const mine = definitions.find((d) => d.symbol === state.symbol && d.timeframe === state.timeframe);
    if (mine?.window_days) state.days = mine.window_days;
  } catch {
    /* the default window will do */
  }
}

let LW; // the lightweight-charts module
let chart, candleSeries, volumeSeries, forecastSeries;

// -- messages ----------------------------------------------------------------------------------------

function showError(text) {
  el.error.textContent = text;
  el.error.hidden = !text;
}

function showNotice(text) {
  el.notice.textContent = text;
  el.notice.hidden = !text;
}

function showBanner(p) {
  const pct = Math.floor(p.percent ?? 0);
  const eta = p.eta_s ?? p.eta_seconds;
  el.bannerText.textContent =
    `Hydrating ${state.timeframe}… ${pct}% · ${fmtInt(p.bars_written ?? 0)} bars · ETA ${fmtDuration(eta)}`;
  el.bannerBar.style.width = `${Math.min(100, Math.max(0, p.percent ?? 0))}%`;
  el.banner.dataset.percent = String(p.percent ?? 0);
  el.banner.hidden = false;
}

function hideBanner() {
  el.banner.hidden = true;
}

// -- data --------------------------------------------------------------------------------------------

function windowStart() {
  return Math.floor(Date.now() / 1000) - state.days * DAY;
}

const iso = (s) => new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");

function barsUrl(start, end) {
  // Split-adjusted, as charts are read: no false cliff at a split (bars are stored raw).
  const q = new URLSearchParams({ timeframe: state.timeframe, layers: LAYERS.join(","), adjust: "split" });
  if (start !== undefined) q.set("start", iso(start));
  if (end !== undefined) {
    q.set("end", iso(end));
  } else {
    // Up to now plus the forecast horizon, newest bars first: a long m1 window stays light.
    q.set("end", iso(Math.floor(Date.now() / 1000) + FORECAST_DAYS * DAY));
    q.set("limit", String(MAX_BARS));
  }
  return `/v1/bars/${encodeURIComponent(state.symbol)}?${q}`;
}

// Merge one columnar answer {layers: {historical: {t,o,h,l,c,v}, ...}} into the chart's maps.
// Historical bars win over intraday ones at the same time (final beats provisional).
function ingest(layers, { replaceFrom, replaceTo } = {}) {
  if (replaceFrom !== undefined) {
    for (const t of [...state.candles.keys()]) if (t >= replaceFrom && t < replaceTo) state.candles.delete(t);
    for (const t of [...state.forecast.keys()]) if (t >= replaceFrom && t < replaceTo) state.forecast.delete(t);
  }
  for (const layer of ["intraday", "historical"]) {
    const cols = layers?.[layer];
    if (!cols || !cols.t) continue;
    for (let i = 0; i < cols.t.length; i++) {
      const t = cols.t[i];
      const prev = state.candles.get(t);
      if (prev && prev.layer === "historical" && layer === "intraday") continue;
      state.candles.set(t, {
        time: t, open: cols.o[i], high: cols.h[i], low: cols.l[i], close: cols.c[i],
        volume: cols.v ? cols.v[i] : 0, layer,
      });
    }
  }
  const f = layers?.forecast;
  if (f && f.t) for (let i = 0; i < f.t.length; i++) state.forecast.set(f.t[i], f.c[i]);
}

function snapshot() {
  // Columnar copy of what is drawn, for the IndexedDB cache.
  const out = { historical: cols(), intraday: cols(), forecast: { t: [], c: [] } };
  for (const b of [...state.candles.values()].sort((a, b) => a.time - b.time)) {
    const c = out[b.layer];
    c.t.push(b.time); c.o.push(b.open); c.h.push(b.high); c.l.push(b.low); c.c.push(b.close); c.v.push(b.volume);
  }
  for (const [t, v] of [...state.forecast.entries()].sort((a, b) => a[0] - b[0])) {
    out.forecast.t.push(t); out.forecast.c.push(v);
  }
  return out;
}

function cols() {
  return { t: [], o: [], h: [], l: [], c: [], v: [] };
}

// -- drawing -----------------------------------------------------------------------------------------

function render(source) {
  const bars = [...state.candles.values()].sort((a, b) => a.time - b.time);
  const saved = state.userMoved ? chart.timeScale().getVisibleRange() : null;
  candleSeries.setData(
    bars.map((b) => {
      const up = b.close >= b.open;
      const intra = b.layer === "intraday";
      const color = intra ? (up ? COLORS.intraUp : COLORS.intraDown) : up ? COLORS.up : COLORS.down;
      return { time: b.time, open: b.open, high: b.high, low: b.low, close: b.close, color, borderColor: color, wickColor: color };
    }),
  );
  volumeSeries.setData(
    bars.map((b) => ({
      time: b.time, value: b.volume,
      color: b.close >= b.open ? "rgba(27,138,90,0.35)" : "rgba(212,63,58,0.35)",
    })),
  );
  forecastSeries.setData(
    [...state.forecast.entries()].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({ time, value })),
  );
  if (saved) {
    chart.timeScale().setVisibleRange(saved);
  } else if (bars.length) {
    // The right edge first: the newest ~200 bars, with a little room on the right.
    chart.timeScale().setVisibleLogicalRange({ from: Math.max(0, bars.length - 200), to: bars.length + 3 });
  }
  const d = el.chart.dataset;
  d.bars = String(bars.length);
  d.intraday = String(bars.filter((b) => b.layer === "intraday").length);
  d.forecast = String(state.forecast.size);
  d.first = bars.length ? String(bars[0].time) : "";
  d.last = bars.length ? String(bars[bars.length - 1].time) : "";
  d.source = source;
  d.renders = String(Number(d.renders) + 1);
  el.empty.hidden = bars.length > 0;
  if (!bars.length) {
    el.empty.textContent = `No ${state.timeframe} bars of ${state.symbol} stored yet.`;
  }
  showReadout(bars[bars.length - 1]);
}

function showReadout(b) {
  if (!b) {
    el.readout.textContent = `${state.symbol} · ${state.timeframe}`;
    return;
  }
  const when = new Date(b.time * 1000).toISOString().slice(0, 16).replace("T", " ");
  const f = (x) => (x >= 1000 ? x.toFixed(1) : x.toFixed(2));
  const tag = b.layer === "intraday" ? " · intraday (provisional)" : "";
  el.readout.textContent =
    `${state.symbol} · ${state.timeframe} · ${when} UTC  O ${f(b.open)}  H ${f(b.high)}  L ${f(b.low)}  C ${f(b.close)}  V ${fmtInt(b.volume)}${tag}`;
}

function makeChart() {
  chart = LW.createChart(el.chart, {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#1f2937", fontSize: 12 },
    grid: { vertLines: { color: "#eef0f3" }, horzLines: { color: "#eef0f3" } },
    timeScale: { timeVisible: state.timeframe !== "d1" && state.timeframe !== "w1", secondsVisible: false, rightOffset: 3 },
    crosshair: { mode: LW.CrosshairMode.Normal },
    rightPriceScale: { scaleMargins: { top: 0.08, bottom: 0.25 } },
  });
  candleSeries = chart.addSeries(LW.CandlestickSeries, {
    upColor: COLORS.up, downColor: COLORS.down, borderVisible: true, wickVisible: true,
  });
  volumeSeries = chart.addSeries(LW.HistogramSeries, { priceFormat: { type: "volume" }, priceScaleId: "vol" });
  volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  forecastSeries = chart.addSeries(LW.LineSeries, {
    color: COLORS.forecast, lineWidth: 2, lineStyle: LW.LineStyle.Dashed, title: "forecast",
  });
  chart.subscribeCrosshairMove((param) => {
    const t = param?.time;
    showReadout(t !== undefined ? state.candles.get(t) : lastBar());
  });
  // Any user gesture on the chart means: keep this view when new bars land.
  for (const ev of ["wheel", "pointerdown", "touchstart"]) {
    el.chart.addEventListener(ev, () => { state.userMoved = true; }, { passive: true });
  }
  el.chart.addEventListener("keydown", () => { state.userMoved = true; });
}

function lastBar() {
  let best;
  for (const b of state.candles.values()) if (!best || b.time > best.time) best = b;
  return best;
}

// -- network -----------------------------------------------------------------------------------------

async function loadStored() {
  try {
    const data = await getJSON(barsUrl(windowStart()));
    state.candles.clear();
    state.forecast.clear();
    ingest(data.layers);
    render("network");
    saveChart(state.symbol, state.timeframe, snapshot());
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return true; // not stored yet: ensure will create it
    if (e instanceof ApiError && (e.status === 422 || e.status === 400)) {
      showError(`Cannot chart ${state.symbol} ${state.timeframe}: ${e.message}`);
    } else {
      showError(`Could not read stored bars: ${e.message}`);
    }
    return false;
  }
}

// New bars landed for [start, end): fetch just that range and merge it, coalescing bursts.
let pending = null;
let fetching = false;
async function fetchRange(start, end) {
  pending = pending ? { start: Math.min(pending.start, start), end: Math.max(pending.end, end) } : { start, end };
  if (fetching) return;
  fetching = true;
  try {
    while (pending) {
      const { start: s, end: e } = pending;
      pending = null;
      const from = Math.max(s, windowStart());
      if (from >= e) continue;
      const data = await getJSON(barsUrl(from, e));
      ingest(data.layers, { replaceFrom: from, replaceTo: e });
      render("live");
    }
    saveChart(state.symbol, state.timeframe, snapshot());
  } catch (err) {
    showError(`Could not read new bars: ${err.message}`);
  } finally {
    fetching = false;
  }
}

async function explainFailures(p) {
  const failed = p.failed_slices ?? 0;
  if (failed <= 0) return;
  let reason = "";
  try {
    const { jobs } = await getJSON("/v1/jobs?status=failed&limit=500");
    const mine = jobs.find((j) => j.symbol === state.symbol && j.timeframe === state.timeframe);
    if (mine) reason = ` The provider (${mine.provider}) answered ${mine.error_code}: ${mine.error_message || "no message"}.`;
  } catch {
    /* the count alone still says what happened */
  }
  showError(
    `${failed} part(s) of this window could not be fetched from the provider.${reason} ` +
      "The chart shows what was stored; the dashboard lists the errors and has a retry button.",
  );
}

async function finish(job) {
  state.hydrating = false;
  state.stopEvents?.();
  state.stopEvents = null;
  await loadStored();
  try {
    const p = await getJSON(`/v1/progress/${encodeURIComponent(job)}`);
    await explainFailures(p);
  } catch {
    /* progress is a nicety here */
  }
  hideBanner();
}

function follow(job, first) {
  state.hydrating = true;
  showBanner(first);
  let lastEvent = Date.now();
  state.stopEvents = subscribe(`/v1/events?job=${encodeURIComponent(job)}`, (type, data) => {
    lastEvent = Date.now();
    if (type === "progress" && (!data.job || data.job === job)) {
      if (data.done) finish(job);
      else showBanner(data);
    } else if (type === "bars" && data.symbol === state.symbol && data.timeframe === state.timeframe) {
      fetchRange(data.start, data.end);
    }
  });
  // A safety net if the stream is quiet (a proxy buffering it, say): ask for progress now and then.
  const poll = setInterval(async () => {
    if (!state.hydrating) return clearInterval(poll);
    if (Date.now() - lastEvent < 4000) return;
    try {
      const p = await getJSON(`/v1/progress/${encodeURIComponent(job)}`);
      if (p.done) {
        clearInterval(poll);
        finish(job);
      } else {
        showBanner(p);
        fetchRange(windowStart(), Math.floor(Date.now() / 1000) + DAY);
      }
    } catch {
      /* the stream or the next poll will tell */
    }
  }, 2000);
}

async function ensure() {
  let answer;
  try {
    answer = await postJSON("/v1/ensure", { symbol: state.symbol, timeframe: state.timeframe, window_days: state.days });
  } catch (e) {
    if (e.status === 422 || e.status === 400) showError(`Cannot chart ${state.symbol} ${state.timeframe}: ${e.message}`);
    else if (e.status === 404) showError(`Unknown symbol ${state.symbol}: ${e.message}`);
    else showError(`Could not ask the server to fill this chart: ${e.message}`);
    return;
  }
  const result = answer.results?.[0];
  if (result?.unfillable?.length) {
    const spans = result.unfillable.map(([a, b]) => `${a.slice(0, 10)} → ${b.slice(0, 10)}`).join(", ");
    showNotice(`No configured provider has bars for part of this window (${spans}); it stays empty.`);
  }
  const p = answer.progress || {};
  const done = p.done ?? ((p.queued_slices ?? 0) === 0 && (p.running_slices ?? 0) === 0);
  if (done) {
    await explainFailures(p);
    return;
  }
  follow(answer.job, { ...p, percent: p.percent ?? p.progress_percent ?? 0 });
}

// -- pickers -----------------------------------------------------------------------------------------

function navigate(changes) {
  const q = new URLSearchParams({ symbol: state.symbol, timeframe: state.timeframe, days: String(state.days), ...changes });
  if (changes.timeframe && !changes.days) q.set("days", String(DEFAULT_DAYS[changes.timeframe]));
  location.search = q.toString();
}

function makeTimeframePicker() {
  wireRadioGroup($("timeframes"), TIMEFRAMES.map((tf) => [tf, tf]), state.timeframe, (tf) => navigate({ timeframe: tf }));
}

function makeWindowPicker() {
  const presets = PRESETS.some(([, d]) => d === state.days) ? PRESETS : [...PRESETS, [`${state.days}D`, state.days]];
  wireRadioGroup($("windows"), presets.map(([label, d]) => [String(d), label]), String(state.days), (d) =>
    navigate({ days: d }),
  );
}

function makeSymbolPicker() {
  el.symbol.value = state.symbol;
  wireCombobox(el.symbol, el.symbolList, async (q) => {
    const r = await getJSON(`/v1/symbols?q=${encodeURIComponent(q)}`);
    const items = Array.isArray(r) ? r : r.symbols ?? r.results ?? [];
    return items.map((x) => (typeof x === "string" ? x : x.symbol ?? x.ticker)).filter(Boolean);
  }, (symbol) => navigate({ symbol: symbol.trim().toUpperCase() }));
}

// -- start -------------------------------------------------------------------------------------------

async function main() {
  document.title = `${state.symbol} ${state.timeframe} · barfill`;
  wireKeyField($("api-key"), $("api-key-save"), () => location.reload());
  makeSymbolPicker();
  makeTimeframePicker();
  try {
    LW = await import("./vendor/lightweight-charts.mjs");
  } catch {
    showError("The chart library is not installed on this server (run `make web`, then reload).");
    return;
  }
  makeChart();
  render("none");
  // First paint from the browser's cache, before asking the server anything.
  const cached = await loadChart(state.symbol, state.timeframe);
  if (cached?.layers) {
    ingest(cached.layers);
    render("cache");
  }
  await chooseWindow();
  makeWindowPicker();
  await loadStored();
  await ensure();
}

window.addEventListener("pagehide", () => state.stopEvents?.());
main();
