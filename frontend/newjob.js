// New job form: sensitivity / prune / train. The API validates; its 4xx messages appear beside the field
// they name, and nothing is created on bad input.
import { api, ApiError, h, hashQuery, toast } from "./util.js";

/** Load what the menus need; each part is optional so the form still works with a partial service. */
async function loadChoices() {
  const safe = (p, dflt) => api(p).catch(() => dflt);
  const [models, datasets, experiments, archs, sens, openapi] = await Promise.all([
    safe("models", []), safe("datasets", []), safe("experiments", []), safe("architectures", null),
    safe("jobs?kind=sensitivity&status=succeeded&limit=200", { items: [] }), safe("openapi.json", null),
  ]);
  // the catalogue is the server's (GET /architectures); no copy of it lives here
  const architectures = archs ? [...archs.prunescope, ...archs.torchvision] : [];
  const specs = (openapi && openapi.components && openapi.components.schemas) || {};
  return { models, datasets, experiments, architectures, sensitivity: sens.items || [], specs };
}

/** A spec field as the API declares it (api/shared/specs.py through its OpenAPI schema): default, choices,
 * bounds and description, so the form offers what the API and the CLI offer without a copy of either. */
export function specField(specs, kind, name) {
  const model = specs[{ sensitivity: "SensitivitySpec", prune: "PruneSpec", train: "TrainSpec" }[kind]];
  const prop = model && model.properties && model.properties[name];
  if (!prop) return null;
  const plain = prop.anyOf ? prop.anyOf.find((p) => p.type !== "null") || {} : prop;
  return { default: prop.default, choices: plain.enum || null, description: prop.description || "",
    min: plain.minimum, max: plain.maximum, type: plain.type };
}

/** One labelled form row; `field` is the API's field name for error placement. */
function row(label, field, control, hint) {
  control.dataset.field = field;
  control.name = control.name || field;
  const id = control.id || `f-${field.replace(/[^\w]/g, "-")}`; // a preset id: one field in two sections
  control.id = id;
  return h("div.field", { "data-for": field },
    h("label", { for: id }, label), control,
    hint ? h("div.hint", hint) : null,
    h("div.field-error", { role: "alert", "data-error-for": field }));
}

const input = (attrs) => h("input", { type: "text", autocomplete: "off", ...attrs });
const options = (values, selected) => values.map((v) => (Array.isArray(v)
  ? h("option", { value: v[0], selected: v[0] === selected }, v[1])
  : h("option", { value: v, selected: v === selected }, v)));

/** Numbers go as numbers; anything else goes as typed, so the API's message explains it. */
function numeric(value, { int = false } = {}) {
  const t = value.trim();
  if (t === "") return undefined;
  const n = Number(t);
  if (Number.isFinite(n) && (!int || Number.isInteger(n))) return n;
  return t;
}

/** "n=1000, root=/data" -> {n: 1000, root: "/data"} */
export function parseOptions(text) {
  const out = {};
  for (const part of text.split(/[,\n]/).map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    const key = i < 0 ? part : part.slice(0, i).trim();
    const raw = i < 0 ? "" : part.slice(i + 1).trim();
    let v = raw;
    if (/^-?\d+$/.test(raw)) v = Number(raw);
    else if (/^-?\d*\.\d+(e-?\d+)?$/i.test(raw)) v = Number(raw);
    else if (raw === "true" || raw === "false") v = raw === "true";
    out[key] = v;
  }
  return out;
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
  const general = form.querySelector(".form-error");
  if (general) { general.textContent = ""; general.hidden = true; }
}

/** Put each API error beside the control whose data-field is the longest prefix of the error's field. */
export function showErrors(form, err) {
  const errors = err.errors && err.errors.length ? err.errors : [{ field: "", message: err.detail || err.message }];
  const controls = [...form.querySelectorAll("[data-field]")].filter((c) => !c.closest("[hidden]"));
  const general = [];
  for (const { field, message } of errors) {
    const name = String(field || "").replace(/ \(\w+\)$/, "");
    let best = null;
    for (const c of controls) {
      const f = c.dataset.field;
      if ((name === f || name.startsWith(`${f}.`) || name.startsWith(`${f}[`)) && (!best || f.length > best.dataset.field.length)) best = c;
    }
    if (!best) { // e.g. a model-level check: find a field the message names
      best = controls.find((c) => c.dataset.field.includes(".") && new RegExp(`\\b${c.dataset.field.split(".").pop()}\\b`).test(message)) || null;
    }
    if (best) {
      // the slot of the control's own row: a field shown in two sections (seed) has two slots
      const own = best.closest(".field");
      const selector = `[data-error-for="${CSS.escape(best.dataset.field)}"]`;
      const slot = (own && own.querySelector(selector)) || form.querySelector(selector);
      slot.textContent = slot.textContent ? `${slot.textContent}; ${message}` : message;
      best.classList.add("invalid");
    } else general.push(field ? `${field}: ${message}` : message);
  }
  const box = form.querySelector(".form-error");
  if (box && general.length) { box.textContent = general.join("\n"); box.hidden = false; }
  const first = form.querySelector(".invalid");
  if (first) first.focus();
}

