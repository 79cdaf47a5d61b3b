// The hash router: #/jobs, #/jobs/<id>, #/compare?jobs=1,2, #/plan/<id>, #/new, #/models, #/datasets.
import { comparePage } from "./compare.js";
import { experimentsPage } from "./experiments.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { newJobPage } from "./newjob.js";
import { planPage } from "./plan.js";
import { registryPage } from "./registry.js";
import { api, h, leavePage } from "./util.js";

const ROUTES = [
  [/^\/?$/, () => { location.replace("#/jobs"); }],
  [/^\/jobs$/, (view) => jobsPage(view), "jobs"],
  [/^\/jobs\/(\d+)$/, (view, m) => jobPage(view, Number(m[1])), "jobs"],
  [/^\/compare$/, (view) => comparePage(view), "compare"],
  [/^\/experiments$/, (view) => experimentsPage(view), "experiments"],
  [/^\/experiments\/(\d+)$/, (view, m) => experimentsPage(view, Number(m[1])), "experiments"],
  [/^\/plan\/(\d+)$/, (view, m) => planPage(view, Number(m[1])), "jobs"],
  [/^\/new$/, (view) => newJobPage(view), "new"],
  [/^\/models$/, (view) => registryPage(view, "models"), "models"],
  [/^\/datasets$/, (view) => registryPage(view, "datasets"), "models"],
];

let generation = 0;

async function route() {
  leavePage();
  const gen = ++generation;
  const raw = location.hash.replace(/^#/, "");
  const path = raw.split("?")[0];
  const view = document.getElementById("view");
  for (const [re, render, nav] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.route === nav);
    view.replaceChildren();
    view.dataset.page = nav || "";
    document.body.dataset.ready = "0";
    try {
      await render(view, m);
    } catch (err) {
      if (gen !== generation) return;
      console.error(err);
      view.replaceChildren(h("div.card.error", h("h2", "Something went wrong"), h("p", err.message || String(err))));
    }
    if (gen === generation) markReady(raw);
    return;
  }
  view.replaceChildren(h("div.card", h("h2", "Not found"), h("p", `No page at #${raw}. `, h("a", { href: "#/jobs" }, "Go to jobs"))));
  markReady(raw);
}

// data-ready says the page is drawn; data-hash says which one, so a test (or a script) that changed
// location.hash can wait for *that* page and not see the previous page's ready flag.
function markReady(raw) {
  document.body.dataset.hash = `#${raw}`;
  document.body.dataset.ready = "1";
}

async function health() {
  const el = document.getElementById("health");
  try {
    const r = await api("/healthz");
    el.textContent = r.ok ? `● ${r.store.dialect} · ${r.broker.kind}` : "● degraded";
    el.dataset.ok = r.ok ? "1" : "0";
    el.title = r.broker.detail || "";
  } catch (err) {
    el.textContent = "● offline";
    el.dataset.ok = "0";
    el.title = err.message;
  }
}

// Dark mode: <html data-theme>, chosen with the top bar's toggle and kept in this browser.
const THEME_KEY = "prunescope.theme";
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const btn = document.getElementById("theme-toggle");
  if (btn) btn.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
}
let storedTheme = null;
try { storedTheme = localStorage.getItem(THEME_KEY); } catch { /* private mode */ }
applyTheme(storedTheme === "dark" ? "dark" : "light");
document.getElementById("theme-toggle")?.addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  applyTheme(next);
  try { localStorage.setItem(THEME_KEY, next); } catch { /* private mode */ }
});

window.addEventListener("hashchange", route);
route();
health();
setInterval(health, 30000);
