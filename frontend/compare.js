// Compare: overlay the curves of several sensitivity jobs (#/compare?jobs=1,2) and tabulate the
// metric side by side (GET /compare).
import { curvesOf, curveTraces, curveLayout, metricButtons, metricsOf, pickMetric } from "./sensitivity.js";
import { api, esc, fmtNum, h, hashQuery, loadPlotly, PALETTE, PLOT_CONFIG } from "./util.js";

const DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"];

export async function comparePage(view) {
  const wanted = (hashQuery().get("jobs") || "").split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);
  const state = { metric: hashQuery().get("metric") || "top1", filter: "", colorBy: "parameter" };
  const list = await api("jobs?kind=sensitivity&limit=200");
  const jobs = list.items;
  // a link may name jobs that are gone or are not sensitivity jobs: say so, compare the others
  const known = new Set(jobs.map((j) => j.id));
  const missing = [];
  for (const id of wanted.filter((i) => !known.has(i))) {
    try {
      const j = await api(`jobs/${id}`);
      if (j.kind === "sensitivity") { jobs.push(j); known.add(id); } else missing.push(`#${id} is a ${j.kind} job`);
    } catch (err) {
      missing.push(err.status === 404 ? `#${id} does not exist` : `#${id}: ${err.message}`);
    }
  }
  const chosen = new Set(wanted.filter((i) => known.has(i)));

  const picker = h("div.job-picker#compare-picker", jobs.map((j) => h("label.check", { title: `${j.spec.model} on ${j.spec.dataset}` },
    h("input", { type: "checkbox", value: String(j.id), checked: chosen.has(j.id), onchange: (e) => {
      if (e.target.checked) chosen.add(j.id); else chosen.delete(j.id);
      sync();
    } }), ` #${j.id} ${j.spec.model} · ${j.spec.group || "element"} · ${j.status}`)));
  if (!jobs.length) picker.append(h("p.muted", "No sensitivity jobs yet."));
  // one button per metric the chosen jobs' points have (rebuilt as jobs are picked)
  const metricSwitch = h("div.segmented#compare-metric");
  const pickM = (m) => { state.metric = m; sync(); };
  const filterIn = h("input#compare-filter", { type: "search", placeholder: "filter parameters (substring)", oninput: (e) => { state.filter = e.target.value; draw(); drawTable([...chosen].sort((a, b) => a - b)); } });
  const colorSel = h("select#compare-color", { onchange: (e) => { state.colorBy = e.target.value; draw(); } },
    h("option", { value: "parameter" }, "color by parameter, dash by job"), h("option", { value: "job" }, "color by job"));
  const chart = h("div.chart.tall#compare-chart");
  const table = h("table.table.compact#compare-table");
  const note = h("p.muted#compare-note");

  view.append(
    h("div.page-head", h("h1", "Compare sensitivity jobs")),
    missing.length ? h("div.card.warn#compare-missing", `Not compared: ${missing.join("; ")}.`) : null,
    h("div.card", h("h2", "Jobs"), picker),
    h("div.card", h("div.card-head", h("h2", "Curves"), h("div.tools", metricSwitch, filterIn, colorSel)), note, chart),
    h("div.card", h("h2", "Side by side"), h("div.table-scroll.tall", table)),
  );

  const cache = new Map(); // job id -> points
  async function pointsOf(id) {
    if (!cache.has(id)) cache.set(id, await api(`jobs/${id}/points`));
    return cache.get(id);
  }

  async function sync() {
    const ids = [...chosen].sort((a, b) => a - b);
    const names = metricsOf((await Promise.all(ids.map(pointsOf))).flat());
    state.metric = pickMetric(names, state.metric); // jobs without top1 (language models): their first metric
    metricButtons(metricSwitch, names, state.metric, pickM);
    history.replaceState(null, "", `#/compare?jobs=${ids.join(",")}${state.metric !== "top1" ? `&metric=${encodeURIComponent(state.metric)}` : ""}`);
    await draw();
    await drawTable(ids);
  }

  async function draw() {
    const Plotly = await loadPlotly();
    const ids = [...chosen].sort((a, b) => a - b);
    if (ids.length < 1) {
      note.textContent = "Pick two or more jobs above.";
      Plotly.purge(chart);
      return;
    }
    note.textContent = ids.length < 2 ? "Pick at least one more job to compare." : "";
    const paramColor = new Map();
    const traces = [];
    for (const [k, id] of ids.entries()) {
      const curves = curvesOf(await pointsOf(id), state.metric);
      const f = state.filter.trim();
      if (f) for (const name of [...curves.keys()]) if (!name.includes(f)) curves.delete(name);
      for (const name of curves.keys()) if (!paramColor.has(name)) paramColor.set(name, PALETTE[paramColor.size % PALETTE.length]);
      const colorOf = state.colorBy === "job" ? () => PALETTE[k % PALETTE.length] : (name) => paramColor.get(name);
      const t = curveTraces(curves, state.metric, { bands: false, prefix: `#${id} `, colorOf, dash: state.colorBy === "job" ? "solid" : DASHES[k % DASHES.length] });
      for (const tr of t) tr.meta = `curve:${id}`;
      traces.push(...t);
    }
    await Plotly.react(chart, traces, curveLayout(state.metric, { n: traces.length }), PLOT_CONFIG);
  }

  async function drawTable(ids) {
    if (ids.length < 2) { table.innerHTML = ""; return; }
    try {
      const r = await api(`compare?${ids.map((i) => `jobs=${i}`).join("&")}&metric=${encodeURIComponent(state.metric)}`);
      const head = `<thead><tr><th>parameter</th><th>sparsity</th>${ids.map((i) => `<th>#${i} ${esc(state.metric)}</th>`).join("")}<th>spread</th></tr></thead>`;
      const f = state.filter.trim();
      const rows = r.rows.filter((row) => !f || row.parameter.includes(f)).map((row) => {
        const vals = ids.map((i) => row.values[String(i)]);
        const present = vals.filter((v) => v !== null && v !== undefined);
        const spread = present.length > 1 ? Math.max(...present) - Math.min(...present) : null;
        return `<tr><td class="mono">${esc(row.parameter)}</td><td class="num">${fmtNum(100 * row.sparsity, 1)}%</td>${vals.map((v) => `<td class="num">${fmtNum(v, 3)}</td>`).join("")}<td class="num muted">${fmtNum(spread, 3)}</td></tr>`;
      });
      table.innerHTML = `${head}<tbody>${rows.join("")}</tbody>`;
    } catch (err) {
      table.innerHTML = `<tbody><tr><td class="bad">${esc(err.message)}</td></tr></tbody>`;
    }
  }

  await sync();
}
