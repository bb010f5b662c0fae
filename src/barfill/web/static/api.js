// Shared by the chart and the dashboard: the API key (kept in localStorage), JSON fetches, and an
// SSE reader built on fetch (EventSource cannot send an Authorization header).

const KEY_STORE = "barfill.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY_STORE, value.trim());
  else localStorage.removeItem(KEY_STORE);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The server's error body in plain words: FastAPI's {detail}, the compat {error}, or a 422 list.
function describe(status, body) {
  if (body && typeof body === "object" && typeof body.error === "string") return body.error;
  if (body && typeof body === "object") {
    const d = body.detail ?? body.error ?? body.message;
    if (Array.isArray(d)) {
      return d.map((e) => `${(e.loc || []).filter((x) => x !== "body" && x !== "query").join(".")}: ${e.msg}`).join("; ");
    }
    if (typeof d === "string") return d;
    if (d && typeof d === "object") return d.message || JSON.stringify(d);
  }
  if (status === 401) return "This server needs an API key: enter one above.";
  if (status === 403) return "This API key is not allowed to do that.";
  return `The server answered ${status}.`;
}

export async function request(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "The barfill server cannot be reached.");
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    let msg = describe(resp.status, data);
    if (resp.status === 401) msg = "This server needs an API key: enter one in the key field.";
    throw new ApiError(resp.status, msg);
  }
  return data;
}

export const getJSON = (path) => request("GET", path);
export const postJSON = (path, body) => request("POST", path, body ?? {});

// Server-sent events over fetch, with reconnection and Last-Event-ID. Returns a stop() function.
export function subscribe(path, onEvent, { onState } = {}) {
  let stopped = false;
  let lastId = null;
  let controller = null;
  let delay = 500;

  async function loop() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const h = headers({ Accept: "text/event-stream" });
        if (lastId !== null) h["Last-Event-ID"] = lastId;
        const resp = await fetch(path, { headers: h, signal: controller.signal, cache: "no-store" });
        if (!resp.ok || !resp.body) throw new ApiError(resp.status, describe(resp.status, null));
        onState?.("open");
        delay = 500;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const ev = parseBlock(block);
            if (ev.id !== null) lastId = ev.id;
            if (ev.data !== null) onEvent(ev.event || "message", ev.data);
          }
        }
      } catch (e) {
        if (stopped) return;
        onState?.("error", e);
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  loop();
  return () => {
    stopped = true;
    controller?.abort();
  };
}

function parseBlock(block) {
  const ev = { event: null, data: null, id: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") ev.event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") ev.id = value;
  }
  if (data.length) {
    const raw = data.join("\n");
    try {
      ev.data = JSON.parse(raw);
    } catch {
      ev.data = raw;
    }
  }
  return ev;
}

// The key field shared by both pages: shown collapsed, remembered once given.
export function wireKeyField(input, button, onChange) {
  input.value = apiKey();
  const save = () => {
    setApiKey(input.value);
    onChange?.();
  };
  button.addEventListener("click", save);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") save();
  });
}

export const fmtInt = (n) => Math.round(n).toLocaleString("en-US");

export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "…";
  if (s < 90) return `${Math.max(0, Math.round(s))} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
