// One job's page: header with live status/progress, then per kind the sensitivity figures or the
// per-epoch history and the prune result.
import { buildReport } from "./report.js";
import { curvesOf, drawCurves, drawHeatmap, hasMacs, metricButtons, metricsOf, pickMetric, pointsTableHtml } from "./sensitivity.js";
import {
  ACTIVE, api, downloadText, fmtDuration, fmtInt, fmtNum, fmtSi, fmtTime, h, loadPlotly, onLeave, progressBar, statusBadge,
  toast, updateProgressBar, withToken,
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
        try { job = await api(`jobs/${id}/cancel`, { method: "POST" }); refreshHeader(); toast("Cancel requested"); } catch (err) { toast(err.message, "error"); }
      } }, "Cancel"));
    } else {
      actions.append(h("button.btn.danger#delete-job", { onclick: async () => {
        if (!confirm(`Delete job ${id} with its points and artifacts?`)) return;
        try { await api(`jobs/${id}`, { method: "DELETE" }); toast(`Job ${id} deleted`); location.hash = "#/jobs"; } catch (err) { toast(err.message, "error"); }
      } }, "Delete"));
    }
    if (job.kind === "sensitivity") {
      actions.append(h("a.btn#download-csv", { href: withToken(`/api/v1/jobs/${id}/points.csv`), download: `sensitivity-${id}.csv` }, "⇩ Distiller CSV"));
      actions.append(h("button.btn#download-html", { type: "button", title: "a self-contained HTML report (opens offline)", onclick: async () => {
        try {
          const html = await buildReport(job, await api(`jobs/${id}/points`));
          downloadText(html, `sensitivity-${id}.html`, "text/html");
        } catch (err) { toast(err.message, "error"); }
      } }, "⇩ HTML report"));
      if (job.status === "succeeded") actions.append(h("a.btn.primary#plan-link", { href: `#/plan/${id}` }, "Plan pruning →"));
      actions.append(h("a.btn", { href: `#/compare?jobs=${id}` }, "Compare…"));
    }
  }

  function refreshHeader() {
    badge.replaceChildren(statusBadge(job.status));
    updateProgressBar(bar, job);
    duration.textContent = fmtDuration(job.started_at, job.finished_at);
    counts.textContent = job.progress_total ? `${job.progress_done}/${job.progress_total}` : "";
    errorBox.hidden = !job.error;
    errorBox.querySelector("span").textContent = job.error || "";
    renderActions();
  }
  renderActions();

  const spec = job.spec || {};
  const facts = [
    ["Model", spec.model], ["Dataset", spec.dataset + (spec.dataset_options && Object.keys(spec.dataset_options).length ? ` (${Object.entries(spec.dataset_options).map(([k, v]) => `${k}=${v}`).join(", ")})` : "")],
    job.kind === "sensitivity" ? ["Group", `${spec.group}${spec.coupled ? " (coupled)" : ""}`] : ["Epochs", spec.epochs],
    job.kind === "sensitivity" ? ["Levels", Array.isArray(spec.levels) ? `${spec.levels.length} (${spec.levels[0]} … ${spec.levels[spec.levels.length - 1]})` : spec.levels] : ["LR", spec.lr],
    ["Created", fmtTime(job.created_at)], ["Worker", job.worker ? `${job.worker}${job.device ? ` · ${job.device}` : ""}` : "–"],
    ["Code", job.code_version || "–"], ["Experiment", job.experiment_id ?? "–"],
  ];
  view.append(
    h("div.page-head", h("div", h("div.crumbs", h("a", { href: "#/jobs" }, "Jobs"), " / ", `#${id}`),
      h("h1", `${job.kind[0].toUpperCase()}${job.kind.slice(1)} job #${id}`, " ", badge)), actions),
    h("div.card.job-head", h("div.progress-row", bar, counts, duration),
      h("dl.facts", facts.map(([k, v]) => [h("dt", k), h("dd", v ?? "–")]))),
    errorBox,
  );

  // live: SSE while the job is active (points and progress), then a final authoritative reload
  let onPoint = null;
  let onEnd = null;
  if (ACTIVE.has(job.status)) {
    const es = new EventSource(withToken(`/api/v1/jobs/${id}/events`));
    es.addEventListener("progress", (e) => {
      const s = JSON.parse(e.data);
      Object.assign(job, { status: s.status, progress_done: s.done, progress_total: s.total, error: s.error });
      refreshHeader();
    });
    es.addEventListener("point", (e) => { if (onPoint) onPoint(JSON.parse(e.data)); });
    es.addEventListener("end", async () => {
      es.close();
      job = await api(`jobs/${id}`);
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
  } else {
    await epochsSection(view, job, setOnEnd);
  }
  view.append(artifactsBox);
  await artifactsSection(artifactsBox, view, job);
  view.append(h("details.card", h("summary", "Spec (JSON)"), h("pre.code", JSON.stringify(job.spec, null, 2))));
}

async function sensitivitySection(view, job, setOnPoint, setOnEnd) {
  const id = job.id;
  const store = new Map(); // "param|sparsity" -> point
  const add = (p) => store.set(`${p.parameter}|${p.sparsity}`, p);
  // plotly.js is loaded alongside the points, so the render (and its timing) is drawing only
  const [initial] = await Promise.all([api(`jobs/${id}/points`), loadPlotly()]);
  initial.forEach(add);

  // bands by default only while they stay readable (and cheap): one filled trace per parameter
  const state = { metric: "top1", xAxis: "sparsity", bands: new Set([...store.values()].map((p) => p.parameter)).size <= 12 };
  const structured = (job.spec.group || "element") !== "element";
  // one button per metric the points have (top1/top5/loss, a language model's loss/perplexity, a custom one)
  const metricSwitch = h("div.segmented#metric-switch");
  const pick = (m) => { state.metric = m; syncSwitch(); render(); };
  const xSwitch = h("div.segmented#x-switch", { hidden: true }, [["sparsity", "vs sparsity"], ["macs", "vs MACs"]].map(([k, label]) => h("button", {
    type: "button", "data-x": k, class: k === state.xAxis ? "active" : "", onclick: () => { state.xAxis = k; syncSwitch(); render(); },
  }, label)));
  const bandToggle = h("label.check", h("input#bands-toggle", { type: "checkbox", checked: state.bands, onchange: (e) => { state.bands = e.target.checked; render(); } }), " 95% bands");
  let metricNames = [];
  function syncSwitch() {
    metricButtons(metricSwitch, metricNames, state.metric, pick);
    for (const b of xSwitch.children) b.classList.toggle("active", b.dataset.x === state.xAxis);
  }
  const curvesEl = h("div.chart#curves");
  const heatEl = h("div.chart#heatmap");
  const table = h("table.table.compact#points-table");
  const pointCount = h("span.muted#point-count");
  const empty = h("p.muted#no-points", "No points yet: they appear here as the job measures them.");
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
  view.append(
    notes,
    h("div.card", h("div.card-head", h("h2", "Sensitivity curves"), h("div.tools", metricSwitch, xSwitch, bandToggle)),
      h("p.hint", "One curve per parameter; click a legend entry to hide or show it, double-click to isolate it."),
      empty, curvesEl),
    h("div.card", h("div.card-head", h("h2", "Layer × level"), h("span.muted", "the selected metric per parameter and sparsity")), heatEl),
    h("div.card", h("div.card-head", h("h2", "Points"), pointCount), h("div.table-scroll", table)),
  );

  async function render() {
    const t0 = performance.now();
    const points = [...store.values()];
    metricNames = metricsOf(points);
    state.metric = pickMetric(metricNames, state.metric); // an LM has no top1: its first metric then
    syncSwitch();
    const curves = curvesOf(points, state.metric);
    const macs = structured && hasMacs(points);
    xSwitch.hidden = !macs;
    if (!macs && state.xAxis === "macs") { state.xAxis = "sparsity"; syncSwitch(); }
    empty.hidden = curves.size > 0;
    const t = {};
    if (curves.size) {
      let t1 = performance.now();
      await drawCurves(curvesEl, curves, state.metric, { xAxis: state.xAxis, bands: state.bands });
      t.curves = performance.now() - t1;
      t1 = performance.now();
      await drawHeatmap(heatEl, curves, state.metric);
      t.heatmap = performance.now() - t1;
    }
    const t2 = performance.now();
    const ordered = [...curvesOf(points).values()].flat();
    const unmeasured = points.filter((p) => p.measured === false);
    table.innerHTML = pointsTableHtml([...ordered, ...unmeasured], { structured });
    t.table = performance.now() - t2;
    pointCount.textContent = `${points.length} points · ${new Set(points.map((p) => p.parameter)).size} parameters`;
    const ms = performance.now() - t0;
    ps.renderHistory = [...(ps.renderHistory || []).slice(-200), { points: points.length, status: job.status }];
    ps.lastRender = { ms, parts: t, points: points.length, parameters: curves.size, traces: curvesEl.data ? curvesEl.data.filter((t) => t.meta === "curve").length : 0 };
    return ms;
  }
  ps.renderSensitivity = render;

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

async function epochsSection(view, job, setOnEnd) {
  const chartAcc = h("div.chart.short#epochs-top1");
  const chartLoss = h("div.chart.short#epochs-loss");
  const table = h("table.table.compact#epochs-table");
  const resultBox = h("div#prune-result");
  view.append(
    h("div.grid2", h("div.card", h("h2", job.kind === "prune" ? "Top1 and sparsity per epoch" : "Top1 per epoch"), chartAcc), h("div.card", h("h2", "Loss per epoch"), chartLoss)),
    h("div.card", h("h2", "Epochs"), h("div.table-scroll", table)),
    resultBox,
  );
  const layout = (extra) => ({
    margin: { l: 56, r: 56, t: 10, b: 40 }, xaxis: { title: { text: "epoch" }, dtick: 1 }, legend: { orientation: "h", y: -0.25 },
    plot_bgcolor: "#fff", paper_bgcolor: "#fff", font: { family: "system-ui, sans-serif", size: 12 }, ...extra,
  });
  async function render() {
    const epochs = await api(`jobs/${job.id}/epochs`);
    const x = epochs.map((e) => e.epoch);
    const withSparsity = epochs.some((e) => e.sparsity !== null && e.sparsity !== undefined);
    const Plotly = await loadPlotly();
    await Plotly.react(chartAcc, [
      { type: "scatter", mode: "lines+markers", name: "top1 (%)", x, y: epochs.map((e) => e.top1), line: { color: "#1f77b4" } },
      ...(withSparsity ? [{ type: "scatter", mode: "lines+markers", name: "sparsity (%)", x, y: epochs.map((e) => (e.sparsity === null ? null : 100 * e.sparsity)), yaxis: "y2", line: { color: "#d62728", dash: "dot" } }] : []),
    ], layout({ yaxis: { title: { text: "top1 (%)" } }, ...(withSparsity ? { yaxis2: { title: { text: "sparsity (%)" }, overlaying: "y", side: "right", range: [0, 100], tickmode: "linear", tick0: 0, dtick: 25, showgrid: false } } : {}) }), { displaylogo: false, responsive: true });
    await Plotly.react(chartLoss, [
      { type: "scatter", mode: "lines+markers", name: "test loss", x, y: epochs.map((e) => e.loss), line: { color: "#2ca02c" } },
      { type: "scatter", mode: "lines+markers", name: "train loss", x, y: epochs.map((e) => e.train_loss), line: { color: "#ff7f0e" } },
    ], layout({ yaxis: { title: { text: "loss" } } }), { displaylogo: false, responsive: true });
    table.innerHTML = `<thead><tr><th>epoch</th><th>lr</th><th>train loss</th><th>top1</th><th>top5</th><th>loss</th><th>sparsity</th><th>seconds</th></tr></thead><tbody>${
      epochs.map((e) => `<tr><td class="num">${e.epoch}</td><td class="num">${fmtNum(e.lr, 5)}</td><td class="num">${fmtNum(e.train_loss, 4)}</td><td class="num">${fmtNum(e.top1, 2)}</td><td class="num">${fmtNum(e.top5, 2)}</td><td class="num">${fmtNum(e.loss, 4)}</td><td class="num">${e.sparsity === null ? "–" : fmtNum(100 * e.sparsity, 2) + "%"}</td><td class="num">${fmtNum(e.data && e.data.seconds, 1)}</td></tr>`).join("")
    }</tbody>`;
    if (!epochs.length) table.innerHTML = "<tbody><tr><td class='empty'>No epoch finished yet.</td></tr></tbody>";
    if (!ACTIVE.has(job.status)) renderResult(resultBox, await loadResult(job.id));
  }
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
        h("tr", h("td", "MACs"), h("td.num", fmtSi(t.before.macs)), h("td.num", fmtSi(t.after.macs)), h("td.num", ratio(t.before.macs, t.after.macs))),
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
