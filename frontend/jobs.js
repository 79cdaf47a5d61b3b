// Jobs table: live from one server-sent event stream for the whole list (/jobs/events: progress in
// place, a reload when a job appears or changes status), polling only while that stream is down;
// filters, search, sort and paging done by the server (GET /jobs ?q= &sort= &limit= &offset=, all in
// the URL), names and tags (PATCH /jobs/<id>), key numbers, lineage of a launched plan, cancel/delete, compare.
import {
  ACTIVE, api, fmtDuration, fmtNum, fmtTime, h, hashQuery, onLeave, progressBar, specDataset, specModel,
  statusBadge, toast, updateProgressBar, withToken,
} from "./util.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const KINDS = ["sensitivity", "plan", "prune", "train"]; // api.store.models.JOB_KINDS (tests/service/test_point_metrics.py checks)
const FALLBACK_POLL_MS = 3000;
const PAGE_SIZES = [50, 100, 200, 500];
const SEARCH_DEBOUNCE_MS = 250;
/** Sortable headers: the label and the server's sort key (GET /jobs?sort=, api.store.repo.JOB_SORTS). */
const COLUMNS = [
  ["", null], ["#", "id"], ["Name", "name"], ["Kind", "kind"], ["Model", "model"], ["Dataset", "dataset"],
  ["Status", "status"], ["Progress", null], ["Baseline top1", null], ["Final", null], ["Lineage", null],
  ["Started", "started"], ["Duration", null], ["", null],
];
/** Exposed for tests: how the table is being kept live. */
const ps = (window.prunescope = window.prunescope || {});

