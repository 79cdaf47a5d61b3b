// Sensitivity figures: curves per parameter (with 95% bands), the layer x level heatmap, the points table.
import { esc, fmtSi, hexToRgba, loadPlotly, PALETTE, PLOT_CONFIG } from "./util.js";

/** The known metrics (pruning_core.points: COLUMN_METRICS, HIGHER_IS_BETTER, LOWER_IS_BETTER) and their axis titles. */
export const METRICS = {
  top1: { label: "top1 (%)", low: "top1_low", high: "top1_high", goodHigh: true },
  top5: { label: "top5 (%)", low: "top5_low", high: "top5_high", goodHigh: true },
  loss: { label: "loss (cross-entropy)", low: null, high: null, goodHigh: false },
  perplexity: { label: "perplexity", low: null, high: null, goodHigh: false },
};
/** Metrics kept as a point's own fields; any other is a key of its `metrics`. */
export const COLUMN_METRICS = ["top1", "top5", "loss"];
/** Keys of a point's `metrics` that are flags, not metrics (pruning_core.points: POINT_FLAGS). */
export const POINT_FLAGS = ["thinnable", "confidence"];

/** How a point is approximate, for the table and the hover: an adaptive point (pruning_core.adaptive) stopped
 * early, its top1 known to lie on one side of the tolerance at its `metrics.confidence` (its one-sided bound in
 * top1_low or top1_high); mixed precision otherwise. "" when exact. */
export function approximateNote(p) {
  if (!p.approximate) return "";
  const c = (p.metrics || {}).confidence;
  return c === undefined || c === null ? "approx." : `approx. (adaptive: stopped at ${p.samples} samples, ${Number(c) * 100}% confidence)`;
}

/** A metric's axis title, band fields and direction (goodHigh null: a custom metric, direction unknown). */
export function metricInfo(name) {
  return METRICS[name] || { label: name, low: null, high: null, goodHigh: null };
}

/** The value of metric `name` on a point (a field, or a key of its `metrics`), null where it has none. */
export function metricValue(p, name) {
  const v = COLUMN_METRICS.includes(name) ? p[name] : (p.metrics || {})[name];
  return v === null || v === undefined ? null : Number(v);
}

/** The metrics the points have (pruning_core.points.metric_names): top1, top5, loss where some point has a
 * value, then the keys of their `metrics` as first seen. */
export function metricsOf(points) {
  const names = COLUMN_METRICS.filter((m) => points.some((p) => metricValue(p, m) !== null));
  for (const p of points) {
    for (const k of Object.keys(p.metrics || {})) if (!names.includes(k) && !POINT_FLAGS.includes(k)) names.push(k);
  }
  return names;
}

/** The metric to show: `wanted` where the points have it, else their first (an LM has no top1). */
export const pickMetric = (names, wanted) => (names.includes(wanted) || !names.length ? wanted : names[0]);

/** Segmented buttons (data-metric) for `names`, `current` active; `onpick(name)` on a click. */
export function metricButtons(box, names, current, onpick) {
  const same = box.children.length === names.length && [...box.children].every((b, i) => b.dataset.metric === names[i]);
  if (!same) {
    box.replaceChildren(...names.map((m) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.metric = m;
      b.textContent = m;
      b.addEventListener("click", () => onpick(m));
      return b;
    }));
  }
  for (const b of box.children) b.classList.toggle("active", b.dataset.metric === current);
  return box;
}

/** Why a result says little, or null: a baseline top1 under 1.5x chance (100 / classes) measures an untrained
 * model (a random-weight network at 7 % top1 "stands" 90 % sparsity everywhere), so its plan is meaningless. */
export function chanceWarning(job, baselineTop1, classes) {
  if (baselineTop1 === null || baselineTop1 === undefined || !classes) return null;
  const chance = 100 / classes;
  if (baselineTop1 >= 1.5 * chance) return null;
  return `The baseline top1 is ${baselineTop1.toFixed(1)} %, near chance for ${classes} classes (${chance.toFixed(1)} %): ` +
    `the model looks untrained (fresh weights of ${job.spec?.model ?? "the architecture"}?), so these curves and any plan ` +
    "made from them are meaningless. Analyse a trained model (a registered one, or train first).";
}

/** Red (bad) - yellow - green (good), as ColorBrewer RdYlGn; plotly.js has no such named scale. */
const RDYLGN = [[0, "#d73027"], [0.25, "#fc8d59"], [0.5, "#fee08b"], [0.75, "#91cf60"], [1, "#1a9850"]];

const CONFIG = PLOT_CONFIG;

/** parameter -> points sorted by sparsity, parameters in first-seen (model) order; with `metric`, only the
 * points that have it. */
export function curvesOf(points, metric = null) {
  const by = new Map();
  for (const p of points) {
    if (p.measured === false || (metric && metricValue(p, metric) === null)) continue;
    if (!by.has(p.parameter)) by.set(p.parameter, []);
    by.get(p.parameter).push(p);
  }
  for (const list of by.values()) list.sort((a, b) => a.sparsity - b.sparsity);
  return by;
}

