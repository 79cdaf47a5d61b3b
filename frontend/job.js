// One job's page: header with live status/progress, then per kind the sensitivity figures or the
// per-epoch history and the prune result.
import { chooseLevels, damageCurves, damageUnit, sizesOf } from "./plan.js";
import { buildReport } from "./report.js";
import {
  baselines, chanceWarning, curvesOf, damageOf, drawCurves, drawHeatmap, hasMacs, metricButtons, metricInfo, metricsOf,
  metricValue, PERCENT_METRICS, pickMetric, pointsTableHtml,
} from "./sensitivity.js";
import {
  ACTIVE, api, downloadText, fmtDuration, fmtInt, fmtNum, fmtSi, fmtTime, h, hashQuery, loadPlotly, onLeave, PLOT_CONFIG,
  progressBar, setHashQuery, stageColours, statusBadge, toast, toCsv, updateProgressBar, withToken,
} from "./util.js";

/** Exposed for tests and benchmarks: the last sensitivity render and a way to re-run it. */
const ps = (window.prunescope = window.prunescope || {});

export async function jobPage(view, id) {
  loadPlotly().catch(() => {}); // every job page draws: fetch plotly.js alongside the job (a failure shows where it draws)
  let job = await api(`jobs/${id}`);
  const bar = progressBar(job);
  const badge = h("span#job-status", statusBadge(job.status));
  const duration = h("span.duration", fmtDuration(job.started_at, job.finished_at));
  const counts = h("span.muted.progress-count", job.progress_total ? `${job.progress_done}/${job.progress_total}` : "");
  const actions = h("div.actions");
  const errorBox = h("div.card.error#job-error", { hidden: !job.error }, h("strong", "Error: "), h("span.mono", job.error || ""));

  function renderActions() {
    actions.replaceChildren();
    if (ACTIVE.has(job.status)) {
      actions.append(h("button.btn#cancel-job", { onclick: async () => {
        try { Object.assign(job, await api(`jobs/${id}/cancel`, { method: "POST" })); refreshHeader(); toast("Cancel requested"); } catch (err) { toast(err.message, "error"); }
      } }, "Cancel"));
    } else {
      actions.append(h("button.btn.danger#delete-job", { onclick: async () => {
        if (!confirm(`Delete job ${id} with its points and artifacts?`)) return;
        try { await api(`jobs/${id}`, { method: "DELETE" }); toast(`Job ${id} deleted`); location.hash = "#/jobs"; } catch (err) { toast(err.message, "error"); }
      } }, "Delete"));
    }
    if (job.kind === "sensitivity" && ["succeeded", "queued", "running"].includes(job.status)) { // a failed or cancelled job has no result to export or plan
      actions.append(h("a.btn#download-csv", { href: withToken(`/api/v1/jobs/${id}/points.csv`), download: `sensitivity-${id}.csv` }, "⇩ Distiller CSV"));
      actions.append(h("button.btn#download-html", { type: "button", title: "a self-contained HTML report (opens offline)", onclick: async () => {
        try {
          const html = await buildReport(job, await api(`jobs/${id}/points`));
          downloadText(html, `sensitivity-${id}.html`, "text/html");
        } catch (err) { toast(err.message, "error"); }
      } }, "⇩ HTML report"));
      if (job.status === "succeeded") actions.append(h("a.btn.primary#plan-link", { href: `#/plan/${id}` }, "Plan pruning →"));
      actions.append(h("a.btn#compare-link", { href: `#/compare?jobs=${id}` }, "Compare…"));
    }
  }

  function refreshHeader() {
    badge.replaceChildren(statusBadge(job.status));
    updateProgressBar(bar, job);
    duration.textContent = fmtDuration(job.started_at, job.finished_at);
    counts.textContent = job.progress_total ? `${job.progress_done}/${job.progress_total}` : "";
    errorBox.hidden = !job.error;
    errorBox.querySelector("span").textContent = job.error || "";
    workerFact.textContent = workerText(job);
    renderActions();
  }
  renderActions();

  const workerText = (j) => (j.worker ? `${j.worker}${j.device ? ` · ${j.device}` : ""}` : "–");
  const workerFact = h("dd#fact-worker", workerText(job));
  const experimentFact = h("dd#fact-experiment", job.experiment_id ?? "–");
  if (job.experiment_id) { // its name, not a bare id
    api(`experiments/${job.experiment_id}`).then((e) => {
      experimentFact.replaceChildren(h("a", { href: `#/jobs?experiment=${e.id}`, title: e.description || "" }, `${e.name} (#${e.id})`));
    }).catch(() => {});
  }
  const spec = job.spec || {};
  const facts = [
    ["Model", `${spec.model}${{ architecture: " (architecture, fresh weights)", registered: " (registered model)" }[spec.model_kind] || ""}`], ["Dataset", spec.dataset + (spec.dataset_options && Object.keys(spec.dataset_options).length ? ` (${Object.entries(spec.dataset_options).map(([k, v]) => `${k}=${v}`).join(", ")})` : "")],
    job.kind === "sensitivity" ? ["Group", `${spec.group}${spec.coupled ? " (coupled)" : ""}`] : ["Epochs", spec.epochs],
    job.kind === "sensitivity" ? ["Levels", Array.isArray(spec.levels) ? `${spec.levels.length} (${spec.levels[0]} … ${spec.levels[spec.levels.length - 1]})` : spec.levels] : ["LR", spec.lr],
    ["Created", fmtTime(job.created_at)], ["Worker", workerFact],
    ["Code", job.code_version || "–"], ["Experiment", experimentFact],
  ];
  view.append(
    h("div.page-head", h("div", h("div.crumbs", h("a", { href: "#/jobs" }, "Jobs"), " / ", `#${id}`),
      h("h1", `${job.kind[0].toUpperCase()}${job.kind.slice(1)} job #${id}`, " ", badge)), actions),
    h("div.card.job-head", h("div.progress-row", bar, counts, duration),
      h("dl.facts", facts.map(([k, v]) => [h("dt", k), v instanceof Node ? v : h("dd", v ?? "–")]))),
    errorBox,
  );

  // live: SSE while the job is active (points and progress), then a final authoritative reload
  let onPoint = null;
  let onEnd = null;
  let onProgress = null;
  if (ACTIVE.has(job.status)) {
    const es = new EventSource(withToken(`/api/v1/jobs/${id}/events`));
    es.addEventListener("progress", (e) => {
      const s = JSON.parse(e.data);
      Object.assign(job, { status: s.status, progress_done: s.done, progress_total: s.total, error: s.error });
      refreshHeader();
      if (onProgress) onProgress();
      if (!job.worker && s.status !== "queued") api(`jobs/${id}`).then((j) => { Object.assign(job, j); refreshHeader(); }).catch(() => {});
    });
    es.addEventListener("point", (e) => { if (onPoint) onPoint(JSON.parse(e.data)); });
    es.addEventListener("end", async () => {
      es.close();
      Object.assign(job, await api(`jobs/${id}`)); // the same object the sections hold
      refreshHeader();
      if (onEnd) onEnd();
    });
    es.onerror = () => { /* EventSource reconnects by itself */ };
    const tick = setInterval(() => { duration.textContent = fmtDuration(job.started_at, job.finished_at); }, 1000);
    onLeave(() => { es.close(); clearInterval(tick); });
  }

  const artifactsBox = h("div#artifacts-box");
  let sectionEnd = null;
  const setOnEnd = (fn) => { sectionEnd = fn; };
  onEnd = async () => {
    if (sectionEnd) await sectionEnd();
    await artifactsSection(artifactsBox, view, job);
  };
  if (job.kind === "sensitivity") {
    await sensitivitySection(view, job, (fn) => { onPoint = fn; }, setOnEnd);
  } else if (job.kind === "plan") {
    planJobSection(view, job, setOnEnd);
  } else {
    await epochsSection(view, job, setOnEnd, (fn) => { onProgress = fn; });
  }
  view.append(artifactsBox);
  await artifactsSection(artifactsBox, view, job);
  view.append(h("details.card", h("summary", "Spec (JSON)"), h("pre.code", JSON.stringify(job.spec, null, 2))));
}

