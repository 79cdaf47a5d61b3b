// Small shared helpers: REST calls, DOM building, formatting. No framework.

export const API = "/api/v1";

/** An error from the API: `status`, the JSON `detail` text and, for 422s, `errors` [{field, message}]. */
export class ApiError extends Error {
  constructor(status, detail, errors) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail || `HTTP ${status}`;
    this.errors = errors || parseFieldErrors(this.detail);
  }
}

/** "spec.levels: bad; spec.model: unknown" -> [{field, message}] (the service's HTTPException format). */
export function parseFieldErrors(detail) {
  if (typeof detail !== "string") return [];
  const out = [];
  for (const part of detail.split(/;\s+(?=[\w.\[\]]+(?: \(\w+\))?: )/)) {
    const m = part.match(/^([A-Za-z_][\w.\[\]]*(?: \(\w+\))?): ([\s\S]*)$/);
    if (m) out.push({ field: m[1], message: m[2] });
  }
  return out;
}

// With PRUNESCOPE_TOKEN set on the server, the token is asked once and kept in this browser.
const TOKEN_KEY = "prunescope.token";
export const getToken = () => { try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; } };

/** EventSource and <a href> downloads cannot send headers: the service takes ?access_token= there. */
export function withToken(url) {
  const token = getToken();
  return token ? `${url}${url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(token)}` : url;
}

/** fetch + JSON; throws ApiError on non-2xx. `body` objects are sent as JSON, FormData as multipart. */
export async function api(path, { method = "GET", body, signal } = {}, retried = false) {
  const init = { method, signal, headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const token = getToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path.startsWith("/") ? path : `${API}/${path}`, init);
  if (res.status === 401 && !retried) {
    // one question for a burst of parallel calls
    if (!api.asking) {
      api.asking = new Promise((resolve) => setTimeout(() => {
        resolve(window.prompt("This prunescope server needs its access token (PRUNESCOPE_TOKEN):", ""));
        setTimeout(() => { api.asking = null; }, 0);
      }, 0));
    }
    const given = await api.asking;
    if (given) {
      try { localStorage.setItem(TOKEN_KEY, given.trim()); } catch { /* private mode */ }
      return api(path, { method, body, signal }, true);
    }
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    let detail = data && typeof data === "object" ? data.detail : data;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail),
      data && Array.isArray(data.errors) ? data.errors : undefined);
  }
  return data;
}

/** h("div.card#x", {onclick}, child, "text", [more]) — tiny hyperscript. */
export function h(tag, attrs, ...children) {
  const m = tag.match(/^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i);
  const node = document.createElement((m && m[1]) || "div");
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === ".") node.classList.add(part.slice(1));
      else node.id = part.slice(1);
    }
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "html") node.innerHTML = v;
    else if (k === "class") { for (const c of String(v).split(/\s+/).filter(Boolean)) node.classList.add(c); }
    else if (k === "value" || k === "checked" || k === "selected") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const esc = (s) => String(s ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

export function fmtNum(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits);
}

export function fmtInt(v) {
  if (v === null || v === undefined) return "–";
  return Math.round(v).toLocaleString("en-US");
}

/** 1234567 -> "1.23 M" */
export function fmtSi(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(2)} G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
  return String(Math.round(v));
}

export function parseTime(s) {
  if (!s) return null;
  // SQLite hands back naive datetimes: they are UTC.
  return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`);
}

export function fmtTime(s) {
  const d = parseTime(s);
  if (!d) return "–";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(start, end) {
  const a = parseTime(start);
  if (!a) return "–";
  const b = parseTime(end) || new Date();
  let s = Math.max(0, Math.round((b - a) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60); s %= 60;
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export const ACTIVE = new Set(["queued", "running"]);

export function progressOf(job) {
  if (job.status === "succeeded") return 1;
  return job.progress_total > 0 ? Math.min(1, job.progress_done / job.progress_total) : 0;
}

export function progressBar(job) {
  const frac = progressOf(job);
  const pct = Math.round(frac * 100);
  const label = job.progress_total > 0 ? `${job.progress_done}/${job.progress_total}` : (job.status === "succeeded" ? "done" : "");
  return h("div.progress", { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct,
    "data-status": job.status, title: label },
  h("div.progress-fill", { style: `width:${pct}%` }), h("span.progress-label", `${pct}%`));
}

export function updateProgressBar(bar, job) {
  const pct = Math.round(progressOf(job) * 100);
  bar.setAttribute("aria-valuenow", pct);
  bar.dataset.status = job.status;
  bar.querySelector(".progress-fill").style.width = `${pct}%`;
  bar.querySelector(".progress-label").textContent = `${pct}%`;
}

export const statusBadge = (status) => h("span.badge", { "data-status": status }, status);

export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toast._t);
  toast._t = setTimeout(() => { el.hidden = true; }, kind === "error" ? 8000 : 3500);
}

/** Trigger a file download of `text`. */
export function downloadText(text, filename, type = "text/plain") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** A spec's model/dataset, as the tables show them. */
export const specModel = (job) => (job.spec && job.spec.model) || "–";
export const specDataset = (job) => (job.spec && job.spec.dataset) || "–";

export function jobTitle(job) {
  return `${job.kind} #${job.id} · ${specModel(job)} on ${specDataset(job)}`;
}