export async function newJobPage(view) {
  const q = hashQuery();
  const choices = await loadChoices();
  let kind = ["sensitivity", "prune", "train"].includes(q.get("kind")) ? q.get("kind") : "sensitivity";

  const validModels = choices.models.filter((m) => m.validation === "valid");
  const modelSel = h("select", {},
    validModels.length ? h("optgroup", { label: "Registered models" }, validModels.map((m) => h("option", { value: m.name }, `${m.name} (${m.architecture})`))) : null,
    h("optgroup", { label: "Architectures (fresh weights)" }, options(choices.architectures, "digits-cnn")));
  const asked = q.get("model");
  if (asked && ![...modelSel.options].some((o) => o.value === asked)) { // kept, so the API says what is wrong
    modelSel.prepend(h("optgroup", { label: "Requested (not known here)" }, h("option", { value: asked }, `${asked} (unknown)`)));
  }
  if (asked) modelSel.value = asked;
  const datasetSel = h("select", {}, options(choices.datasets.length ? choices.datasets.map((d) => [d.name, d.builtin ? d.name : `${d.name} (${d.kind})`]) : ["digits", "synthetic"], "digits"));
  const jobName = input({ placeholder: "e.g. resnet56 baseline sweep" });
  const jobTags = input({ placeholder: "e.g. cifar10, nightly" });
  const expSel = h("select", {}, h("option", { value: "" }, "— none —"), choices.experiments.map((e) => h("option", { value: String(e.id) }, e.name)));
  if (choices.experiments.some((e) => String(e.id) === q.get("experiment"))) expSel.value = q.get("experiment");

  // inline model upload
  const upName = input({ placeholder: "my-model" });
  const upArch = h("select", {}, options(choices.architectures, "digits-cnn"));
  const upFile = h("input", { type: "file", accept: ".pt,.pth,.ckpt" });
  const uploadForm = h("div.subform#upload-model",
    row("Name", "name", upName), row("Architecture", "architecture", upArch), row("Checkpoint", "checkpoint", upFile),
    h("div.form-error", { hidden: true }),
    h("button.btn", { type: "button", onclick: async () => {
      clearErrors(uploadForm);
      const fd = new FormData();
      fd.append("name", upName.value.trim());
      fd.append("architecture", upArch.value);
      if (upFile.files[0]) fd.append("checkpoint", upFile.files[0]);
      try {
        const m = await api("models", { method: "POST", body: fd });
        let group = modelSel.querySelector('optgroup[label="Registered models"]');
        if (!group) { group = h("optgroup", { label: "Registered models" }); modelSel.prepend(group); }
        group.append(h("option", { value: m.name }, `${m.name} (${m.architecture})`));
        modelSel.value = m.name;
        toast(`Model ${m.name} registered`);
      } catch (err) {
        if (err.status === 422 && !upFile.files[0]) err.errors = [{ field: "checkpoint", message: err.detail }];
        showErrors(uploadForm, err);
      }
    } }, "Upload and use"));

  const common = h("fieldset.section",
    h("legend", "Model and data"),
    h("div.grid2",
      row("Model", "spec.model", modelSel, "A registered model (its checkpoint) or an architecture."),
      row("Dataset", "spec.dataset", datasetSel),
      row("Dataset options", "spec.dataset_options", input({ placeholder: "n=512, root=…" }), "key=value, comma separated (n, root, seed, …)"),
      row("Batch size", "spec.batch_size", input({ value: "256", inputmode: "numeric" })),
      row("Device", "spec.device", h("select", {}, options(["auto", "cpu", "cuda"], "auto"))),
      row("Experiment", "experiment_id", expSel),
      row("Name", "name", jobName, "optional: shown and searched in the jobs table"),
      row("Tags", "tags", jobTags, "optional, comma separated")),
    h("details", h("summary", "Upload a checkpoint to the registry…"), uploadForm));

  // Fields read from the spec's schema: their default, choices and description are the API's.
  const sf = (name, k = "sensitivity") => specField(choices.specs, k, name) || { default: undefined, choices: null, description: "" };
  const hint = (name, extra = "", k = "sensitivity") => [sf(name, k).description, extra].filter(Boolean).join(" · ");
  const check = (name, k = "sensitivity") => h("input", { type: "checkbox", checked: sf(name, k).default === true });
  const choice = (name, fallback, k = "sensitivity") => {
    const f = sf(name, k);
    const values = f.choices || fallback;
    return h("select", {}, options(values, f.default !== undefined ? f.default : values[0]));
  };
  const seedHint = (k) => hint("seed", sf("seed", k).default !== undefined ? `default ${sf("seed", k).default}` : "", k);
  const sens = h("fieldset.section", { "data-kind": "sensitivity" },
    h("legend", "Sensitivity analysis"),
    h("div.grid2",
      row("Group", "spec.group", choice("group", ["element", "filter", "channel"])),
      row("Levels", "spec.levels", input({ value: q.get("levels") || "0:0.95:0.05" }), "start:stop:step (stop excluded) or a list: 0,0.5,0.9"),
      row("Parameters", "spec.params", h("textarea", { rows: 3, placeholder: "all conv/linear weights\n(or names / globs, one per line)" })),
      row("Sample subset", "spec.samples", input({ placeholder: "all", inputmode: "numeric" }), hint("samples") || "a seeded subset of this many samples"),
      row("Seed", "spec.seed", input({ placeholder: String(sf("seed").default ?? 0), inputmode: "numeric" }), seedHint("sensitivity")),
      row("Split", "spec.split", choice("split", ["test", "train"])),
      row("Engine", "spec.engine", choice("engine", ["fast", "plain"]), "fast: the unchanged prefix of the network runs once per batch; plain: the whole model per point"),
      row("Early stop (top1 floor, %)", "spec.early_stop", input({ placeholder: "off", inputmode: "decimal" }), hint("early_stop")),
      row("Mixed precision (approximate)", "spec.amp", check("amp"), hint("amp")),
      row("Adaptive tolerance (top1 points, approximate)", "spec.adaptive_tolerance", input({ placeholder: "off (exact)", inputmode: "decimal" }), hint("adaptive_tolerance")),
      row("Adaptive confidence", "spec.adaptive_confidence", input({ placeholder: String(sf("adaptive_confidence").default ?? 0.95), inputmode: "decimal" }), hint("adaptive_confidence")),
      row("Memory (MB)", "spec.memory_mb", input({ placeholder: String(sf("memory_mb").default ?? 1024), inputmode: "decimal" }), hint("memory_mb")),
      row("Coupled (structured)", "spec.coupled", check("coupled"), hint("coupled", "residual-coupled dependency groups")),
      row("Latency (structured)", "spec.latency", check("latency"), hint("latency"))));

  const planJobSel = h("select", {}, h("option", { value: "" }, "— sensitivity job —"),
    choices.sensitivity.map((j) => h("option", { value: String(j.id) }, `#${j.id} ${j.spec.model} (${j.spec.group || "element"})`)));
  const planDrop = input({ value: "1.0", size: 5 });
  const scheduleArea = h("textarea.code", { rows: 14, spellcheck: "false", placeholder: "version: 1\npruners:\n  …" });
  const schedStatus = h("span.muted#schedule-status");
  const prune = h("fieldset.section", { "data-kind": "prune" },
    h("legend", "Prune with fine-tuning"),
    h("div.inline-tools", "Schedule from a plan: ", planJobSel, " max top1 drop ", planDrop,
      h("button.btn.small", { type: "button", onclick: async () => {
        if (!planJobSel.value) { toast("Pick a sensitivity job first", "error"); return; }
        try {
          const r = await api("plans", { method: "POST", body: { sensitivity_job: Number(planJobSel.value), max_drop: numeric(planDrop.value), metric: "top1", epochs: numeric(epochs.value, { int: true }) || 10 } });
          scheduleArea.value = r.yaml;
          schedStatus.textContent = "schedule filled from the plan";
        } catch (err) { toast(err.message, "error"); }
      } }, "Fill"),
      h("button.btn.small", { type: "button", onclick: async () => {
        try {
          const r = await api("schedules/validate", { method: "POST", body: { yaml: scheduleArea.value } });
          schedStatus.textContent = r.valid ? "✓ schedule is valid" : `✗ ${r.error}`;
          schedStatus.className = r.valid ? "ok" : "bad";
        } catch (err) { schedStatus.textContent = err.message; }
      } }, "Validate"), schedStatus),
    row("Schedule (Distiller YAML)", "spec.schedule", scheduleArea),
    h("div.grid2", row("Thin (remove pruned structures)", "spec.thin", h("input", { type: "checkbox" }))));

  const epochs = input({ value: "10", inputmode: "numeric" });
  const fitSeed = input({ id: "f-spec-seed-fit", placeholder: String(sf("seed", "train").default ?? 0), inputmode: "numeric" });
  const lr = input({ value: "0.01" });
  const optim = h("fieldset.section", { "data-kind": "prune train" },
    h("legend", "Training"),
    h("div.grid2",
      row("Epochs", "spec.epochs", epochs), row("Learning rate", "spec.lr", lr),
      row("Optimizer", "spec.optimizer", choice("optimizer", ["sgd", "adam", "adamw"], "train")),
      row("Seed", "spec.seed", fitSeed, seedHint("train")),
      row("Register result as", "spec.register_as", input({ placeholder: "optional model name" }))));

  const tabs = h("div.tabs", ["sensitivity", "prune", "train"].map((k) => h("button.tab", {
    type: "button", "data-kind-tab": k, onclick: () => { kind = k; syncKind(); },
  }, k)));
  const submit = h("button.btn.primary#submit-job", { type: "submit" }, "Submit job");
  const form = h("form.card.form#new-job", { novalidate: true },
    tabs, common, sens, prune, optim, h("div.form-error", { hidden: true, role: "alert" }),
    h("div.form-actions", submit));

  function syncKind() {
    for (const t of tabs.children) t.classList.toggle("active", t.dataset.kindTab === kind);
    for (const el of form.querySelectorAll("[data-kind]")) el.hidden = !el.dataset.kind.split(" ").includes(kind);
    lr.value = lr.value === "0.1" || lr.value === "0.01" ? (kind === "train" ? "0.1" : "0.01") : lr.value;
    if (kind === "train" && epochs.value === "10") epochs.value = "15";
    if (kind === "prune" && epochs.value === "15") epochs.value = "10";
    clearErrors(form);
  }

  const val = (field) => form.querySelector(`[data-field="${field}"]`);
  function buildBody() {
    const spec = { model: val("spec.model").value, dataset: val("spec.dataset").value };
    // which menu the model came from: an architecture's fresh weights or a registered model, never guessed
    const group = modelSel.selectedOptions[0] && modelSel.selectedOptions[0].parentElement.label;
    if (group === "Architectures (fresh weights)") spec.model_kind = "architecture";
    else if (group === "Registered models") spec.model_kind = "registered";
    const opts = val("spec.dataset_options").value.trim();
    if (opts) spec.dataset_options = parseOptions(opts);
    const bs = numeric(val("spec.batch_size").value, { int: true });
    if (bs !== undefined) spec.batch_size = bs;
    spec.device = val("spec.device").value;
    if (kind === "sensitivity") {
      spec.group = val("spec.group").value;
      spec.levels = val("spec.levels").value.trim();
      const params = val("spec.params").value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
      if (params.length) spec.params = params;
      const samples = numeric(val("spec.samples").value, { int: true });
      if (samples !== undefined) spec.samples = samples;
      spec.split = val("spec.split").value;
      spec.engine = val("spec.engine").value;
      const seed = numeric(sens.querySelector('[data-field="spec.seed"]').value, { int: true });
      if (seed !== undefined) spec.seed = seed;
      const floor = numeric(val("spec.early_stop").value);
      if (floor !== undefined) spec.early_stop = floor;
      const tolerance = numeric(val("spec.adaptive_tolerance").value);
      if (tolerance !== undefined) spec.adaptive_tolerance = tolerance;
      const confidence = numeric(val("spec.adaptive_confidence").value);
      if (confidence !== undefined) spec.adaptive_confidence = confidence;
      const memory = numeric(val("spec.memory_mb").value);
      if (memory !== undefined) spec.memory_mb = memory;
      for (const flag of ["amp", "coupled", "latency"]) if (val(`spec.${flag}`).checked) spec[flag] = true;
    } else {
      const ep = numeric(epochs.value, { int: true });
      if (ep !== undefined) spec.epochs = ep;
      const l = numeric(lr.value);
      if (l !== undefined) spec.lr = l;
      const reg = val("spec.register_as").value.trim();
      if (reg) spec.register_as = reg;
      spec.optimizer = val("spec.optimizer").value;
      const seed = numeric(fitSeed.value, { int: true });
      if (seed !== undefined) spec.seed = seed;
      if (kind === "prune") {
        spec.schedule = scheduleArea.value;
        spec.thin = val("spec.thin").checked;
      }
    }
    const body = { kind, spec };
    if (expSel.value) body.experiment_id = Number(expSel.value);
    return body;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    submit.disabled = true;
    try {
      const job = await api("jobs", { method: "POST", body: buildBody() });
      const labels = { name: jobName.value.trim() || undefined,
        tags: jobTags.value.split(",").map((t) => t.trim()).filter(Boolean) };
      if (labels.name || labels.tags.length) {
        try { await api(`jobs/${job.id}`, { method: "PATCH", body: labels }); } catch (err) { toast(`Job ${job.id} submitted; its name or tags were refused: ${err.message}`, "error"); }
      }
      toast(`Job ${job.id} submitted`);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      if (err instanceof ApiError) showErrors(form, err); else toast(err.message, "error");
    } finally {
      submit.disabled = false;
    }
  });

  view.append(h("div.page-head", h("h1", "New job")), form);
  syncKind();
}
