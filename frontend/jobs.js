// Jobs table: live progress (SSE for active jobs, polling for the list), filters, cancel/delete, compare.
import {
  ACTIVE, api, fmtDuration, fmtTime, h, hashQuery, onLeave, progressBar, specDataset, specModel,
  statusBadge, toast, updateProgressBar, withToken,
} from "./util.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const KINDS = ["sensitivity", "prune", "train"];
const MAX_STREAMS = 3; // browsers allow ~6 connections per host: leave room for fetches

export async function jobsPage(view) {
  const q = hashQuery();
  const filters = { status: q.get("status") || "", kind: q.get("kind") || "", experiment: q.get("experiment") || "" };
  const selected = new Set();
  const streams = new Map(); // job id -> EventSource
  const rows = new Map(); // job id -> {tr, job}
  let experiments = [];
  try { experiments = await api("experiments"); } catch { /* optional */ }

  const select = (name, values, labels) => h(`select#filter-${name}`, {
    onchange: (e) => { filters[name] = e.target.value; syncHash(); refresh(); },
  }, h("option", { value: "" }, `all ${name === "status" ? "statuses" : name + "s"}`),
  values.map((v, i) => h("option", { value: String(v), selected: String(v) === filters[name] }, labels ? labels[i] : v)));

  const compareBtn = h("button.btn#compare-selected", { disabled: true, onclick: () => {
    location.hash = `#/compare?jobs=${[...selected].sort((a, b) => a - b).join(",")}`;
  } }, "Compare selected");
  const count = h("span.muted#jobs-count");
  const tbody = h("tbody#jobs-body");
  view.append(
    h("div.page-head", h("h1", "Jobs"), h("div.actions", compareBtn, h("a.btn.primary", { href: "#/new" }, "+ New job"))),
    h("div.toolbar", select("experiment", experiments.map((e) => e.id), experiments.map((e) => e.name)),
      select("status", STATUSES), select("kind", KINDS), count),
    h("div.card.flush", h("table.table#jobs-table",
      h("thead", h("tr", h("th", ""), h("th", "#"), h("th", "Kind"), h("th", "Model"), h("th", "Dataset"),
        h("th", "Status"), h("th.wide", "Progress"), h("th", "Started"), h("th", "Duration"), h("th", ""))),
      tbody)),
  );

  function syncHash() {
    const p = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `#/jobs${p.toString() ? "?" + p : ""}`);
  }

  function actions(job) {
    const out = [];
    if (ACTIVE.has(job.status)) {
      out.push(h("button.btn.small", { "data-action": "cancel", onclick: async () => {
        try { await api(`jobs/${job.id}/cancel`, { method: "POST" }); toast(`Cancel requested for job ${job.id}`); refresh(); } catch (err) { toast(err.message, "error"); }
      } }, "Cancel"));
    } else {
      out.push(h("button.btn.small.danger", { "data-action": "delete", onclick: async () => {
        if (!confirm(`Delete job ${job.id} with its points and artifacts?`)) return;
        try { await api(`jobs/${job.id}`, { method: "DELETE" }); toast(`Job ${job.id} deleted`); refresh(); } catch (err) { toast(err.message, "error"); }
      } }, "Delete"));
    }
    if (job.kind === "sensitivity" && job.status === "succeeded") out.push(h("a.btn.small", { href: `#/plan/${job.id}` }, "Plan"));
    return out;
  }

  function renderRow(job) {
    const check = job.kind === "sensitivity"
      ? h("input", { type: "checkbox", title: "select to compare", checked: selected.has(job.id), onchange: (e) => {
        if (e.target.checked) selected.add(job.id); else selected.delete(job.id);
        compareBtn.disabled = selected.size < 2;
      } }) : "";
    return h("tr", { "data-job": job.id, "data-status": job.status },
      h("td", check), h("td", h("a", { href: `#/jobs/${job.id}` }, job.id)), h("td", job.kind),
      h("td", specModel(job)), h("td", specDataset(job)), h("td.status", statusBadge(job.status)),
      h("td", progressBar(job)), h("td.nowrap", fmtTime(job.started_at || job.created_at)),
      h("td.nowrap.duration", fmtDuration(job.started_at, job.finished_at)), h("td.nowrap", actions(job)));
  }

  function render(items, total) {
    const keep = new Set(items.map((j) => j.id));
    for (const id of selected) if (!keep.has(id)) selected.delete(id);
    compareBtn.disabled = selected.size < 2;
    rows.clear();
    tbody.replaceChildren(...items.map((job) => {
      const tr = renderRow(job);
      rows.set(job.id, { tr, job });
      return tr;
    }));
    if (!items.length) tbody.append(h("tr", h("td.empty", { colspan: 10 }, "No jobs yet. ", h("a", { href: "#/new" }, "Start one."))));
    count.textContent = `${total} job${total === 1 ? "" : "s"}`;
    streamActive(items);
  }

  function streamActive(items) {
    const active = items.filter((j) => ACTIVE.has(j.status)).slice(0, MAX_STREAMS).map((j) => j.id);
    for (const [id, es] of streams) if (!active.includes(id)) { es.close(); streams.delete(id); }
    for (const id of active) {
      if (streams.has(id)) continue;
      const es = new EventSource(withToken(`/api/v1/jobs/${id}/events`));
      es.addEventListener("progress", (e) => {
        const s = JSON.parse(e.data);
        const row = rows.get(id);
        if (!row) return;
        Object.assign(row.job, { status: s.status, progress_done: s.done, progress_total: s.total });
        updateProgressBar(row.tr.querySelector(".progress"), row.job);
        if (row.tr.dataset.status !== s.status) refresh();
      });
      es.addEventListener("end", () => { es.close(); streams.delete(id); refresh(); });
      es.onerror = () => { es.close(); streams.delete(id); };
      streams.set(id, es);
    }
  }

  let timer = null;
  let inflight = false;
  async function refresh() {
    if (inflight) return;
    inflight = true;
    clearTimeout(timer);
    try {
      const p = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
      p.set("limit", "200");
      const page = await api(`jobs?${p}`);
      render(page.items, page.total);
      const anyActive = page.items.some((j) => ACTIVE.has(j.status));
      timer = setTimeout(refresh, anyActive ? 1500 : 5000);
    } catch (err) {
      toast(err.message, "error");
      timer = setTimeout(refresh, 5000);
    } finally {
      inflight = false;
    }
  }
  onLeave(() => { clearTimeout(timer); for (const es of streams.values()) es.close(); streams.clear(); });
  await refresh();
}