/** Register a cleanup function run when the current page is left (timers, EventSources). */
const cleanups = [];
export function onLeave(fn) { cleanups.push(fn); }
export function leavePage() {
  while (cleanups.length) {
    try { cleanups.pop()(); } catch (e) { console.error(e); }
  }
}

/** Parse the hash's query: "#/compare?jobs=1,2" -> URLSearchParams */
export function hashQuery() {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i >= 0 ? location.hash.slice(i + 1) : "");
}

export const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
  "#e6550d", "#31a354", "#756bb1", "#636363"];

export function hexToRgba(hex, alpha) {
  if (hex.startsWith("hsl(")) return hex.replace(/^hsl\((.*)\)$/, `hsla($1, ${alpha})`);
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

/** plotly.js (4.8 MB), loaded once and only by the pages that draw: the others paint without waiting for it. */
let plotlyLoading = null;
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/static/plotly.min.js";
      script.async = true;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => { plotlyLoading = null; script.remove(); reject(new Error("plotly.js could not be loaded from /static/plotly.min.js")); };
      document.head.append(script);
    });
  }
  return plotlyLoading;
}

/** Every chart's plotly config: nothing may leave the machine. plotly.js 4 shows "Share chart..." (upload to
 * cloud.plotly.com, its default plotlyServerURL) unless told not to; older ones had "Edit in Chart Studio" and
 * a link. The modebar's image export is SVG. */
export const PLOT_CONFIG = Object.freeze({
  responsive: true, displaylogo: false, showLink: false, showSendToCloud: false, showEditInChartStudio: false,
  plotlyServerURL: "",
  modeBarButtonsToRemove: ["lasso2d", "select2d", "sendChartToCloud", "sendDataToCloud", "editInChartStudio"],
  toImageButtonOptions: { format: "svg" },
});

/** The group a parameter belongs to for colouring: its stage (`layer2` of `layer2.3.conv1.weight`,
 * `features` of `features.10.weight`), else the name without its last part. */
export function stageOf(name) {
  const parts = name.split(".");
  const i = parts.findIndex((p) => /^\d+$/.test(p));
  if (i > 0) return parts.slice(0, i).join(".");
  return parts.length > 2 ? parts.slice(0, -2).join(".") : "(top level)";
}

/** Colours that stay distinguishable for many layers: one hue per stage (spread by the golden angle),
 * the layers of a stage stepped in lightness. Returns name -> colour, names in the order given. */
export function stageColours(names) {
  const stages = new Map();
  for (const n of names) {
    const s = stageOf(n);
    if (!stages.has(s)) stages.set(s, []);
    stages.get(s).push(n);
  }
  const out = new Map();
  let k = 0;
  for (const members of stages.values()) {
    const hue = Math.round((k * 137.508) % 360);
    members.forEach((n, j) => {
      const light = members.length === 1 ? 42 : 28 + Math.round((40 * j) / (members.length - 1));
      out.set(n, `hsl(${hue}, ${j % 2 ? 70 : 85}%, ${light}%)`);
    });
    k += 1;
  }
  return out;
}

/** Rows as CSV text (a header, then one line per row; values quoted where needed). */
export function toCsv(header, rows) {
  const cell = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  return [header.join(","), ...rows.map((r) => r.map(cell).join(","))].join("\n") + "\n";
}

/** Replace the hash's query keys without a navigation (no hashchange: the page keeps its state). */
export function setHashQuery(values) {
  const [path] = location.hash.split("?");
  const q = hashQuery();
  for (const [k, v] of Object.entries(values)) {
    if (v === null || v === undefined || v === "") q.delete(k); else q.set(k, v);
  }
  const text = q.toString();
  history.replaceState(null, "", `${path}${text ? `?${text}` : ""}`);
  document.body.dataset.hash = location.hash;
}
