// Jobs table: live from one server-sent event stream for the whole list (/jobs/events: progress in
// place, a reload when a job appears or changes status), polling only while that stream is down;
// filters, cancel/delete, compare.
import {
  ACTIVE, api, fmtDuration, fmtTime, h, hashQuery, onLeave, progressBar, specDataset, specModel,
  statusBadge, toast, updateProgressBar, withToken,
} from "./util.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const KINDS = ["sensitivity", "prune", "train"];
const FALLBACK_POLL_MS = 3000;
/** Exposed for tests: how the table is being kept live. */
const ps = (window.prunescope = window.prunescope || {});

export async function jobsPage(view) {
  const q = hashQuery();
  const filters = { status: q.get("status") || "", kind: q.get("kind") || "", experiment: q.get("experiment") || "" };
  const selected = new Set();
  const rows = new Map(); // job id -> {tr, job}
  let experiments = [];
  try { experiments = await api("experiments"); } catch { /* optional */ }

  const select = (name, values, labels) => h(`select#filter-${name}`, {
    onchange: (e) => { filters[name] = e.target.value; syncHash(); refresh(); openStream(); },
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
  }

  const query = () => new URLSearchParams(Object.entries(filters).filter(([, v]) => v));

  // One stream for the list. A `job` event with the same status updates its row in place; a new job or
  // a status change reloads the page of jobs (sorting, filters and actions follow the status).
  const live = (ps.jobsStream = { messages: 0, listFetches: 0, polling: false, open: false });
  let es = null;
  let reloadSoon = null;
  const scheduleRefresh = () => {
    clearTimeout(reloadSoon);
    reloadSoon = setTimeout(refresh, 150);
  };
  function onJob(e) {
    live.messages += 1;
    const s = JSON.parse(e.data);
    const row = rows.get(s.id);
    if (!row || row.job.status !== s.status) { scheduleRefresh(); return; }
    Object.assign(row.job, s);
    updateProgressBar(row.tr.querySelector(".progress"), row.job);
  }
  function openStream() {
    if (es) es.close();
    es = new EventSource(withToken(`/api/v1/jobs/events?${query()}`));
    es.addEventListener("job", onJob);
    es.addEventListener("deleted", () => { live.messages += 1; scheduleRefresh(); });
    es.onopen = () => {
      if (live.polling) refresh(); // catch up with what happened while the stream was down
      live.open = true;
      live.polling = false;
      clearTimeout(timer);
    };
    es.onerror = () => {
      // EventSource retries by itself; until it is back, the table is polled
      live.open = false;
      if (!live.polling) { live.polling = true; timer = setTimeout(refresh, FALLBACK_POLL_MS); }
    };
  }

  let timer = null;
  let inflight = false;
  async function refresh() {
    if (inflight) { scheduleRefresh(); return; }
    inflight = true;
    clearTimeout(timer);
    try {
      const p = query();
      p.set("limit", "200");
      live.listFetches += 1;
      const page = await api(`jobs?${p}`);
      render(page.items, page.total);
    } catch (err) {
      toast(err.message, "error");
    } finally {
      inflight = false;
      if (live.polling) timer = setTimeout(refresh, FALLBACK_POLL_MS);
    }
  }
  // durations of running jobs tick locally: no request needed
  const tick = setInterval(() => {
    for (const { tr, job } of rows.values()) {
      if (ACTIVE.has(job.status)) tr.querySelector(".duration").textContent = fmtDuration(job.started_at, job.finished_at);
    }
  }, 1000);
  onLeave(() => { clearTimeout(timer); clearTimeout(reloadSoon); clearInterval(tick); if (es) es.close(); });
  await refresh();
  openStream();
}
