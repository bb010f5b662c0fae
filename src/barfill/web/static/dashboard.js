// The operator dashboard: polls /web/api/overview and the coverage map, and refreshes early when
// the event stream says something happened.

import { fmtDuration, fmtInt, getJSON, postJSON, request, subscribe, wireKeyField } from "./api.js";
import { wireRadioGroup } from "./pickers.js";

const $ = (id) => document.getElementById(id);
const MAX_JOB_ROWS = 60; // running jobs always show; finished definitions fill up to this
const TIMEFRAMES = ["m1", "m5", "m15", "m30", "h1", "h4", "d1", "w1"];
const params = new URLSearchParams(location.search);
const view = {
  tf: TIMEFRAMES.includes(params.get("timeframe")) ? params.get("timeframe") : "h1",
  days: [14, 30, 90].includes(Number(params.get("days"))) ? Number(params.get("days")) : 30,
};
let LW = null;
let spark = null;

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function td(text, cls) {
  const c = document.createElement("td");
  if (cls) c.className = cls;
  if (text instanceof Node) c.appendChild(text);
  else c.textContent = text;
  return c;
}

function drawCounts(counts) {
  $("counts").replaceChildren(
    ...Object.entries(counts).map(([status, n]) => {
      const d = document.createElement("div");
      d.className = "count";
      d.dataset.status = status;
      d.innerHTML = `<b>${fmtInt(n)}</b><span>${status}</span>`;
      return d;
    }),
  );
}

async function drawThroughput(tp) {
  const per = tp.bucket_s || 60;
  const n = tp.t.length;
  const lastSlices = n ? tp.slices[n - 1] / per : 0;
  const lastBars = n ? tp.bars[n - 1] / per : 0;
  const total = tp.slices.reduce((a, b) => a + b, 0);
  $("rate-now").textContent =
    `now ${lastSlices.toFixed(2)} slices/s · ${fmtInt(lastBars)} bars/s · last hour ${fmtInt(total)} slices, ` +
    `${fmtInt(tp.bars.reduce((a, b) => a + b, 0))} bars`;
  if (!LW) return;
  if (!spark) {
    const c = LW.createChart($("spark"), {
      autoSize: true,
      layout: { textColor: "#374151", fontSize: 11, attributionLogo: false },
      grid: { vertLines: { visible: false }, horzLines: { color: "#f1f5f9" } },
      timeScale: { timeVisible: true, secondsVisible: false },
      leftPriceScale: { visible: true },
      handleScroll: false,
      handleScale: false,
    });
    spark = {
      bars: c.addSeries(LW.AreaSeries, { priceScaleId: "right", lineColor: "#1d4ed8", topColor: "rgba(29,78,216,.25)", bottomColor: "rgba(29,78,216,0)", lineWidth: 2, lastValueVisible: false, priceLineVisible: false }),
      slices: c.addSeries(LW.LineSeries, { priceScaleId: "left", color: "#b45309", lineWidth: 2, lastValueVisible: false, priceLineVisible: false }),
      chart: c,
    };
  }
  spark.bars.setData(tp.t.map((t, i) => ({ time: t, value: tp.bars[i] / per })));
  spark.slices.setData(tp.t.map((t, i) => ({ time: t, value: tp.slices[i] / per })));
  spark.chart.timeScale().fitContent();
}

function windowText(d) {
  return d.window_days ? `${d.window_days} d` : "fixed";
}

function drawJobs(defs) {
  const active = defs.filter((d) => d.active);
  const rest = defs.filter((d) => !d.active);
  const shown = [...active, ...rest].slice(0, Math.max(MAX_JOB_ROWS, active.length));
  const body = $("jobs").tBodies[0];
  $("jobs-more").textContent =
    shown.length < defs.length ? `… and ${fmtInt(defs.length - shown.length)} more finished definitions.` : "";
  body.replaceChildren(
    ...shown.map((d) => {
      const tr = document.createElement("tr");
      tr.dataset.definition = String(d.id);
      tr.dataset.symbol = d.symbol;
      tr.dataset.active = String(d.active);
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = d.percent;
      bar.setAttribute("aria-label", `${d.symbol} ${d.timeframe} ${d.percent}%`);
      const cell = document.createElement("span");
      cell.append(bar, ` ${d.percent}%`);
      const s = d.slices;
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.textContent = d.enabled ? "Disable" : "Enable";
      toggle.setAttribute("aria-label", `${d.enabled ? "Disable" : "Enable"} ${d.symbol} ${d.timeframe}`);
      toggle.addEventListener("click", () => act(() => request("PATCH", `/v1/definitions/${d.id}`, { enabled: !d.enabled })));
      tr.append(
        td(d.symbol), td(d.timeframe), td(windowText(d)), td(cell, "bar"),
        td(`${s.succeeded}/${s.total - s.cancelled}${s.running ? ` · ${s.running} running` : ""}${s.failed ? ` · ${s.failed} failed` : ""}`, "num"),
        td(fmtInt(d.bars_written), "num"), td(d.provider || "auto"),
        td(toggle),
      );
      return tr;
    }),
  );
}

