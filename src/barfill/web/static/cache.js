// The browser's copy of a chart's bars (IndexedDB), so a chart opened before paints at once.

const DB_NAME = "barfill";
const STORE = "charts";

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function run(mode, fn) {
  return open().then(
    (db) =>
      new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode);
        const req = fn(tx.objectStore(STORE));
        tx.oncomplete = () => {
          db.close();
          resolve(req.result);
        };
        tx.onerror = () => {
          db.close();
          reject(tx.error);
        };
      }),
  );
}

export const cacheKey = (symbol, timeframe) => `${symbol}|${timeframe}`;

// {bars: {historical: {...columns}, intraday: {...}, forecast: {...}}, savedAt}
export async function loadChart(symbol, timeframe) {
  try {
    return (await run("readonly", (s) => s.get(cacheKey(symbol, timeframe)))) || null;
  } catch {
    return null; // private mode or storage disabled: no cache, no harm
  }
}

export async function saveChart(symbol, timeframe, layers) {
  try {
    await run("readwrite", (s) => s.put({ layers, savedAt: Date.now() }, cacheKey(symbol, timeframe)));
  } catch {
    /* quota or disabled storage: the chart still works from the network */
  }
}