export async function jobsPage(view) {
  const q = hashQuery();
  const filters = { status: q.get("status") || "", kind: q.get("kind") || "", experiment: q.get("experiment") || "" };
  const paging = {
    q: q.get("q") || "", sort: q.get("sort") || "-id",
    limit: PAGE_SIZES.includes(Number(q.get("limit"))) ? Number(q.get("limit")) : PAGE_SIZES[0],
    offset: Math.max(0, Number.parseInt(q.get("offset") || "0", 10) || 0),
  };
  const selected = new Set();
  const rows = new Map(); // job id -> {tr, job}
  let experiments = [];
  try { experiments = await api("experiments"); } catch { /* optional */ }

  const select = (name, values, labels) => h(`select#filter-${name}`, {
    onchange: (e) => { filters[name] = e.target.value; paging.offset = 0; syncHash(); refresh(); openStream(); },
  }, h("option", { value: "" }, `all ${name === "status" ? "statuses" : name + "s"}`),
  values.map((v, i) => h("option", { value: String(v), selected: String(v) === filters[name] }, labels ? labels[i] : v)));

  const compareBtn = h("button.btn#compare-selected", { disabled: true, onclick: () => {
    location.hash = `#/compare?jobs=${[...selected].sort((a, b) => a - b).join(",")}`;
  } }, "Compare selected");
  const count = h("span.muted#jobs-count");
  const tbody = h("tbody#jobs-body");
  let searchTimer = null;
  const search = h("input#jobs-search", {
    type: "search", placeholder: "search id, model, dataset, name, tag, experiment…", value: paging.q,
    "aria-label": "search jobs",
    oninput: (e) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { paging.q = e.target.value.trim(); paging.offset = 0; syncHash(); refresh(); }, SEARCH_DEBOUNCE_MS);
    },
  });
  const sizeSel = h("select#jobs-limit", { "aria-label": "jobs per page", onchange: (e) => {
    paging.limit = Number(e.target.value); paging.offset = 0; syncHash(); refresh();
  } }, PAGE_SIZES.map((n) => h("option", { value: String(n), selected: n === paging.limit }, `${n} per page`)));
  const prevBtn = h("button.btn.small#jobs-prev", { onclick: () => { paging.offset = Math.max(0, paging.offset - paging.limit); syncHash(); refresh(); } }, "‹ Prev");
  const nextBtn = h("button.btn.small#jobs-next", { onclick: () => { paging.offset += paging.limit; syncHash(); refresh(); } }, "Next ›");
  const pageInfo = h("span.muted#jobs-range");
  const headRow = h("tr", COLUMNS.map(([label, key]) => (key
    ? h("th.sortable", { "data-sort": key, title: `sort by ${label.toLowerCase()}`, onclick: () => {
      paging.sort = paging.sort === key ? `-${key}` : key; paging.offset = 0; syncHash(); refresh();
    } }, label, h("span.sort-mark"))
    : h("th", label))));
  view.append(
    h("div.page-head", h("h1", "Jobs"), h("div.actions", compareBtn, h("a.btn.primary", { href: "#/new" }, "+ New job"))),
    h("div.toolbar", search, select("experiment", experiments.map((e) => e.id), experiments.map((e) => e.name)),
      select("status", STATUSES), select("kind", KINDS), count),
    h("div.card.flush.scroll-x", h("table.table#jobs-table", h("thead", headRow), tbody)),
    h("div.pager#jobs-pager", prevBtn, pageInfo, nextBtn, sizeSel),
  );

  function syncHash() {
    const p = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    if (paging.q) p.set("q", paging.q);
    if (paging.sort !== "-id") p.set("sort", paging.sort);
    if (paging.limit !== PAGE_SIZES[0]) p.set("limit", String(paging.limit));
    if (paging.offset) p.set("offset", String(paging.offset));
    history.replaceState(null, "", `#/jobs${p.toString() ? "?" + p : ""}`);
  }

  function syncSortMarks() {
    for (const th of headRow.querySelectorAll("th[data-sort]")) {
      const key = th.dataset.sort;
      const dir = paging.sort === key ? "ascending" : paging.sort === `-${key}` ? "descending" : "none";
      th.setAttribute("aria-sort", dir);
      th.querySelector(".sort-mark").textContent = dir === "ascending" ? " ▲" : dir === "descending" ? " ▼" : "";
    }
  }

  async function editLabels(job) {
    const r = job.result || {};
    const name = window.prompt(`Name of job ${job.id} (empty: none)`, r.name || "");
    if (name === null) return;
    const tags = window.prompt(`Tags of job ${job.id} (comma separated)`, (r.tags || []).join(", "));
    if (tags === null) return;
    try {
      await api(`jobs/${job.id}`, { method: "PATCH", body: {
        name: name.trim() || null, tags: tags.split(",").map((t) => t.trim()).filter(Boolean),
      } });
      refresh();
    } catch (err) { toast(err.message, "error"); }
  }

  function nameCell(job) {
    const r = job.result || {};
    return h("td.labels", r.name ? h("span.job-name", r.name) : null,
      (r.tags || []).map((t) => h("button.tag", { type: "button", title: `search for ${t}`, onclick: () => {
        search.value = t; paging.q = t; paging.offset = 0; syncHash(); refresh();
      } }, t)),
      h("button.btn.small.ghost", { "data-action": "label", title: "name or tag this job", onclick: () => editLabels(job) }, "✎"));
  }

  /** The key numbers (GET /jobs items' `numbers`): baseline top1, and a prune/train job's end point. */
  function numberCells(job) {
    const n = job.numbers || {};
    const pct = (v) => (v === null || v === undefined ? "–" : `${fmtNum(v, 2)} %`);
    const final = [];
    if (n.final_top1 !== null && n.final_top1 !== undefined) final.push(`top1 ${pct(n.final_top1)}`);
    if (n.final_sparsity !== null && n.final_sparsity !== undefined) final.push(`sparsity ${fmtNum(100 * n.final_sparsity, 1)} %`);
    return [h("td.num.nowrap.baseline", pct(n.baseline_top1)),
      h("td.final", final.length ? final.map((t, i) => [i ? " · " : "", h("span.nowrap", t)]) : "–")];
  }

  /** Where a prune job came from (a launched plan: its sweep and plan) and its schedule. */
  function lineageCell(job) {
    if (job.kind !== "prune") return h("td.lineage", "–");
    const lin = (job.result || {}).lineage;
    const parts = [];
    if (lin && lin.sensitivity_job) {
      const plan = lin.plan || {};
      const goal = plan.target_sparsity ? `sparsity ${fmtNum(100 * plan.target_sparsity, 0)} %` : `${plan.metric || "top1"} ≤ ${plan.max_drop}`;
      parts.push(h("a.lineage-sweep", { href: `#/jobs/${lin.sensitivity_job}`, title: "the sensitivity job it was planned from" }, `sweep #${lin.sensitivity_job}`),
        " → ", h("a.lineage-plan", { href: `#/plan/${lin.sensitivity_job}`, title: "the plan page of that sweep" }, `plan (${goal})`));
    }
    if (job.spec && job.spec.schedule) {
      parts.push(h("details.schedule", h("summary", "schedule"), h("pre.code", job.spec.schedule)));
    }
    return h("td.lineage", parts.length ? parts : "–");
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
      h("td", check), h("td", h("a", { href: `#/jobs/${job.id}` }, job.id)), nameCell(job), h("td", job.kind),
      h("td.nowrap", specModel(job)), h("td", specDataset(job)), h("td.status", statusBadge(job.status)),
      h("td.progress-cell", progressBar(job)), numberCells(job), lineageCell(job), h("td.nowrap", fmtTime(job.started_at || job.created_at)),
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
    if (!items.length) {
      tbody.append(h("tr", h("td.empty", { colspan: COLUMNS.length }, paging.q || Object.values(filters).some(Boolean)
        ? "No job matches the search and filters." : ["No jobs yet. ", h("a", { href: "#/new" }, "Start one.")])));
    }
    count.textContent = `${total} job${total === 1 ? "" : "s"}`;
    const first = items.length ? paging.offset + 1 : 0;
    pageInfo.textContent = `${first}–${paging.offset + items.length} of ${total}`;
    prevBtn.disabled = paging.offset === 0;
    nextBtn.disabled = paging.offset + items.length >= total;
    syncSortMarks();
  }

  const query = () => new URLSearchParams(Object.entries(filters).filter(([, v]) => v));

  // One stream for the list. A `job` event with the same status updates its row in place; a new job or
  // a status change reloads the page of jobs (sorting, filters and actions follow the status).
  const live = (ps.jobsStream = { messages: 0, listFetches: 0, polling: false, open: false });
  let es = null;
  let reloadSoon = null;
  const offPage = new Map(); // job id -> last status the stream reported, for jobs not on this page
  let newestSeen = 0; // the highest job id any list answer has shown (the total's newest)
  const scheduleRefresh = () => {
    clearTimeout(reloadSoon);
    reloadSoon = setTimeout(refresh, 150);
  };
  function onJob(e) {
    live.messages += 1;
    const s = JSON.parse(e.data);
    const row = rows.get(s.id);
    if (!row) {
      // a job not on this page: reload when it is new or changed status (it may enter the page), not for
      // every progress tick of a job on another page
      const before = offPage.get(s.id);
      offPage.set(s.id, s.status);
      if (before === undefined ? s.id > newestSeen : before !== s.status) scheduleRefresh();
      return;
    }
    if (row.job.status !== s.status) { scheduleRefresh(); return; }
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
      if (paging.q) p.set("q", paging.q);
      p.set("sort", paging.sort);
      p.set("limit", String(paging.limit));
      p.set("offset", String(paging.offset));
      live.listFetches += 1;
      let page = await api(`jobs?${p}`);
      if (!page.items.length && paging.offset > 0 && page.total > 0) { // past the end (jobs deleted): last page
        paging.offset = Math.floor((page.total - 1) / paging.limit) * paging.limit;
        p.set("offset", String(paging.offset));
        syncHash();
        page = await api(`jobs?${p}`);
      }
      for (const j of page.items) newestSeen = Math.max(newestSeen, j.id);
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
  onLeave(() => { clearTimeout(timer); clearTimeout(reloadSoon); clearTimeout(searchTimer); clearInterval(tick); if (es) es.close(); });
  await refresh();
  openStream();
}