/** Parameters ranked by how much pruning hurts them: the mean damage (drop of top1, rise of loss) over the
 * measured levels, from each parameter's baseline. */
function sensitivityRank(curves, metric) {
  const base = baselines(curves, metric);
  const score = new Map();
  for (const [name, pts] of curves) {
    const d = pts.map((p) => damageOf(metricValue(p, metric), base.get(name) ?? null, metric)).filter((v) => v !== null);
    score.set(name, d.length ? d.reduce((a, b) => a + b, 0) / d.length : 0);
  }
  return score;
}

/** A layer search: a substring (case-insensitive), or one with * wildcards (`layer2.*.conv1`). */
function layerMatcher(text) {
  const t = text.trim().toLowerCase();
  if (!t) return () => true;
  if (t.includes("*")) {
    const re = new RegExp(t.split("*").map((x) => x.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*"));
    return (n) => re.test(n.toLowerCase());
  }
  return (n) => n.toLowerCase().includes(t);
}

async function sensitivitySection(view, job, setOnPoint, setOnEnd) {
  const id = job.id;
  const store = new Map(); // "param|sparsity" -> point
  const position = new Map(); // parameter -> its place in the model (the stream says; the list comes in that order)
  const add = (p) => {
    if (p.position !== undefined && p.position !== null) position.set(p.parameter, p.position);
    if (!position.has(p.parameter)) position.set(p.parameter, 1e9 + position.size); // first seen, after the known
    const { position: _, ...point } = p;
    store.set(`${p.parameter}|${p.sparsity}`, point);
  };
  // plotly.js is loaded alongside the points, so the render (and its timing) is drawing only
  // and the stored shapes of the spec's model: the per-layer summary weighs layers by size where points lack nnz
  const shapesUrl = `shapes?model=${encodeURIComponent(job.spec.model)}${job.spec.model_kind ? `&model_kind=${job.spec.model_kind}` : ""}`;
  const [initial, shapeAnswer, classes] = await Promise.all([api(`jobs/${id}/points`), api(shapesUrl).catch(() => null),
    numClasses(job), loadPlotly()]);
  initial.forEach(add);
  const shapes = shapeAnswer ? new Map(shapeAnswer.parameters.map((p) => [p.name, p.size])) : null;

  const q = hashQuery();
  // bands: null = decided from what is shown at each render (at most 12 curves), until the user chooses
  const state = { metric: q.get("metric") || "top1", xAxis: "sparsity", bands: null, search: q.get("layers") || "",
    top: Number(q.get("top")) || 0, heat: q.get("heat") === "drop" ? "drop" : "value", hidden: new Set(),
    logY: false, fixed: false, tolerance: Number(q.get("tolerance")) || 1, sort: { key: "position", desc: false } };
  const structured = (job.spec.group || "element") !== "element";
  const syncUrl = () => setHashQuery({ metric: state.metric !== "top1" ? state.metric : null, layers: state.search || null,
    top: state.top || null, heat: state.heat === "drop" ? "drop" : null });
  // one button per metric the points have (top1/top5/loss, a language model's loss/perplexity, a custom one)
  const metricSwitch = h("div.segmented#metric-switch");
  const pick = (m) => { state.metric = m; syncSwitch(); syncUrl(); render(); };
  const xSwitch = h("div.segmented#x-switch", { hidden: true }, [["sparsity", "vs sparsity"], ["macs", "vs MACs"]].map(([k, label]) => h("button", {
    type: "button", "data-x": k, class: k === state.xAxis ? "active" : "", onclick: () => { state.xAxis = k; syncSwitch(); render(); },
  }, label)));
  const bandsBox = h("input#bands-toggle", { type: "checkbox", onchange: (e) => { state.bands = e.target.checked; render(); } });
  const bandToggle = h("label.check", bandsBox, " 95% bands");
  const logBox = h("input#log-y", { type: "checkbox", onchange: (e) => { state.logY = e.target.checked; render(); } });
  const logToggle = h("label.check#log-y-label", { title: "a log axis for loss and perplexity" }, logBox, " log scale");
  const fixedToggle = h("label.check#fixed-axis-label", { title: "top1/top5 on a fixed 0–100 % axis" },
    h("input#fixed-axis", { type: "checkbox", onchange: (e) => { state.fixed = e.target.checked; render(); } }), " 0–100 %");
  const search = h("input#layer-search", { type: "search", placeholder: "search layers (substring or glob)", value: state.search,
    oninput: (e) => { state.search = e.target.value; syncUrl(); render(); } });
  const topSel = h("select#top-n", { title: "only the most sensitive layers (mean damage over the levels)", onchange: (e) => {
    state.top = Number(e.target.value); syncUrl(); render();
  } }, [[0, "all layers"], [5, "top 5 most sensitive"], [10, "top 10 most sensitive"], [20, "top 20 most sensitive"]]
    .map(([v, label]) => h("option", { value: String(v), selected: v === state.top }, label)));
  const shownNote = h("span.muted#shown-count");
  const heatSwitch = h("div.segmented#heat-mode", [["value", "metric"], ["drop", "drop from baseline"]].map(([k, label]) => h("button", {
    type: "button", "data-mode": k, class: k === state.heat ? "active" : "", onclick: () => {
      state.heat = k;
      for (const b of heatSwitch.children) b.classList.toggle("active", b.dataset.mode === k);
      syncUrl(); render();
    } }, label)));
  let metricNames = [];
  function syncSwitch() {
    metricButtons(metricSwitch, metricNames, state.metric, pick);
    for (const b of xSwitch.children) b.classList.toggle("active", b.dataset.x === state.xAxis);
  }
  const curvesEl = h("div.chart#curves");
  const heatEl = h("div.chart#heatmap");
  const table = h("table.table.compact#points-table");
  const summary = h("table.table.compact.sortable#layer-summary");
  const tolIn = h("input#summary-tolerance", { type: "number", min: "0", step: "0.1", value: String(state.tolerance),
    oninput: (e) => { const v = Number(e.target.value); if (Number.isFinite(v) && v >= 0) { state.tolerance = v; renderSummary(); } } });
  const tolUnit = h("span.muted#summary-unit");
  const pointCount = h("span.muted#point-count");
  const empty = h("p.muted#no-points");
  const ended = h("p.card.warn#ended-early", { hidden: true });
  const chance = h("div.card.warn#chance-warning", { hidden: true });
  const notes = h("div#sensitivity-notes");
  const showNotes = (result) => {
    notes.replaceChildren();
    if (!result) return;
    const skipped = Array.isArray(result.skipped) ? result.skipped : [];
    if (result.engine || result.engine_note) {
      notes.append(h("p.muted", `Engine: ${result.engine || "–"}${result.engine_note ? ` — ${result.engine_note}` : ""}`));
    }
    if (skipped.length) {
      notes.append(h("details.card.warn#skipped", h("summary", `${skipped.length} parameter${skipped.length === 1 ? "" : "s"} skipped`),
        h("table.table.compact", h("tbody", skipped.map((x) => h("tr", h("td.mono", x.parameter), h("td", x.reason)))))));
    }
  };
  showNotes(job.result);
  const exportBtn = (idName, label, fn) => h(`button.btn.small#${idName}`, { type: "button", onclick: fn }, label);
  view.append(
    chance, ended, notes,
    h("div.card", h("div.card-head", h("h2", "Layers"), h("div.tools", search, topSel, shownNote))),
    h("div.card", h("div.card-head", h("h2", "Sensitivity curves"), h("div.tools", metricSwitch, xSwitch, bandToggle, logToggle, fixedToggle,
      exportBtn("export-svg", "⇩ SVG", () => loadPlotly().then((P) => P.downloadImage(curvesEl, { format: "svg", filename: `sensitivity-${id}-${state.metric}` }))),
      exportBtn("export-data", "⇩ data (CSV)", () => downloadText(shownCsv(), `sensitivity-${id}-shown.csv`, "text/csv")))),
      h("p.hint", "One curve per parameter, coloured by stage; click a legend entry to hide it everywhere, double-click to isolate it."),
      empty, curvesEl),
    h("div.card", h("div.card-head", h("h2", "Layer × level"), heatSwitch,
      exportBtn("export-heatmap-svg", "⇩ SVG", () => loadPlotly().then((P) => P.downloadImage(heatEl, { format: "svg", filename: `heatmap-${id}` })))), heatEl),
    h("div.card", h("div.card-head", h("h2", "Per-layer summary"), h("label.inline", "tolerance ", tolIn, " ", tolUnit)),
      h("p.hint", "The highest measured sparsity each layer stands within the tolerance (the plan's rule), its size and share."),
      h("div.table-scroll", summary)),
    h("div.card", h("div.card-head", h("h2", "Points"), pointCount), h("div.table-scroll", table)),
  );

  let shown = { names: [], curves: new Map() };

  const ordered = (points, metric) => new Map([...curvesOf(points, metric)]
    .sort((a, b) => position.get(a[0]) - position.get(b[0])));

  /** What every view shows: the search, then the top N, then less what the legend hid. */
  function selection(curves) {
    const match = layerMatcher(state.search);
    let names = [...curves.keys()].filter(match);
    if (state.top > 0 && names.length > state.top) {
      const rank = sensitivityRank(curves, state.metric);
      const keep = new Set([...names].sort((a, b) => rank.get(b) - rank.get(a)).slice(0, state.top));
      names = names.filter((n) => keep.has(n));
    }
    return names;
  }

  function shownCsv() {
    const names = metricsOf([...store.values()]);
    const rows = [...shown.curves.values()].flat().filter((p) => !state.hidden.has(p.parameter));
    return toCsv(["parameter", "sparsity", ...names], rows.map((p) => [p.parameter, p.sparsity, ...names.map((m) => metricValue(p, m))]));
  }

  function renderSummary() {
    const points = [...store.values()];
    const metric = state.metric;
    const higher = metricInfo(metric).goodHigh !== false;
    tolUnit.textContent = damageUnit(metric, higher);
    const { curves } = damageCurves(points, metric, higher);
    const visible = shown.names.filter((n) => !state.hidden.has(n) && curves.has(n));
    const sub = new Map(visible.map((n) => [n, curves.get(n)]));
    const levels = chooseLevels(sub, state.tolerance);
    // sizes: the points' nnz, else the stored shapes (an imported CSV has no nnz); shares of every analysed layer
    let sizes = sizesOf(curves);
    if ([...sizes.values()].every((v) => !v) && shapes) sizes = new Map([...curves.keys()].map((n) => [n, shapes.get(n) ?? 0]));
    const total = [...sizes.values()].reduce((a, b) => a + b, 0) || null;
    const macsOf = (n) => {
      const pts = curves.get(n).map((c) => c.point).filter((p) => p.macs !== null && p.macs !== undefined);
      const dense = pts.find((p) => p.sparsity === 0);
      const top = pts[pts.length - 1];
      return dense && top && top.sparsity > 0 ? (dense.macs - top.macs) / dense.macs / top.sparsity : null;
    };
    const rows = visible.map((n) => ({ name: n, position: position.get(n), level: levels.get(n).sparsity,
      damage: levels.get(n).damage, size: sizes.get(n) || null, share: total && sizes.get(n) ? sizes.get(n) / total : null,
      macs: macsOf(n) }));
    const { key, desc } = state.sort;
    rows.sort((a, b) => ((a[key] ?? -1) < (b[key] ?? -1) ? -1 : (a[key] ?? -1) > (b[key] ?? -1) ? 1 : 0) * (desc ? -1 : 1));
    const withMacs = rows.some((r) => r.macs !== null);
    const cols = [["name", "parameter"], ["level", "max sparsity"], ["damage", "damage there"], ["size", "weights"],
      ["share", "share of weights"], ...(withMacs ? [["macs", "share of MACs ≈"]] : [])];
    summary.replaceChildren(
      h("thead", h("tr", cols.map(([k, label]) => h("th", { "data-sort": k, class: k === key ? (desc ? "sorted desc" : "sorted") : "",
        title: "sort", onclick: () => { state.sort = { key: k, desc: state.sort.key === k ? !state.sort.desc : k !== "name" }; renderSummary(); } }, label)))),
      h("tbody", rows.map((r) => h("tr", { "data-param": r.name }, h("td.mono", r.name), h("td.num", `${fmtNum(100 * r.level, 1)}%`),
        h("td.num", fmtNum(r.damage, 3)), h("td.num", fmtSi(r.size)), h("td.num", r.share === null ? "–" : `${fmtNum(100 * r.share, 1)}%`),
        withMacs ? h("td.num", r.macs === null ? "–" : `${fmtNum(100 * r.macs, 1)}%`) : null))));
    ps.lastSummary = { tolerance: state.tolerance, metric, rows };
  }

  async function render() {
    const t0 = performance.now();
    const points = [...store.values()];
    metricNames = metricsOf(points);
    state.metric = pickMetric(metricNames, state.metric); // an LM has no top1: its first metric then
    syncSwitch();
    const all = ordered(points, state.metric);
    const names = selection(all);
    const curves = new Map(names.map((n) => [n, all.get(n)]));
    for (const n of [...state.hidden]) if (!curves.has(n)) state.hidden.delete(n);
    const visible = new Map(names.filter((n) => !state.hidden.has(n)).map((n) => [n, all.get(n)]));
    shown = { names, curves };
    const macs = structured && hasMacs(points);
    xSwitch.hidden = !macs;
    if (!macs && state.xAxis === "macs") { state.xAxis = "sparsity"; syncSwitch(); }
    const bands = state.bands ?? curves.size <= 12;
    bandsBox.checked = bands;
    logToggle.hidden = PERCENT_METRICS.includes(state.metric);
    fixedToggle.hidden = !PERCENT_METRICS.includes(state.metric);
    const active = ACTIVE.has(job.status);
    empty.textContent = active ? "No points yet: they appear here as the job measures them."
      : `No points: the job ${job.status} before it measured any.`;
    empty.hidden = all.size > 0;
    ended.hidden = active || job.status === "succeeded" || all.size === 0;
    ended.textContent = `The job ${job.status}: these ${points.length} points are all it measured; no more will come.`;
    shownNote.textContent = `${names.length} of ${all.size} layers shown`;
    const colours = stageColours([...ordered(points).keys()]); // by stage, stable whatever is filtered
    const t = {};
    let t1 = performance.now();
    await drawCurves(curvesEl, curves, state.metric, { xAxis: state.xAxis, bands, colorOf: (n) => colours.get(n),
      hidden: state.hidden, logY: state.logY && !PERCENT_METRICS.includes(state.metric), fixed: state.fixed });
    t.curves = performance.now() - t1;
    t1 = performance.now();
    await drawHeatmap(heatEl, visible, state.metric, { mode: state.heat });
    t.heatmap = performance.now() - t1;
    const t2 = performance.now();
    const rows = [...ordered(points).entries()].filter(([n]) => visible.has(n)).map(([, pts]) => pts).flat();
    const unmeasured = points.filter((p) => p.measured === false && visible.has(p.parameter));
    table.innerHTML = pointsTableHtml([...rows, ...unmeasured], { structured });
    t.table = performance.now() - t2;
    renderSummary();
    pointCount.textContent = `${points.length} points · ${all.size} parameters`;
    const base = baselines(all, "top1");
    const warning = chanceWarning(job, base.size ? Math.max(...base.values()) : null, classes);
    chance.hidden = !warning;
    chance.textContent = warning || "";
    const ms = performance.now() - t0;
    ps.renderHistory = [...(ps.renderHistory || []).slice(-200), { points: points.length, status: job.status }];
    ps.lastRender = { ms, parts: t, points: points.length, parameters: curves.size, bands,
      traces: curvesEl.data ? curvesEl.data.filter((x) => x.meta === "curve").length : 0,
      shown: { curves: names.filter((n) => !state.hidden.has(n)), heatmap: [...visible.keys()],
        table: [...new Set(rows.map((p) => p.parameter))] } };
    return ms;
  }
  ps.renderSensitivity = render;

  // a legend click hides a layer in every view; plotly has restyled the curves itself by then
  let wired = false;
  const wireLegend = () => {
    if (wired || !curvesEl.on) return;
    wired = true;
    curvesEl.on("plotly_restyle", () => {
      const hidden = new Set((curvesEl.data || []).filter((x) => x.meta === "curve" && x.visible === "legendonly").map((x) => x.legendgroup));
      const same = hidden.size === state.hidden.size && [...hidden].every((n) => state.hidden.has(n));
      if (!same) { state.hidden = hidden; render(); }
    });
  };

  // live growth: batch point events into one redraw every 400 ms at most
  let pending = null;
  const schedule = () => {
    if (pending) return;
    pending = setTimeout(async () => { pending = null; await render(); }, 400);
  };
  setOnPoint((p) => { add(p); schedule(); });
  setOnEnd(async () => {
    showNotes((await api(`jobs/${id}`)).result);
    (await api(`jobs/${id}/points`)).forEach(add); clearTimeout(pending); pending = null; await render(); });
  onLeave(() => { clearTimeout(pending); if (ps.renderSensitivity === render) delete ps.renderSensitivity; });
  await render();
  wireLegend();
}

/** The class count of the job's model: the catalogue's, a registered model's architecture's, or synthetic's option. */
async function numClasses(job) {
  const spec = job.spec || {};
  if (spec.dataset_options && Number(spec.dataset_options.classes) > 0) return Number(spec.dataset_options.classes);
  if (!numClasses.catalogue) numClasses.catalogue = api("architectures").catch(() => ({ architectures: [] }));
  const cat = await numClasses.catalogue;
  const find = (name) => (cat.architectures || []).find((a) => a.name === name || (a.aliases || []).includes(name));
  let arch = find(spec.model);
  if (!arch || spec.model_kind === "registered") {
    try {
      const m = (await api("models")).find((x) => x.name === spec.model);
      if (m) arch = find(m.architecture) || arch;
    } catch { /* none */ }
  }
  return arch && arch.num_classes ? arch.num_classes : null;
}

/** The prune/train result: the service's `result`, else the report JSON artifact, else the registered model's metrics. */
async function loadResult(jobId) {
  const job = await api(`jobs/${jobId}`); // fresh: the result is written as the job ends
  let result = job.result || null;
  if (!result) {
    try {
      const arts = await api(`jobs/${job.id}/artifacts`);
      const a = arts.find((x) => /\.json$/i.test(x.name) && /metric|result|summary|report/i.test(`${x.kind} ${x.name}`));
      if (a) result = await api(`/api/v1/artifacts/${a.id}/download`);
    } catch { /* none */ }
  }
  try {
    const m = (await api("models")).find((x) => x.source_job_id === job.id);
    if (m) result = { ...(result || m.metrics || {}), model: m };
  } catch { /* none */ }
  return result;
}

async function epochsSection(view, job, setOnEnd, setOnProgress) {
  const chartAcc = h("div.chart.short#epochs-top1");
  const chartLoss = h("div.chart.short#epochs-loss");
  const table = h("table.table.compact#epochs-table");
  const resultBox = h("div#prune-result");
  const opts = { logY: false, fixed: false };
  const logBox = h("label.check", h("input#epochs-log-y", { type: "checkbox", onchange: (e) => { opts.logY = e.target.checked; render(); } }), " log scale");
  const fixedBox = h("label.check", h("input#epochs-fixed-axis", { type: "checkbox", onchange: (e) => { opts.fixed = e.target.checked; render(); } }), " 0–100 %");
  const svg = (el, name) => h("button.btn.small", { type: "button", onclick: () => loadPlotly().then((P) => P.downloadImage(el, { format: "svg", filename: `${name}-${job.id}` })) }, "⇩ SVG");
  let epochs = [];
  const csvBtn = h("button.btn.small#export-epochs", { type: "button", onclick: () => downloadText(toCsv(
    ["epoch", "schedule_epoch", "lr", "train_loss", "top1", "top5", "loss", "sparsity"],
    epochs.map((e) => [shownEpoch(e), e.epoch, e.lr, e.train_loss, e.top1, e.top5, e.loss, e.sparsity])), `epochs-${job.id}.csv`, "text/csv") }, "⇩ data (CSV)");
  view.append(
    h("div.grid2",
      h("div.card", h("div.card-head", h("h2", job.kind === "prune" ? "Top1 and sparsity per epoch" : "Top1 per epoch"), h("div.tools", fixedBox, svg(chartAcc, "top1"))), chartAcc),
      h("div.card", h("div.card-head", h("h2", "Loss per epoch"), h("div.tools", logBox, svg(chartLoss, "loss"))), chartLoss)),
    h("div.card", h("div.card-head", h("h2", "Epochs"), csvBtn), h("div.table-scroll", table)),
    resultBox,
  );
  // a prune job stores its schedule's epochs (0-based, as Distiller's policies count); shown from 1 like training's
  const shownEpoch = (e) => (job.kind === "prune" ? e.epoch + 1 : e.epoch);
  const layout = (extra) => ({
    margin: { l: 56, r: 56, t: 10, b: 40 }, xaxis: { title: { text: "epoch" }, dtick: 1 }, legend: { orientation: "h", y: -0.25 },
    plot_bgcolor: "#fff", paper_bgcolor: "#fff", font: { family: "system-ui, sans-serif", size: 12 }, ...extra,
  });
  let running = false;
  let again = false;
  async function render() {
    if (running) { again = true; return; }
    running = true;
    try {
      epochs = await api(`jobs/${job.id}/epochs`);
      const x = epochs.map(shownEpoch);
      const withSparsity = epochs.some((e) => e.sparsity !== null && e.sparsity !== undefined);
      const Plotly = await loadPlotly();
      await Plotly.react(chartAcc, [
        { type: "scatter", mode: "lines+markers", name: "top1 (%)", x, y: epochs.map((e) => e.top1), line: { color: "#1f77b4" } },
        ...(withSparsity ? [{ type: "scatter", mode: "lines+markers", name: "sparsity (%)", x, y: epochs.map((e) => (e.sparsity === null ? null : 100 * e.sparsity)), yaxis: "y2", line: { color: "#d62728", dash: "dot" } }] : []),
      ], layout({ yaxis: { title: { text: "top1 (%)" }, ...(opts.fixed ? { range: [0, 100], autorange: false } : { autorange: true }) },
        ...(withSparsity ? { yaxis2: { title: { text: "sparsity (%)" }, overlaying: "y", side: "right", range: [0, 100], tickmode: "linear", tick0: 0, dtick: 25, showgrid: false } } : {}) }), PLOT_CONFIG);
      await Plotly.react(chartLoss, [
        { type: "scatter", mode: "lines+markers", name: "test loss", x, y: epochs.map((e) => e.loss), line: { color: "#2ca02c" } },
        { type: "scatter", mode: "lines+markers", name: "train loss", x, y: epochs.map((e) => e.train_loss), line: { color: "#ff7f0e" } },
      ], layout({ yaxis: { title: { text: "loss" }, type: opts.logY ? "log" : "linear" } }), PLOT_CONFIG);
      table.innerHTML = `<thead><tr><th>epoch</th>${job.kind === "prune" ? "<th title=\"the schedule's epoch (0-based, as its policies count)\">schedule epoch</th>" : ""}<th>lr</th><th>train loss</th><th>top1</th><th>top5</th><th>loss</th><th>sparsity</th><th>seconds</th></tr></thead><tbody>${
        epochs.map((e) => `<tr><td class="num">${shownEpoch(e)}</td>${job.kind === "prune" ? `<td class="num muted">${e.epoch}</td>` : ""}<td class="num">${fmtNum(e.lr, 5)}</td><td class="num">${fmtNum(e.train_loss, 4)}</td><td class="num">${fmtNum(e.top1, 2)}</td><td class="num">${fmtNum(e.top5, 2)}</td><td class="num">${fmtNum(e.loss, 4)}</td><td class="num">${e.sparsity === null ? "–" : fmtNum(100 * e.sparsity, 2) + "%"}</td><td class="num">${fmtNum(e.data && e.data.seconds, 1)}</td></tr>`).join("")
      }</tbody>`;
      if (!epochs.length) {
        const text = ACTIVE.has(job.status) ? `Epoch 1${job.progress_total ? ` of ${job.progress_total}` : ""} is running: each epoch appears here as it ends.`
          : `No epoch was recorded: the job ${job.status}.`;
        table.innerHTML = `<tbody><tr><td class='empty'>${text}</td></tr></tbody>`;
      }
      ps.lastEpochs = { epochs: epochs.length, status: job.status };
      if (!ACTIVE.has(job.status)) renderResult(resultBox, await loadResult(job.id));
    } finally {
      running = false;
    }
    if (again) { again = false; await render(); }
  }
  // each progress event is an epoch that ended: redraw then (and poll as a fallback while it runs)
  let seen = job.progress_done;
  setOnProgress(() => { if (job.progress_done !== seen) { seen = job.progress_done; render(); } });
  const poll = setInterval(() => { if (ACTIVE.has(job.status)) render(); }, 3000);
  onLeave(() => clearInterval(poll));
  setOnEnd(render);
  await render();
}

function renderResult(box, r) {
  box.replaceChildren();
  if (!r) return;
  const cards = [];
  const final = r.final || (r.top1 !== undefined ? { top1: r.top1, top5: r.top5, loss: r.loss } : null);
  const evalRows = [["baseline (dense)", r.baseline], [r.baseline ? "after pruning" : "final", final], ["thinned", r.thinned]].filter(([, v]) => v);
  if (evalRows.length) {
    cards.push(h("div.card", h("h2", r.baseline ? "Before / after" : "Evaluation"), h("table.table.compact#before-after",
      h("thead", h("tr", h("th", ""), h("th", "top1 (%)"), h("th", "top5 (%)"), h("th", "loss"))),
      h("tbody", evalRows.map(([k, v]) => h("tr", h("td", k), h("td.num", fmtNum(v.top1, 2)), h("td.num", fmtNum(v.top5, 2)), h("td.num", fmtNum(v.loss, 4))))))));
  }
  const t = r.thinning;
  if (t && t.before && t.after) {
    const ratio = (a, b) => (a && b ? `×${(b / a).toFixed(2)}` : "–");
    cards.push(h("div.card", h("h2", "Size and speed"), h("table.table.compact#size-speed",
      h("thead", h("tr", h("th", ""), h("th", "before"), h("th", "after"), h("th", "after / before"))),
      h("tbody",
        h("tr", h("td", "parameters"), h("td.num", fmtInt(t.before.params)), h("td.num", fmtInt(t.after.params)), h("td.num", ratio(t.before.params, t.after.params))),
        h("tr", h("td", "MACs"), h("td.num", { title: fmtInt(t.before.macs) }, fmtSi(t.before.macs)), h("td.num", { title: fmtInt(t.after.macs) }, fmtSi(t.after.macs)), h("td.num", ratio(t.before.macs, t.after.macs))),
        h("tr", h("td", "CPU latency (ms)"), h("td.num", fmtNum(t.before.latency_ms, 3)), h("td.num", fmtNum(t.after.latency_ms, 3)), h("td.num", ratio(t.before.latency_ms, t.after.latency_ms)))))));
  }
  if (r.sparsity !== undefined && r.sparsity !== null) cards.push(h("div.card.stat", h("div.stat-label", "overall weight sparsity"), h("div.stat-value#overall-sparsity", `${fmtNum(100 * r.sparsity, 2)}%`)));
  const summary = r.summary || r.sparsity_summary;
  if (Array.isArray(summary) && summary.length) {
    cards.push(h("div.card", h("h2", "Sparsity summary"), h("div.table-scroll", h("table.table.compact#sparsity-summary",
      h("thead", h("tr", ["parameter", "shape", "nnz dense", "nnz sparse", "sparsity", "cols %", "rows %", "ch %", "2D %", "3D %"].map((c) => h("th", c)))),
      h("tbody", summary.map((s) => {
        const sp = s.nnz_dense ? 1 - s.nnz_sparse / s.nnz_dense : (s.sparsity ?? null);
        return h("tr", h("td.mono", s.name || s.parameter), h("td.mono", Array.isArray(s.shape) ? s.shape.join("×") : (s.shape ?? "")),
          h("td.num", fmtInt(s.nnz_dense)), h("td.num", fmtInt(s.nnz_sparse)), h("td.num", sp === null ? "–" : `${fmtNum(100 * sp, 2)}%`),
          ["cols", "rows", "ch", "k2d", "k3d"].map((k) => h("td.num", fmtNum(s[k], 1))));
      }))))));
  }
  if (Array.isArray(r.warnings) && r.warnings.length) {
    cards.push(h("div.card.warn#result-warnings", h("h2", "Warnings"), h("ul", r.warnings.map((w) => h("li", String(w))))));
  }
  if (r.model) cards.push(h("p.muted", "Registered as ", h("a", { href: "#/models" }, typeof r.model === "string" ? r.model : r.model.name)));
  box.append(...cards);
}

async function artifactsSection(box, view, job) {
  let arts = [];
  try { arts = await api(`jobs/${job.id}/artifacts`); } catch { return; }
  box.replaceChildren();
  if (!arts.length) return;
  const report = arts.find((a) => /\.html?$/i.test(a.name));
  const actions = view.querySelector(".page-head .actions");
  if (report && actions && !actions.querySelector("#download-report")) {
    actions.querySelector("#download-html")?.remove();
    actions.append(h("a.btn#download-report", { href: withToken(`/api/v1/artifacts/${report.id}/download`), download: report.name }, "⇩ HTML report"));
  }
  box.append(h("div.card", h("h2", "Artifacts"), h("table.table.compact#artifacts",
    h("thead", h("tr", h("th", "kind"), h("th", "name"), h("th", "size"), h("th", "sha256"), h("th", ""))),
    h("tbody", arts.map((a) => h("tr", h("td", a.kind), h("td.mono", a.name), h("td.num", fmtSi(a.size) + "B"),
      h("td.mono.muted", { title: a.sha256 }, a.sha256.slice(0, 12) + "…"),
      h("td", h("a", { href: withToken(`/api/v1/artifacts/${a.id}/download`), download: a.name }, "download"))))))));
}

/** A plan job: the optimiser's plan and the baselines, predicted beside measured, and the schedule. */
function planJobSection(view, job, setOnEnd) {
  const box = h("div.card#plan-job-result");
  const draw = (j) => {
    const r = j.result || {};
    const rows = r.plan ? [["optimal", r.plan], ...Object.entries(r.baselines || {})] : [];
    const f = (v) => (v === null || v === undefined ? "–" : fmtNum(v, 3));
    box.innerHTML = "";
    box.append(h("div.card-head", h("h2", `Plan of sweep #${j.spec.sensitivity_job}`),
      h("a.btn.small", { href: `#/plan/${j.spec.sensitivity_job}` }, "Plan page")));
    if (!rows.length) { box.append(h("p.muted", j.status === "succeeded" ? "No plan." : "The plan is being measured.")); return; }
    box.append(h("table.table.compact#plan-job-table", h("thead", h("tr", h("th", "method"), h("th", "overall sparsity"),
      h("th", "predicted drop"), h("th", "measured drop"))), h("tbody", rows.map(([name, p]) => (p.error
      ? h("tr", h("td", name), h("td", { colspan: 3 }, `no plan: ${p.error}`))
      : h("tr", { "data-method": name }, h("td", name), h("td.num", `${fmtNum(100 * p.overall_sparsity, 2)}%`),
        h("td.num", f(p.predicted_drop)), h("td.num", f(p.measured_drop))))))));
    if (r.yaml) box.append(h("pre.code", r.yaml));
  };
  draw(job);
  setOnEnd(async () => draw(await api(`jobs/${job.id}`)));
  view.append(box);
}