/** True when the points carry MACs (structured groups): accuracy vs MACs is offered then. */
export const hasMacs = (points) => points.some((p) => p.macs !== null && p.macs !== undefined);

const HOVER = { top1: ":.3f}%", top5: ":.3f}%", loss: ":.5f}" };

/** Plotly traces: one line per parameter (meta "curve") and, for top1/top5, one band per parameter. The
 * hover lists every metric the points have (a language model's loss and perplexity, a custom one). */
export function curveTraces(curves, metric, { xAxis = "sparsity", bands = true, prefix = "", colorOf, dash, hidden = null } = {}) {
  const m = metricInfo(metric);
  const names = metricsOf([...curves.values()].flat());
  const lines = [];
  const fills = [];
  const markers = curves.size <= 20; // hundreds of SVG markers cost more than they show
  const hover = names.map((n, k) => `<br>${esc(n)} %{customdata[${4 + k}]${HOVER[n] || ":.4g}"}`).join("");
  let i = 0;
  for (const [name, pts] of curves) {
    const color = colorOf ? colorOf(name, i) : PALETTE[i % PALETTE.length];
    const x = pts.map((p) => (xAxis === "macs" ? p.macs : p.sparsity));
    const y = pts.map((p) => metricValue(p, metric));
    const group = `${prefix}${name}`;
    const visible = hidden && hidden.has(name) ? "legendonly" : true;
    const custom = pts.map((p) => [p.sparsity, m.low ? p[m.low] : null, m.high ? p[m.high] : null, p.macs, ...names.map((n) => metricValue(p, n)),
      approximateNote(p) ? `<br><i>${esc(approximateNote(p))}</i>` : ""]);
    lines.push({
      type: "scatter", mode: markers ? "lines+markers" : "lines", name: `${prefix}${name}`, legendgroup: group, meta: "curve", x, y, visible,
      line: { color, width: 1.6, dash }, marker: { size: 4, color },
      customdata: custom,
      hovertemplate: `<b>${esc(prefix + name)}</b><br>sparsity %{customdata[0]:.1%}${hover}` +
        (m.low ? `<br>${metric} 95% CI [%{customdata[1]:.2f}, %{customdata[2]:.2f}]` : "") +
        (xAxis === "macs" ? "<br>MACs %{customdata[3]:.3s}" : "") + `%{customdata[${4 + names.length}]}<extra></extra>`,
    });
    if (bands && m.low) {
      const withBand = pts.filter((p) => p[m.low] !== null && p[m.low] !== undefined && p[m.high] !== null && p[m.high] !== undefined);
      if (withBand.length > 1) {
        const bx = withBand.map((p) => (xAxis === "macs" ? p.macs : p.sparsity));
        fills.push({
          type: "scatter", mode: "lines", legendgroup: group, showlegend: false, hoverinfo: "skip", meta: "band", visible,
          x: [...bx, ...bx.slice().reverse()],
          y: [...withBand.map((p) => p[m.high]), ...withBand.map((p) => p[m.low]).reverse()],
          fill: "toself", fillcolor: hexToRgba(color, 0.12), line: { width: 0, color }, name: `${prefix}${name} 95%`,
        });
      }
    }
    i += 1;
  }
  return [...fills, ...lines]; // bands beneath the lines
}

/** Metrics measured in percent (a fixed 0-100 % axis is offered for them). */
export const PERCENT_METRICS = ["top1", "top5"];

/** `logY`: a log axis (loss, perplexity); `fixed`: top1/top5 on a fixed 0-100 % axis. */
export function curveLayout(metric, { xAxis = "sparsity", title = "", n = 0, logY = false, fixed = false } = {}) {
  return {
    title: title ? { text: title, font: { size: 14 } } : undefined,
    margin: { l: 60, r: 10, t: title ? 36 : 12, b: 48 },
    xaxis: xAxis === "macs"
      ? { title: { text: "MACs left (per sample)" }, tickformat: "~s", zeroline: false }
      : { title: { text: "sparsity" }, tickformat: ".0%", range: [-0.02, 1.0], zeroline: false },
    yaxis: { title: { text: metricInfo(metric).label }, zeroline: false, type: logY ? "log" : "linear",
      ...(fixed && PERCENT_METRICS.includes(metric) ? { range: [0, 100], autorange: false } : { autorange: true }) },
    hovermode: "closest",
    legend: { font: { size: 11 }, itemclick: "toggle", itemdoubleclick: "toggleothers", ...(n > 12 ? { y: 1, yanchor: "top" } : {}) },
    uirevision: `${metric}-${xAxis}-${logY}-${fixed}`,
    plot_bgcolor: "#fff", paper_bgcolor: "#fff",
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
  };
}

export async function drawCurves(el, curves, metric, opts = {}) {
  const Plotly = await loadPlotly();
  const traces = curveTraces(curves, metric, opts);
  return Plotly.react(el, traces, curveLayout(metric, { ...opts, n: curves.size }), CONFIG);
}

