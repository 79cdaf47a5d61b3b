// Plan: a tolerance slider over a finished sensitivity job. The per-layer choice, the expected overall
// sparsity/MACs and the schedule YAML are computed here from the points (instant feedback, the same
// rule as pruning_core.plan); "Launch" asks the service to plan and run it (/plans/launch).
import { api, esc, fmtNum, fmtSi, h, loadPlotly, toast } from "./util.js";
import { showErrors, clearErrors } from "./newjob.js";
import { baselines, chanceWarning, curvesOf, metricInfo, metricsOf, metricValue, pickMetric } from "./sensitivity.js";

/** What the tolerance measures (pruning_core.plan.damage_unit): a drop where higher is better, else a rise. */
export const damageUnit = (metric, higher) => (metric === "top1" ? "top1 drop (points)" : `${metric} ${higher ? "drop" : "rise"}`);

/** parameter -> [{sparsity, damage, point}] (needs each parameter's 0.0 row), like plan._curves: the damage
 * is the metric's drop where `higher` is better (top1), its rise where lower is (loss, perplexity). */
export function damageCurves(points, metric, higher = metricInfo(metric).goodHigh !== false) {
  const by = new Map();
  for (const p of points) {
    if (p.measured === false || metricValue(p, metric) === null) continue;
    if (!by.has(p.parameter)) by.set(p.parameter, []);
    by.get(p.parameter).push(p);
  }
  const out = new Map();
  const missing = [];
  for (const [name, rows] of by) {
    const base = rows.find((r) => r.sparsity === 0);
    if (!base) { missing.push(name); continue; }
    const b0 = metricValue(base, metric);
    out.set(name, rows.map((r) => ({ sparsity: r.sparsity, point: r,
      damage: higher ? b0 - metricValue(r, metric) : metricValue(r, metric) - b0 })).sort((a, b) => a.sparsity - b.sparsity));
  }
  return { curves: out, missing };
}

/** The highest measured level per parameter whose damage is within the tolerance (plan._choose). */
export function chooseLevels(curves, tolerance) {
  const levels = new Map();
  for (const [name, curve] of curves) {
    let best = { sparsity: 0, damage: 0, point: curve[0].point };
    for (const c of curve) if (c.damage <= tolerance + 1e-12 && c.sparsity >= best.sparsity) best = c;
    levels.set(name, best);
  }
  return levels;
}

/** Element count per parameter: nnz of its dense (0.0) row. */
export function sizesOf(curves) {
  const sizes = new Map();
  for (const [name, curve] of curves) {
    const base = curve.find((c) => c.sparsity === 0);
    const p = base ? base.point : curve[0].point;
    sizes.set(name, p.nnz ? Math.round(p.nnz / Math.max(1e-9, 1 - p.sparsity)) : 0);
  }
  return sizes;
}

const pyFloat = (v) => {
  if (Number.isInteger(v)) return `${v}.0`;
  const s = String(v);
  return /e/.test(s) ? s.replace(/e-(\d)$/, "e-0$1") : s;
};
const pruneName = (level) => "prune_" + level.toFixed(4).replace(/0+$/, "").replace(/\.$/, "").replace(".", "_");

