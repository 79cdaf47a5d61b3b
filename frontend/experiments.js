// Experiments: every experiment with its tags and job counts; one opened (#/experiments/<id>) shows its
// jobs grouped by kind, each group compared side by side (the spec fields that differ between its jobs,
// the key numbers), with "Compare selected" for its sensitivity jobs. REST: /experiments, /jobs?experiment=.
import { clearErrors, showErrors } from "./newjob.js";
import { api, fmtNum, fmtTime, h, statusBadge, toast } from "./util.js";

const KIND_ORDER = ["sensitivity", "plan", "prune", "train"];
const MAX_JOBS = 1000; // GET /jobs's largest page
/** Spec fields never compared as columns: long texts shown elsewhere (the schedule on the jobs page). */
const NOT_COMPARED = new Set(["schedule"]);

const show = (v) => (v === undefined || v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
const pct = (v) => (v === null || v === undefined ? "–" : `${fmtNum(v, 2)} %`);

/** The spec fields whose values are not the same in every job of `jobs` (what tells them apart). */
export function differingFields(jobs) {
  const keys = new Set(jobs.flatMap((j) => Object.keys(j.spec || {})));
  return [...keys].filter((k) => !NOT_COMPARED.has(k) && new Set(jobs.map((j) => show((j.spec || {})[k]))).size > 1).sort();
}

function groupTable(kind, jobs) {
  const fields = differingFields(jobs);
  const selected = new Set();
  const compareBtn = kind === "sensitivity" ? h("button.btn.small", { disabled: true, "data-action": "compare", onclick: () => {
    location.hash = `#/compare?jobs=${[...selected].sort((a, b) => a - b).join(",")}`;
  } }, "Compare selected") : null;
  const numbers = kind === "sensitivity" ? ["baseline top1"] : kind === "prune" ? ["baseline top1", "final top1", "final sparsity"] : ["final top1"];
  const cells = (n) => {
    const all = { "baseline top1": pct(n.baseline_top1), "final top1": pct(n.final_top1),
      "final sparsity": n.final_sparsity === null || n.final_sparsity === undefined ? "–" : `${fmtNum(100 * n.final_sparsity, 1)} %` };
    return numbers.map((k) => h("td.num", all[k]));
  };
  const best = kind === "prune" || kind === "train"
    ? Math.max(...jobs.map((j) => (j.numbers || {}).final_top1 ?? -Infinity)) : null;
  const rows = jobs.map((j) => {
    const n = j.numbers || {};
    const check = kind === "sensitivity" && j.status === "succeeded" ? h("input", { type: "checkbox", title: "select to compare", onchange: (e) => {
      if (e.target.checked) selected.add(j.id); else selected.delete(j.id);
      compareBtn.disabled = selected.size < 2;
    } }) : "";
    return h("tr", { "data-job": j.id, class: best !== null && n.final_top1 === best && Number.isFinite(best) ? "best" : "" },
      h("td", check), h("td", h("a", { href: `#/jobs/${j.id}` }, `#${j.id}`)),
      h("td", (j.result || {}).name || "–"), h("td.status", statusBadge(j.status)),
      fields.map((f) => h("td.mono", show((j.spec || {})[f]))), cells(n), h("td.nowrap.muted", fmtTime(j.created_at)));
  });
  return h("div.card.flush.scroll-x", { "data-kind-group": kind },
    h("div.card-head", { style: "padding: 12px 16px 0" }, h("h2", `${kind} · ${jobs.length} job${jobs.length === 1 ? "" : "s"}`),
      h("div.tools", fields.length ? h("span.muted", `differ in: ${fields.join(", ")}`) : h("span.muted", "same spec"), compareBtn)),
    h("table.table.compact.exp-compare",
      h("thead", h("tr", h("th", ""), h("th", "#"), h("th", "name"), h("th", "status"), fields.map((f) => h("th", f)),
        numbers.map((k) => h("th.num", k)), h("th", "created"))),
      h("tbody", rows)));
}

export async function experimentsPage(view, openId = null) {
  const experiments = await api("experiments");
  const head = h("div.page-head", h("h1", "Experiments"), h("div.actions", h("a.btn", { href: "#/jobs" }, "All jobs")));
  const grid = h("div.exp-grid#experiments-grid", experiments.length ? experiments.map((x) => h("a.card.exp-card", {
    href: `#/experiments/${x.id}`, "data-experiment": x.id, class: x.id === openId ? "active" : "",
  }, h("h2", x.name), x.description ? h("div.muted", x.description) : null,
  h("div.tags", (x.tags || []).map((t) => h("span.tag", t))),
  h("div.exp-counts", `${x.jobs} job${x.jobs === 1 ? "" : "s"}`, ` · created ${fmtTime(x.created_at)}`)))
    : h("div.card.muted", "No experiment yet: create one below and pick it in the new-job form."));

  const form = h("form.card.form.inline-form#experiment-new", { novalidate: true },
    h("h2", "New experiment"),
    h("div.row",
      h("div.field", h("label", "Name", h("input", { type: "text", name: "name", "data-field": "name" })), h("div.field-error", { "data-error-for": "name" })),
      h("div.field", h("label", "Tags", h("input", { type: "text", name: "tags", "data-field": "tags", placeholder: "comma separated" })), h("div.field-error", { "data-error-for": "tags" })),
      h("div.field", h("label", "Description", h("input", { type: "text", name: "description", "data-field": "description" })), h("div.field-error", { "data-error-for": "description" })),
      h("button.btn", { type: "submit" }, "Create")),
    h("div.form-error", { hidden: true, role: "alert" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const v = (n) => form.querySelector(`[name="${n}"]`).value.trim();
    try {
      const x = await api("experiments", { method: "POST", body: { name: v("name"), description: v("description"), tags: v("tags").split(",").map((s) => s.trim()).filter(Boolean) } });
      toast(`Experiment ${x.name} created`);
      location.hash = `#/experiments/${x.id}`;
    } catch (err) { showErrors(form, err); }
  });

  view.append(head, grid);
  if (openId !== null) {
    const exp = experiments.find((x) => x.id === openId);
    if (!exp) {
      view.append(h("div.card.error", h("h2", "Not found"), h("p", `Experiment ${openId} does not exist. `, h("a", { href: "#/experiments" }, "All experiments"))));
    } else {
      const page = await api(`jobs?experiment=${openId}&limit=${MAX_JOBS}`);
      const byKind = new Map();
      for (const j of page.items) byKind.set(j.kind, [...(byKind.get(j.kind) || []), j]);
      const kinds = [...byKind.keys()].sort((a, b) => KIND_ORDER.indexOf(a) - KIND_ORDER.indexOf(b));
      view.append(h("section#experiment-detail", { "data-experiment": openId },
        h("div.card-head", h("h2", `${exp.name}: ${page.total} job${page.total === 1 ? "" : "s"}`),
          h("div.tools", h("a.btn.small", { href: `#/jobs?experiment=${openId}` }, "In the jobs table"),
            h("a.btn.small.primary", { href: `#/new?experiment=${openId}` }, "+ New job"))),
        page.total > page.items.length ? h("p.muted", `showing the newest ${page.items.length}`) : null,
        kinds.length ? kinds.map((k) => groupTable(k, byKind.get(k))) : h("div.card.muted", "No job in this experiment yet.")));
    }
  }
  view.append(form);
}