/** The metric of each parameter's dense point (sparsity 0), else the mean of the others' (one dense model). */
export function baselines(curves, metric) {
  const out = new Map();
  for (const [name, pts] of curves) {
    const p = pts.find((x) => x.sparsity === 0);
    if (p && metricValue(p, metric) !== null) out.set(name, metricValue(p, metric));
  }
  const known = [...out.values()];
  const mean = known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
  for (const name of curves.keys()) if (!out.has(name) && mean !== null) out.set(name, mean);
  return out;
}

/** How much worse than the baseline a value is: its drop where higher is better, its rise where lower is. */
export function damageOf(value, base, metric) {
  if (value === null || base === null || base === undefined) return null;
  return metricInfo(metric).goodHigh === false ? value - base : base - value;
}

/** Heatmap: rows = parameters (model order, top to bottom), columns = levels. `mode` "drop": the damage
 * from each parameter's baseline (drop of top1, rise of loss) instead of the metric itself. */
export async function drawHeatmap(el, curves, metric, { mode = "value" } = {}) {
  const Plotly = await loadPlotly();
  const levels = [...new Set([...curves.values()].flat().map((p) => p.sparsity))].sort((a, b) => a - b);
  const col = new Map(levels.map((l, i) => [l, i]));
  const names = [...curves.keys()];
  const drop = mode === "drop";
  const base = drop ? baselines(curves, metric) : null;
  const z = names.map((n) => {
    const r = new Array(levels.length).fill(null);
    for (const p of curves.get(n)) {
      const v = metricValue(p, metric);
      r[col.get(p.sparsity)] = drop ? damageOf(v, base.get(n) ?? null, metric) : v;
    }
    return r;
  });
  const m = metricInfo(metric);
  el.style.height = `${Math.max(260, 90 + 16 * names.length)}px`;
  // red for bad where the direction is known; a custom metric's (unknown) gets a scale that judges nothing
  const scale = m.goodHigh === null ? { colorscale: "Viridis" }
    : drop ? { colorscale: RDYLGN, reversescale: true } : { colorscale: RDYLGN, reversescale: !m.goodHigh };
  const label = drop ? `${metric} ${m.goodHigh === false ? "rise" : "drop"}` : metric;
  return Plotly.react(el, [{
    type: "heatmap", z, x: levels.map((l) => l.toFixed(3).replace(/0+$/, "").replace(/\.$/, "")), y: names,
    ...scale, colorbar: { title: { text: esc(label) }, thickness: 12 }, meta: mode,
    hovertemplate: "%{y}<br>sparsity %{x}<br>" + esc(label) + " %{z:.4g}<extra></extra>", xgap: 1, ygap: 1,
  }], {
    margin: { l: Math.min(260, 12 + 7 * Math.max(...names.map((n) => n.length), 4)), r: 10, t: 10, b: 48 },
    xaxis: { title: { text: "sparsity" }, type: "category" },
    yaxis: { autorange: "reversed", type: "category", tickfont: { size: 10 } },
    plot_bgcolor: "#fff", paper_bgcolor: "#fff", uirevision: `${metric}-${mode}`,
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
  }, CONFIG);
}

const f = (v, d) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

/** The points table as one innerHTML string (fast for thousands of rows); a column per metric beyond
 * top1/top5/loss (perplexity, a custom one). */
export function pointsTableHtml(points, { structured = false } = {}) {
  const extra = metricsOf(points).filter((m) => !COLUMN_METRICS.includes(m));
  const head = ["parameter", "sparsity", "top1", "top1 95% CI", "top5", "loss", ...extra.map(esc), "nnz", ...(structured ? ["MACs", "params left"] : []), "samples", "notes"];
  const rows = points.map((p) => {
    const row = `<tr data-param="${esc(p.parameter)}">`;
    const notes = [p.measured === false ? "not measured" : "", approximateNote(p), p.subset ? "subset" : "", p.mode && p.mode !== "independent" ? p.mode : ""].filter(Boolean).join(", ");
    const ci = p.top1_low !== null && p.top1_low !== undefined ? `[${f(p.top1_low, 2)}, ${f(p.top1_high, 2)}]` : "–";
    return `${row}<td class="mono">${esc(p.parameter)}</td><td class="num">${f(100 * p.sparsity, 1)}%</td><td class="num">${f(p.top1, 3)}</td>` +
      `<td class="num muted">${ci}</td><td class="num">${f(p.top5, 3)}</td><td class="num">${f(p.loss, 5)}</td>` +
      extra.map((m) => `<td class="num">${f(metricValue(p, m), 5)}</td>`).join("") +
      `<td class="num">${p.nnz ?? "–"}</td>` + (structured ? `<td class="num" title="${p.macs ?? ""}">${fmtSi(p.macs)}</td><td class="num">${p.params_left ?? "–"}</td>` : "") +
      `<td class="num">${p.samples ?? "–"}</td><td class="muted">${esc(notes)}</td></tr>`;
  });
  return `<thead><tr>${head.map((x) => `<th>${x}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody>`;
}