/** The AGP schedule pruning_core.plan.plan_schedule writes (yaml.safe_dump layout). */
export function scheduleYaml(levels, group, epochs) {
  const byLevel = new Map();
  for (const [name, c] of levels) {
    if (c.sparsity > 0) {
      if (!byLevel.has(c.sparsity)) byLevel.set(c.sparsity, []);
      byLevel.get(c.sparsity).push(name);
    }
  }
  if (!byLevel.size) throw new Error("no parameter can be pruned within the tolerance; nothing to schedule");
  if (epochs < 3) throw new Error("AGP needs at least 3 epochs (2 pruning steps, then fine-tuning)");
  const structured = ["filter", "filters", "channel", "channels"].includes(group);
  const groupType = group.startsWith("channel") ? "Channels" : "Filters";
  const end = Math.max(2, Math.floor((2 * epochs) / 3));
  const sorted = [...byLevel.keys()].sort((a, b) => a - b);
  const lines = ["version: 1", "pruners:"];
  for (const level of sorted) {
    lines.push(`  ${pruneName(level)}:`);
    lines.push(`    class: ${structured ? "L1RankedStructureParameterPruner_AGP" : "AutomatedGradualPruner"}`);
    lines.push(`    initial_sparsity: ${pyFloat(Math.min(0.05, level / 2))}`);
    lines.push(`    final_sparsity: ${pyFloat(level)}`);
    if (structured) lines.push(`    group_type: ${groupType}`);
    lines.push(`    weights: [${byLevel.get(level).join(", ")}]`);
  }
  lines.push("policies:");
  for (const level of sorted) {
    lines.push(`- pruner: {instance_name: ${pruneName(level)}}`, "  starting_epoch: 0", `  ending_epoch: ${end}`, "  frequency: 1");
  }
  return lines.join("\n") + "\n";
}

/** Everything the page shows for one tolerance. */
export function computePlan(curves, sizes, tolerance, group, epochs, { withYaml = true } = {}) {
  const levels = chooseLevels(curves, tolerance);
  let total = 0;
  let pruned = 0;
  for (const [name, c] of levels) {
    const n = sizes.get(name) || 0;
    total += n;
    pruned += Math.floor(c.sparsity * n);
  }
  let macs = null;
  const first = [...levels.values()][0];
  const baseMacs = first && first.point && curves.get([...levels.keys()][0]).find((c) => c.sparsity === 0)?.point.macs;
  if (baseMacs) {
    macs = { base: baseMacs, expected: baseMacs };
    for (const c of levels.values()) if (c.point.macs !== null && c.point.macs !== undefined) macs.expected -= baseMacs - c.point.macs;
  }
  let yaml = "";
  let yamlError = null;
  if (withYaml) {
    try { yaml = scheduleYaml(levels, group, epochs); } catch (e) { yamlError = e.message; }
  }
  return { levels, overall: total ? pruned / total : null, weights: { total, pruned }, macs, yaml, yamlError };
}

/** How many classes a job's model predicts: the dataset's `classes` option, else the catalogue's entry for
 * its architecture (a registered model's through the registry); null when unknown (no warning then). */
export async function classCount(job) {
  const spec = job.spec || {};
  if (spec.dataset_options && Number(spec.dataset_options.classes) > 0) return Number(spec.dataset_options.classes);
  const [cat, models] = await Promise.all([api("architectures").catch(() => null), api("models").catch(() => [])]);
  const find = (name) => ((cat && cat.architectures) || []).find((a) => a.name === name || (a.aliases || []).includes(name));
  const registered = models.find((m) => m.name === spec.model);
  const arch = (registered && find(registered.architecture)) || find(spec.model);
  return arch && arch.num_classes ? arch.num_classes : null;
}

/** The plan page's chance-level warning: a plan from an untrained model's curves prunes everything. */
async function chanceCard(job, points) {
  const base = baselines(curvesOf(points, "top1"), "top1");
  const top1 = base.size ? Math.max(...base.values()) : null;
  const text = top1 === null ? null : chanceWarning(job, top1, await classCount(job));
  return text ? h("div.card.warn.chance#plan-chance-warning", { role: "alert" }, text) : null;
}