function drawFailures(groups) {
  $("no-failures").hidden = groups.length > 0;
  $("failures").tBodies[0].replaceChildren(
    ...groups.map((g) => {
      const tr = document.createElement("tr");
      const retry = document.createElement("button");
      retry.type = "button";
      retry.textContent = "Retry";
      retry.setAttribute("aria-label", `Retry ${g.count} slice(s) failed with ${g.code}`);
      retry.addEventListener("click", () => act(() => postJSON("/web/api/retry", { ids: g.ids })));
      const err = document.createElement("span");
      err.innerHTML = "";
      const code = document.createElement("b");
      code.textContent = g.code || "error";
      err.append(code, ` ${g.message}`);
      tr.append(td(err), td(fmtInt(g.count), "num"), td(g.symbols.slice(0, 8).join(" ") + (g.symbols.length > 8 ? " …" : "")), td(retry));
      return tr;
    }),
  );
}

function drawProviders(list) {
  $("providers").tBodies[0].replaceChildren(
    ...list.map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.provider = p.name;
      tr.append(
        td(p.name), td(p.rate_limit), td(fmtInt(p.requests), "num"), td(fmtInt(p.rate_limited), "num"),
        td(fmtInt(p.errors), "num"), td(p.wait_s > 0 ? fmtDuration(p.wait_s) : "—", "num"),
      );
      return tr;
    }),
  );
}

function drawCorrections(fixed) {
  $("fix-count").textContent = `${fmtInt(fixed.last_day)} correction(s) in the last day` +
    (fixed.last_day > fixed.latest.length ? `; the latest ${fixed.latest.length} below` : "");
  const close = (v) => (v ? String(v.close) : "—");
  $("corrections").tBodies[0].replaceChildren(
    ...fixed.latest.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.kind = c.kind;
      const when = new Date(c.ts * 1000).toISOString().slice(0, 16).replace("T", " ");
      tr.append(
        td(c.symbol), td(c.timeframe), td(when), td(c.provider), td(c.kind),
        td(`${close(c.old)} → ${close(c.new)}`, "num"),
      );
      return tr;
    }),
  );
}

function drawMap(map) {
  const table = document.createElement("table");
  table.setAttribute("aria-label", `Coverage of ${map.timeframe} by symbol and day`);
  const head = document.createElement("tr");
  head.appendChild(document.createElement("th"));
  for (const day of map.days) {
    const th = document.createElement("th");
    th.className = "day";
    th.scope = "col";
    th.textContent = day.slice(5);
    head.appendChild(th);
  }
  const rows = map.rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.symbol = r.symbol;
    const th = document.createElement("th");
    th.className = "sym";
    th.scope = "row";
    th.textContent = r.symbol;
    tr.appendChild(th);
    r.cells.forEach((cell, i) => {
      const c = document.createElement("td");
      const s = document.createElement("span");
      s.className = `cell ${cell}`;
      s.dataset.state = cell;
      s.title = `${r.symbol} ${map.days[i]}: ${cell}`;
      c.appendChild(s);
      tr.appendChild(c);
    });
    return tr;
  });
  const thead = document.createElement("thead");
  thead.appendChild(head);
  const tbody = document.createElement("tbody");
  tbody.append(...rows);
  table.append(thead, tbody);
  if (!map.rows.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = `No ${map.timeframe} definitions yet: ensure a symbol (open a chart) to see it here.`;
    $("covmap").replaceChildren(p);
  } else {
    $("covmap").replaceChildren(table);
  }
}

async function act(fn) {
  try {
    await fn();
    showError("");
    refresh();
  } catch (e) {
    showError(e.message);
  }
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [o, map] = await Promise.all([
      getJSON("/web/api/overview"),
      getJSON(`/web/api/coverage-map?timeframe=${view.tf}&days=${view.days}`),
    ]);
    drawCounts(o.counts);
    drawJobs(o.definitions);
    drawFailures(o.failures);
    drawProviders(o.providers);
    drawCorrections(o.corrections);
    drawMap(map);
    await drawThroughput(o.throughput);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    if ($("error").dataset.kind === "load") showError("");
  } catch (e) {
    showError(`Could not load the dashboard: ${e.message}`);
    $("error").dataset.kind = "load";
  } finally {
    busy = false;
  }
}

function reselect(changes) {
  Object.assign(view, changes);
  const q = new URLSearchParams({ timeframe: view.tf, days: String(view.days) });
  history.replaceState(null, "", `?${q}`);
  pickers();
  refresh();
}

function pickers() {
  wireRadioGroup($("cov-tf"), TIMEFRAMES.map((t) => [t, t]), view.tf, (tf) => reselect({ tf }));
  wireRadioGroup($("cov-days"), [["14", "14"], ["30", "30"], ["90", "90"]], String(view.days), (d) =>
    reselect({ days: Number(d) }),
  );
}

async function main() {
  wireKeyField($("api-key"), $("api-key-save"), refresh);
  pickers();
  try {
    LW = await import("./vendor/lightweight-charts.mjs");
  } catch {
    LW = null; // the tables still work; only the small chart needs the library
  }
  await refresh();
  setInterval(refresh, 2000);
  let soon = null;
  subscribe("/v1/events", () => {
    if (!soon) soon = setTimeout(() => { soon = null; refresh(); }, 300);
  });
}

main();
