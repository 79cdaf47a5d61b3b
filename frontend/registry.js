// Models and datasets registries (with upload / registration) and experiments.
import { clearErrors, parseOptions, showErrors } from "./newjob.js";
import { api, fmtInt, fmtSi, fmtTime, h, toast, withToken } from "./util.js";

function field(label, name, control) {
  control.dataset.field = name;
  control.name = name;
  return h("div.field", h("label", label, control), h("div.field-error", { "data-error-for": name }));
}

export async function registryPage(view, tab) {
  const safe = (p) => api(p).catch(() => []);
  const [models, datasets, experiments, archs] = await Promise.all([safe("models"), safe("datasets"), safe("experiments"), api("architectures").catch(() => null)]);
  const architectures = archs ? [...archs.prunescope, ...archs.torchvision] : [];  // the server's catalogue only
  const kinds = archs ? archs.datasets : ["digits", "synthetic", "cifar10", "mnist", "imagefolder"];

  const tabs = h("div.tabs", [["models", "Models"], ["datasets", "Datasets"]].map(([k, label]) =>
    h("a.tab", { href: `#/${k}`, class: k === tab ? "active" : "" }, label)));
  view.append(h("div.page-head", h("h1", "Registry")), tabs);

  if (tab === "models") {
    const upForm = h("form.card.form.inline-form#model-upload", { novalidate: true },
      h("h2", "Upload a checkpoint"),
      h("div.row", field("Name", "name", h("input", { type: "text", placeholder: "my-model" })),
        field("Architecture", "architecture", h("select", {}, architectures.map((a) => h("option", { value: a }, a)))),
        field("Checkpoint (.pt)", "checkpoint", h("input", { type: "file", accept: ".pt,.pth,.ckpt" })),
        h("button.btn.primary", { type: "submit" }, "Upload")),
      h("div.form-error", { hidden: true, role: "alert" }),
      h("p.hint", "Checkpoints are checked without unpickling: a file that carries code is refused."));
    upForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(upForm);
      const fd = new FormData(upForm);
      if (!upForm.querySelector('[name="checkpoint"]').files.length) fd.delete("checkpoint");
      try {
        const m = await api("models", { method: "POST", body: fd });
        toast(`Model ${m.name} registered`);
        location.reload();
      } catch (err) { showErrors(upForm, err); }
    });
    view.append(
      h("div.card.flush", h("table.table#models-table",
        h("thead", h("tr", ["name", "architecture", "parameters", "MACs", "metrics", "validation", "from job", "created", ""].map((c) => h("th", c)))),
        h("tbody", models.length ? models.map((m) => h("tr",
          h("td.mono", m.name), h("td", m.architecture), h("td.num", fmtInt(m.parameters)), h("td.num", fmtSi(m.macs)),
          h("td.muted", Object.entries(m.metrics || {}).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${v.toFixed(2)}`).join(" · ") || "–"),
          h("td", h("span.badge", { "data-status": m.validation === "valid" ? "succeeded" : m.validation === "pending" ? "queued" : "failed" }, m.validation)),
          h("td", m.source_job_id ? h("a", { href: `#/jobs/${m.source_job_id}` }, `#${m.source_job_id}`) : "–"),
          h("td.nowrap", fmtTime(m.created_at)),
          h("td.nowrap", h("a.btn.small", { href: `#/new?model=${encodeURIComponent(m.name)}` }, "Analyse"),
            m.artifact_id ? h("a.btn.small", { href: withToken(`/api/v1/artifacts/${m.artifact_id}/download`), title: "download the checkpoint" }, "⇩") : null)))
          : h("tr", h("td.empty", { colspan: 9 }, "No registered model yet: upload one, or train with “register as”."))))),
      upForm);
  } else {
    const dsForm = h("form.card.form.inline-form#dataset-register", { novalidate: true },
      h("h2", "Register a dataset"),
      h("div.row", field("Name", "name", h("input", { type: "text", placeholder: "my-cifar" })),
        field("Kind", "kind", h("select", {}, kinds.map((k) => h("option", { value: k }, k)))),
        field("Root", "root", h("input", { type: "text", placeholder: "path under a dataset root" })),
        field("Options", "options", h("input", { type: "text", placeholder: "n=1000, seed=0" })),
        h("button.btn.primary", { type: "submit" }, "Register")),
      h("div.form-error", { hidden: true, role: "alert" }));
    dsForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(dsForm);
      const v = (n) => dsForm.querySelector(`[name="${n}"]`).value.trim();
      const body = { name: v("name"), kind: v("kind"), options: parseOptions(v("options")) };
      if (v("root")) body.root = v("root");
      try {
        await api("datasets", { method: "POST", body });
        toast(`Dataset ${body.name} registered`);
        location.reload();
      } catch (err) { showErrors(dsForm, err); }
    });
    const expForm = h("form.card.form.inline-form#experiment-create", { novalidate: true },
      h("h2", "Experiments"),
      h("table.table.compact#experiments-table", h("thead", h("tr", h("th", "#"), h("th", "name"), h("th", "tags"), h("th", "jobs"), h("th", "description"))),
        h("tbody", experiments.map((x) => h("tr", h("td", x.id), h("td", h("a", { href: `#/experiments/${x.id}` }, x.name)), h("td", (x.tags || []).join(", ")), h("td.num", x.jobs), h("td.muted", x.description))))),
      h("div.row", field("Name", "name", h("input", { type: "text" })), field("Tags", "tags", h("input", { type: "text", placeholder: "comma separated" })),
        field("Description", "description", h("input", { type: "text" })), h("button.btn", { type: "submit" }, "Create experiment")),
      h("div.form-error", { hidden: true, role: "alert" }));
    expForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(expForm);
      const v = (n) => expForm.querySelector(`[name="${n}"]`).value.trim();
      try {
        await api("experiments", { method: "POST", body: { name: v("name"), description: v("description"), tags: v("tags").split(",").map((s) => s.trim()).filter(Boolean) } });
        location.reload();
      } catch (err) { showErrors(expForm, err); }
    });
    view.append(
      h("div.card.flush", h("table.table#datasets-table",
        h("thead", h("tr", ["name", "kind", "root", "options", ""].map((c) => h("th", c)))),
        h("tbody", datasets.map((d) => h("tr", h("td.mono", d.name), h("td", d.kind), h("td.mono.muted", d.root || "–"),
          h("td.muted", Object.entries(d.options || {}).map(([k, x]) => `${k}=${x}`).join(", ") || "–"),
          h("td", d.builtin ? h("span.badge", "built in") : "")))))),
      dsForm, expForm);
  }
}