export async function planPage(view, id) {
  const [job, points, Plotly] = await Promise.all([api(`jobs/${id}`), api(`jobs/${id}/points`), loadPlotly()]);
  if (job.kind !== "sensitivity") throw new Error(`job ${id} is a ${job.kind} job: plans start from a sensitivity job`);
  const group = job.spec.group || "element";
  const names = metricsOf(points);
  // an LM's points have no top1: its first metric; a custom metric's direction is asked (goodHigh null)
  const state = { metric: pickMetric(names, "top1"), higher: true, tolerance: 1.0, epochs: 10 };
  const known = (m) => metricInfo(m).goodHigh !== null;
  const higherOf = (m) => (known(m) ? metricInfo(m).goodHigh : state.higher);
  let data = null;

  // logarithmic: the useful tolerances are the first few points of a 0-to-90 scale (position 0 is 0)
  const slider = h("input#tolerance", { type: "range", min: "0", max: String(LOG_STEPS), step: "1", value: "0",
    title: "logarithmic scale" });
  const scale = { lo: 0.05, hi: 10 };
  const toTolerance = (pos) => (pos <= 0 ? 0 : scale.lo * (scale.hi / scale.lo) ** ((pos - 1) / (LOG_STEPS - 1)));
  const toPosition = (tol) => (tol <= 0 ? 0 : tol >= scale.hi ? LOG_STEPS
    : Math.max(1, Math.round(1 + (LOG_STEPS - 1) * Math.log(Math.max(tol, scale.lo) / scale.lo) / Math.log(scale.hi / scale.lo))));
  const tolInput = h("input#tolerance-value", { type: "number", min: "0", step: "0.05", value: String(state.tolerance), "data-field": "max_drop" });
  const unit = h("span.muted#tolerance-unit");
  const metricSel = h("select#plan-metric", { "data-field": "metric" }, names.map((m) =>
    h("option", { value: m, selected: m === state.metric }, known(m) ? damageUnit(m, metricInfo(m).goodHigh) : m)));
  const directionSel = h("select#plan-direction", { "data-field": "higher_is_better", title: "a custom metric: which way is better" },
    h("option", { value: "true" }, "higher is better"), h("option", { value: "false" }, "lower is better"));
  const direction = h("div.field#plan-direction-field", h("label", { for: "plan-direction" }, "Direction"), directionSel,
    h("div.field-error", { "data-error-for": "higher_is_better" }));
  metricSel.value = state.metric;
  const epochsIn = h("input#plan-epochs", { type: "number", min: "3", value: "10", "data-field": "epochs" });
  const lrIn = h("input#plan-lr", { type: "text", value: "0.01", "data-field": "lr" });
  const regIn = h("input#plan-register", { type: "text", placeholder: "optional model name", "data-field": "register_as" });
  const thinIn = h("input#plan-thin", { type: "checkbox", "data-field": "thin" });
  const overall = h("div.stat-value#plan-overall");
  const macsBox = h("div.stat-value#plan-macs");
  const countBox = h("div.stat-value#plan-count");
  const yamlBox = h("pre.code#plan-yaml");
  const tradeoff = h("div.chart.mini#plan-tradeoff");
  const tbody = h("tbody#plan-body");
  const launch = h("button.btn.primary#launch-plan", { type: "button" }, "Launch prune job");
  const form = h("div.card.form#plan-form",
    h("div.plan-controls",
      h("div.field.grow", h("label", { for: "tolerance" }, "Tolerance"), h("div.slider-row", slider, tolInput, unit), h("div.field-error", { "data-error-for": "max_drop" })),
      h("div.field", h("label", { for: "plan-metric" }, "Metric"), metricSel, h("div.field-error", { "data-error-for": "metric" })),
      direction,
      h("div.field", h("label", { for: "plan-epochs" }, "Epochs"), epochsIn, h("div.field-error", { "data-error-for": "epochs" })),
      h("div.field", h("label", { for: "plan-lr" }, "LR"), lrIn, h("div.field-error", { "data-error-for": "lr" })),
      h("div.field", h("label", { for: "plan-register" }, "Register as"), regIn, h("div.field-error", { "data-error-for": "register_as" })),
      h("div.field", h("label.check", { title: "remove the pruned filters/channels and measure size and CPU latency before and after" },
        thinIn, " Thin after pruning"), h("div.field-error", { "data-error-for": "thin" }))),
    h("div.stats",
      h("div.stat", h("div.stat-label", "expected overall sparsity"), overall, h("div.stat-note", "of the analysed weights")),
      h("div.stat", h("div.stat-label", "expected MACs"), macsBox, h("div.stat-note", "sum of per-layer savings")),
      h("div.stat", h("div.stat-label", "layers pruned"), countBox)),
    tradeoff,
    h("div.form-error", { hidden: true, role: "alert" }),
    h("div.form-actions", h("button.btn#server-yaml", { type: "button", onclick: async () => {
      try { const r = await api("plans", { method: "POST", body: body(false) }); yamlBox.textContent = r.yaml; toast("YAML from the service"); } catch (err) { showErrors(form, err); }
    } }, "YAML from the service"), launch));

  view.append(
    h("div.page-head", h("div", h("div.crumbs", h("a", { href: "#/jobs" }, "Jobs"), " / ", h("a", { href: `#/jobs/${id}` }, `#${id}`), " / plan"),
      h("h1", `Plan from sensitivity job #${id}`)), h("div.muted", `${job.spec.model} on ${job.spec.dataset} · ${group}`)),
    await chanceCard(job, points),
    form,
    h("div.grid2.plan-grid",
      h("div.card", h("h2", "Chosen sparsity per layer"), h("div.table-scroll.tall", h("table.table.compact#plan-table",
        h("thead", h("tr", h("th", "parameter"), h("th.wide", "sparsity"), h("th", "measured damage"), h("th", "weights"))), tbody))),
      h("div.card", h("div.card-head", h("h2", "Schedule (Distiller YAML)"),
        h("button.btn.small", { type: "button", onclick: () => navigator.clipboard?.writeText(yamlBox.textContent).then(() => toast("Copied")) }, "Copy")), yamlBox)),
  );

  function body(withLaunch) {
    const b = { sensitivity_job: id, max_drop: Number(tolInput.value), metric: state.metric, epochs: Number(epochsIn.value) };
    if (!known(state.metric)) b.higher_is_better = state.higher;
    if (withLaunch) {
      const lr = Number(lrIn.value);
      b.lr = Number.isFinite(lr) && lrIn.value.trim() ? lr : lrIn.value;
      if (regIn.value.trim()) b.register_as = regIn.value.trim();
      b.thin = thinIn.checked;
    }
    return b;
  }

  function prepare() {
    direction.hidden = known(state.metric);
    data = damageCurves(points, state.metric, higherOf(state.metric));
    data.sizes = sizesOf(data.curves);
    const damages = [...data.curves.values()].flat().map((c) => c.damage).filter((d) => d > 0);
    const top = damages.length ? Math.max(...damages) : 1;
    const step = state.metric === "top1" ? 0.05 : Math.max(1e-4, +(top / 200).toPrecision(1));
    scale.lo = step;
    scale.hi = Math.max(step * 2, Math.ceil(top / step) * step);
    slider.dataset.top = String(scale.hi);
    slider.dataset.step = String(step);
    tolInput.step = String(step);
    unit.textContent = state.metric === "top1" ? "points of top1" : state.metric;
    // the trade-off: expected overall sparsity at every tolerance where the choice changes
    const steps = [0, ...new Set(damages)].sort((a, b) => a - b);
    const ys = steps.map((t) => computePlan(data.curves, data.sizes, t, group, 10, { withYaml: false }).overall);
    const label = `tolerated ${damageUnit(state.metric, higherOf(state.metric))}`;
    Plotly.react(tradeoff, [{ type: "scatter", mode: "lines", line: { shape: "hv", color: "#2f6fde" }, x: [...steps, scale.hi],
      y: [...ys, ys[ys.length - 1]].map((v) => (v === null ? null : 100 * v)), hovertemplate: "tolerance %{x:.3f}<br>overall sparsity %{y:.2f}%<extra></extra>" }], {
      margin: { l: 50, r: 10, t: 6, b: 36 }, height: 170, xaxis: { title: { text: label }, range: [0, scale.hi] },
      yaxis: { title: { text: "sparsity %" }, rangemode: "tozero" }, showlegend: false, plot_bgcolor: "#fff", paper_bgcolor: "#fff",
      font: { family: "system-ui, sans-serif", size: 11 }, shapes: [marker()],
    }, { displaylogo: false, displayModeBar: false, responsive: true });
  }

  function marker() {
    const x = Number(tolInput.value);
    return { type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color: "#d62728", width: 1.5, dash: "dot" } };
  }

  function update() {
    const t0 = performance.now();
    state.tolerance = Number(tolInput.value);
    state.epochs = Number(epochsIn.value) || 10;
    const plan = computePlan(data.curves, data.sizes, state.tolerance, group, state.epochs);
    overall.textContent = plan.overall === null ? "–" : `${fmtNum(100 * plan.overall, 2)}%`;
    const left = plan.macs ? Math.max(0, plan.macs.expected) : null;
    macsBox.textContent = plan.macs ? `≈ ${fmtSi(left)} (−${fmtNum(100 * (1 - left / plan.macs.base), 1)}%)` : "n/a (element)";
    const prunedLayers = [...plan.levels.values()].filter((c) => c.sparsity > 0).length;
    countBox.textContent = `${prunedLayers} / ${plan.levels.size}`;
    yamlBox.textContent = plan.yamlError ? `# ${plan.yamlError}` : plan.yaml;
    launch.disabled = Boolean(plan.yamlError);
    tbody.innerHTML = [...plan.levels].map(([name, c]) => `<tr data-param="${esc(name)}"><td class="mono">${esc(name)}</td>` +
      `<td><div class="bar"><div class="bar-fill" style="width:${(100 * c.sparsity).toFixed(1)}%"></div><span class="bar-label">${(100 * c.sparsity).toFixed(1)}%</span></div></td>` +
      `<td class="num">${c.damage >= 0 ? "+" : ""}${fmtNum(c.damage, state.metric === "top1" ? 2 : 4)}</td><td class="num">${fmtSi(data.sizes.get(name))}</td></tr>`).join("");
    if (data.missing.length) tbody.insertAdjacentHTML("beforeend", `<tr><td colspan="4" class="muted">no 0.0 row, left dense: ${esc(data.missing.join(", "))}</td></tr>`);
    if (tradeoff.layout) Plotly.relayout(tradeoff, { shapes: [marker()] });
    window.prunescope = window.prunescope || {};
    window.prunescope.lastPlan = { ms: performance.now() - t0, overall: plan.overall, levels: Object.fromEntries([...plan.levels].map(([k, v]) => [k, v.sparsity])) };
  }

  slider.addEventListener("input", () => { tolInput.value = String(+toTolerance(Number(slider.value)).toPrecision(3)); update(); });
  tolInput.addEventListener("input", () => { slider.value = String(toPosition(Number(tolInput.value))); update(); });
  epochsIn.addEventListener("input", update);
  directionSel.addEventListener("change", () => {
    state.higher = directionSel.value === "true";
    prepare();
    update();
  });
  metricSel.addEventListener("change", () => {
    state.metric = metricSel.value;
    prepare();
    const v = state.metric === "top1" ? "1" : slider.dataset.step;
    tolInput.value = v; slider.value = String(toPosition(Number(v)));
    update();
  });
  launch.addEventListener("click", async () => {
    clearErrors(form);
    launch.disabled = true;
    try {
      const created = await api("plans/launch", { method: "POST", body: body(true) });
      toast(`Prune job ${created.id} launched`);
      location.hash = `#/jobs/${created.id}`;
    } catch (err) {
      showErrors(form, err);
      launch.disabled = false;
    }
  });

  if (!points.length) throw new Error(`job ${id} has no points yet`);
  prepare();
  if (state.metric !== "top1") tolInput.value = slider.dataset.step; // as on a switch
  slider.value = String(toPosition(Number(tolInput.value)));
  update();
  view.append(optimiseCard(id, job, group, () => ({ metric: state.metric, higher: higherOf(state.metric), known: known(state.metric),
    epochs: Number(epochsIn.value) || 10, lr: lrIn.value, register: regIn.value.trim(), thin: thinIn.checked }), yamlBox));
}

