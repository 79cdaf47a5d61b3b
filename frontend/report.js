// A self-contained HTML report of a sensitivity job, built in the browser: plotly.js inlined (read from
// the service's /static/plotly.min.js), the curves of every metric the points have with a metric menu, the points
// table. It opens offline. Used when the service stores no HTML report artifact of its own.
import { curvesOf, curveLayout, curveTraces, metricsOf, pointsTableHtml } from "./sensitivity.js";
import { esc } from "./util.js";

export async function buildReport(job, points) {
  const plotly = await (await fetch("/static/plotly.min.js")).text();
  const curves = curvesOf(points);
  const metrics = metricsOf(points); // top1/top5/loss, or a language model's loss/perplexity, custom ones
  const traces = [];
  const visible = [];
  for (const [k, metric] of metrics.entries()) {
    const t = curveTraces(curvesOf(points, metric), metric, { bands: curves.size <= 12 });
    for (const tr of t) tr.visible = k === 0;
    traces.push(...t);
    visible.push(t.length);
  }
  const buttons = metrics.map((metric, k) => {
    const mask = [];
    metrics.forEach((_, j) => { for (let i = 0; i < visible[j]; i += 1) mask.push(j === k); });
    return { label: metric, method: "update", args: [{ visible: mask }, { "yaxis.title.text": curveLayout(metric).yaxis.title.text }] };
  });
  const layout = { ...curveLayout(metrics[0] || "top1", { title: `Sensitivity job #${job.id}: ${job.spec.model} on ${job.spec.dataset} (${job.spec.group})`, n: curves.size }),
    updatemenus: [{ type: "buttons", direction: "right", x: 0, y: 1.12, xanchor: "left", buttons }], height: 560 };
  const safe = (obj) => JSON.stringify(obj).replace(/</g, "\\u003c");
  const structured = (job.spec.group || "element") !== "element";
  return `<!doctype html><html><head><meta charset="utf-8"><title>prunescope sensitivity #${job.id}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;color:#1d2330}table{border-collapse:collapse;font-size:12px}
td,th{padding:3px 8px;border-bottom:1px solid #e3e6ec;text-align:right}td:first-child,th:first-child{text-align:left}
.muted{color:#6b7385}.mono{font-family:monospace}</style>
<script>${plotly.replace(/<\/script/gi, "<\\/script")}</script></head><body>
<h1>Sensitivity analysis — job #${job.id}</h1>
<p class="muted">${esc(job.spec.model)} on ${esc(job.spec.dataset)} · group ${esc(job.spec.group)} · ${points.length} points · exported ${new Date().toISOString()}</p>
<div id="curves"></div>
<h2>Points</h2><table>${pointsTableHtml(points, { structured })}</table>
<script>Plotly.newPlot("curves", ${safe(traces)}, ${safe(layout)}, {displaylogo: false});</script>
</body></html>`;
}