/** What a plan may optimise (pruning_core.plan.OBJECTIVES; tests/service/test_point_metrics.py checks). */
export const OBJECTIVES = ["sparsity", "macs", "latency"];

/** Positions of the logarithmic tolerance slider (0 is tolerance 0). */
const LOG_STEPS = 400;

const pct = (v) => (v === null || v === undefined ? "–" : `${fmtNum(100 * v, 2)}%`);
const num = (v, d = 3) => (v === null || v === undefined ? "–" : fmtNum(v, d));

/** The optimiser beside the baselines (POST /plans with an objective: predicted), then measured as a whole
 * by a plan job (POST /plans/measure), and launched from it (POST /plans/launch with plan_job). */
function optimiseCard(id, job, group, settings, yamlBox) {
  const objectives = OBJECTIVES.filter((o) => o !== "macs" || group !== "element"); // element pruning thins nothing
  const objective = h("select#opt-objective", { "data-field": "objective" }, objectives.map((o) => h("option", { value: o }, o)));
  const mode = h("select#opt-mode", h("option", { value: "target" }, "reach a target (least damage)"),
    h("option", { value: "budget" }, "within a damage budget (most removed)"));
  const value = h("input#opt-value", { type: "number", min: "0", step: "0.01", value: "0.5", "data-field": "target" });
  const correct = h("input#opt-correct", { type: "checkbox", "data-field": "correct" });
  const search = h("input#opt-search", { type: "checkbox", "data-field": "search" });
  const hint = h("div.hint#opt-hint");
  const status = h("div.muted#opt-status");
  const table = h("tbody#opt-body");
  const measureBtn = h("button.btn#opt-measure", { type: "button", disabled: true }, "Measure (plan job)");
  const launchBtn = h("button.btn.primary#opt-launch", { type: "button", disabled: true }, "Launch prune job from the measured plan");
  const card = h("div.card.form#optimise-form", h("h2", "Optimise"),
    h("div.plan-controls",
      h("div.field", h("label", { for: "opt-objective" }, "Objective"), objective, h("div.field-error", { "data-error-for": "objective" })),
      h("div.field", h("label", { for: "opt-mode" }, "Goal"), mode),
      h("div.field", h("label", { for: "opt-value" }, "Target or budget"), value, hint,
        h("div.field-error", { "data-error-for": "target" }), h("div.field-error", { "data-error-for": "budget" })),
      h("div.field", h("label.check", { title: "re-solve with a scaled budget until the measured drop meets it" }, correct, " Correct to the budget"),
        h("label.check", { title: "improve the plan by measuring exchanges between layers that keep the target (on the sweep's data)" }, search, " Search by measurement"))),
    h("div.form-error", { hidden: true, role: "alert" }),
    h("div.form-actions", h("button.btn#opt-plan", { type: "button", onclick: () => plan() }, "Optimise"), measureBtn, launchBtn),
    status,
    h("div.table-scroll", h("table.table.compact#opt-table", h("thead", h("tr", h("th", "method"), h("th", "overall sparsity"),
      h("th", "predicted drop"), h("th", "measured drop"), h("th", "MACs left"), h("th", "optimality gap"))), table)));
  let planJob = null;

  function goal() {
    const s = settings();
    const b = { sensitivity_job: id, objective: objective.value, metric: s.metric, epochs: s.epochs };
    if (!s.known) b.higher_is_better = s.higher;
    b[mode.value] = Number(value.value);
    return b;
  }
  function syncMode() {
    value.dataset.field = mode.value;
    hint.textContent = mode.value === "target" ? "fraction of the objective to remove, 0 to 1" : "summed per-layer drop allowed";
    correct.disabled = mode.value !== "budget";
    if (correct.disabled) correct.checked = false;
    search.disabled = mode.value !== "target";
    if (search.disabled) search.checked = false;
  }
  function rows(entries) {
    table.innerHTML = entries.map(([name, r]) => (r.error ? `<tr data-method="${esc(name)}"><td>${esc(name)}</td><td colspan="5" class="muted">no plan: ${esc(r.error)}</td></tr>`
      : `<tr data-method="${esc(name)}"><td>${esc(name)}${name === "optimal" ? " ★" : ""}</td><td class="num">${pct(r.overall_sparsity)}</td>` +
        `<td class="num" data-col="predicted">${num(r.predicted_drop)}</td><td class="num" data-col="measured">${num(r.measured_drop)}</td>` +
        `<td class="num">${r.measured && r.measured.macs_ratio ? pct(r.measured.macs_ratio) : pct(r.macs_ratio)}</td><td class="num">${num(r.gap, 4)}</td></tr>`)).join("");
  }
  async function plan() {
    clearErrors(card);
    try {
      const r = await api("plans", { method: "POST", body: goal() });
      rows([["optimal", r.plan], ...Object.entries(r.baselines || {})]);
      yamlBox.textContent = r.yaml;
      status.textContent = "Predicted from the sweep's points: measure to see each plan pruned as a whole.";
      measureBtn.disabled = false;
      launchBtn.disabled = true;
    } catch (err) { showErrors(card, err); }
  }
  measureBtn.addEventListener("click", async () => {
    clearErrors(card);
    measureBtn.disabled = true;
    try {
      const created = await api("plans/measure", { method: "POST", body: { ...goal(), correct: correct.checked, search: search.checked } });
      status.innerHTML = `Measuring in plan job <a href="#/jobs/${created.id}">#${created.id}</a>…`;
      let j = created;
      while (!["succeeded", "failed", "cancelled"].includes(j.status)) {
        await new Promise((r) => setTimeout(r, 500));
        j = await api(`jobs/${created.id}`);
      }
      if (j.status !== "succeeded") throw new Error(`plan job ${j.id} ${j.status}: ${j.error || ""}`);
      planJob = j;
      rows([["optimal", j.result.plan], ...Object.entries(j.result.baselines || {})]);
      yamlBox.textContent = j.result.yaml;
      const met = j.result.plan.met;
      status.innerHTML = `Measured by plan job <a href="#/jobs/${j.id}">#${j.id}</a>` +
        (met === null || met === undefined ? "" : met ? " · within the budget" : " · over the budget") +
        (j.result.plan.rounds && j.result.plan.rounds.length ? ` · ${j.result.plan.rounds.length} round(s)` : "");
      launchBtn.disabled = false;
    } catch (err) { showErrors(card, err); } finally { measureBtn.disabled = false; }
  });
  launchBtn.addEventListener("click", async () => {
    if (!planJob) return;
    clearErrors(card);
    const s = settings();
    const b = { sensitivity_job: id, plan_job: planJob.id, thin: s.thin }; // the plan job's epochs: its schedule's
    const lr = Number(s.lr);
    if (s.lr.trim()) b.lr = Number.isFinite(lr) ? lr : s.lr;
    if (s.register) b.register_as = s.register;
    try {
      const created = await api("plans/launch", { method: "POST", body: b });
      toast(`Prune job ${created.id} launched`);
      location.hash = `#/jobs/${created.id}`;
    } catch (err) { showErrors(card, err); }
  });
  mode.addEventListener("change", syncMode);
  syncMode();
  return card;
}
