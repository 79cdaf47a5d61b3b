"""End-to-end flows through the dashboard against a live embedded server running real (tiny) jobs:
submit a sensitivity job through the form and watch it finish live, download its CSV, plan and launch
the prune job, compare two jobs, and bad form input that creates nothing."""

from __future__ import annotations

import contextlib
import csv
import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dash_helpers import goto, shot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# digits-cnn on the digits test split, 200 samples: 4 parameters, a few seconds on a busy CPU
LEVELS = "0:0.9:0.15"  # 0, 0.15, 0.3, 0.45, 0.6, 0.75
N_LEVELS = 6
JOBS: dict[str, int] = {}


def _job_count(server) -> int:
    return server.get("/api/v1/jobs?limit=1")["total"]


def _sensitivity_via_api(server, levels: str) -> int:
    job = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
        "model": "digits-cnn", "dataset": "digits", "levels": levels, "samples": 200, "device": "cpu"}})
    assert server.wait_job(job["id"])["status"] == "succeeded"
    return job["id"]


@pytest.fixture
def sensitivity_job(server) -> int:
    """The job the form test created, or (when run alone) one made through the API."""
    if "form" not in JOBS:
        JOBS["form"] = _sensitivity_via_api(server, LEVELS)
    return JOBS["form"]


def test_submit_sensitivity_job_and_watch_it_live(page, server, tmp_path: Path) -> None:
    goto(page, "#/new")
    page.select_option("#f-spec-model", "digits-cnn")
    page.select_option("#f-spec-dataset", "digits")
    page.fill("#f-spec-levels", LEVELS)
    page.fill("#f-spec-samples", "200")
    page.select_option("#f-spec-device", "cpu")
    shot(page, "new-job-form")
    page.evaluate("window.__sameDocument = true")
    page.click("#submit-job")
    page.wait_for_function("/^#\\/jobs\\/\\d+$/.test(location.hash)")
    job_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])
    JOBS["form"] = job_id
    page.wait_for_function("document.body.dataset.hash === location.hash && document.body.dataset.ready === '1'")
    # the progress bar reaches 100% through the event stream: no reload (the marker survives)
    page.wait_for_selector(".job-head .progress[aria-valuenow='100']", timeout=240_000)
    page.wait_for_selector("#job-status .badge[data-status=succeeded]", timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    parameters = {p["parameter"] for p in server.get(f"/api/v1/jobs/{job_id}/points")}
    assert len(parameters) == 4
    page.wait_for_function(f"window.prunescope.lastRender.points === {4 * N_LEVELS}")
    history = page.evaluate("window.prunescope.renderHistory")
    if history[0]["status"] in ("queued", "running"):  # else the job beat the page: nothing left to grow
        drawn = [h["points"] for h in history]
        assert drawn[0] < 4 * N_LEVELS and drawn == sorted(drawn), f"the curves did not grow live: {history}"
    traces = page.evaluate("document.getElementById('curves').data.filter(t => t.meta === 'curve').map(t => t.name)")
    assert sorted(traces) == sorted(parameters)
    shot(page, "sensitivity-job")

    # metric switch
    page.click("#metric-switch [data-metric=loss]")
    page.wait_for_function("document.getElementById('curves').layout.yaxis.title.text.startsWith('loss')")
    loss = page.evaluate("document.getElementById('curves').data.find(t => t.meta === 'curve').y")
    assert all(v > 0.1 for v in loss)  # cross-entropy, not a percentage

    # Distiller CSV download
    with page.expect_download() as info:
        page.click("#download-csv")
    path = tmp_path / "points.csv"
    info.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert list(rows[0]) == ["parameter", "sparsity", "top1", "top5", "loss"]
    assert len(rows) == 4 * N_LEVELS
    assert {r["parameter"] for r in rows} == parameters
    assert sorted({float(r["sparsity"]) for r in rows}) == pytest.approx([0, 0.15, 0.3, 0.45, 0.6, 0.75])

    # HTML report: self-contained (plotly.js inlined), it draws its curves from a file:// URL
    with page.expect_download() as info:
        page.click("#download-html")
    report = tmp_path / "report.html"
    info.value.save_as(report)
    page.goto(report.as_uri())
    page.wait_for_function("document.getElementById('curves')?.data?.length > 0")
    names = page.evaluate(
        "document.getElementById('curves').data.filter(t => t.meta === 'curve' && t.visible).map(t => t.name)")
    assert sorted(names) == sorted(parameters)


def test_plan_then_launch_the_prune_job(page, server, sensitivity_job) -> None:
    goto(page, f"#/plan/{sensitivity_job}")
    top = page.get_attribute("#tolerance", "data-top")
    page.fill("#tolerance-value", top)  # the most tolerant plan prunes every layer to its highest level
    plan = page.evaluate("window.prunescope.lastPlan")
    assert plan["overall"] > 0.5 and all(v == 0.75 for v in plan["levels"].values())
    yaml = page.inner_text("#plan-yaml")
    assert "final_sparsity: 0.75" in yaml and "conv1.weight" in yaml
    assert page.inner_text("#plan-overall").endswith("%")
    page.fill("#plan-epochs", "3")
    client_yaml = page.inner_text("#plan-yaml")
    page.click("#server-yaml")  # the service's plan (pruning_core.plan) gives the same schedule
    page.wait_for_function("!document.getElementById('toast').hidden")
    assert page.inner_text("#plan-yaml").strip() == client_yaml.strip()
    shot(page, "plan-real")
    page.check("#plan-thin")  # the prune job then thins the model and measures size and speed
    page.click("#launch-plan")
    page.wait_for_function("/^#\\/jobs\\/\\d+$/.test(location.hash) && document.body.dataset.hash === location.hash"
                           " && document.body.dataset.ready === '1'")
    prune_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])
    job = server.get(f"/api/v1/jobs/{prune_id}")
    assert job["kind"] == "prune" and "AutomatedGradualPruner" in job["spec"]["schedule"] and job["spec"]["thin"]
    page.wait_for_selector("#job-status .badge[data-status=succeeded]", timeout=240_000)
    page.wait_for_selector("#before-after", timeout=30_000)
    page.wait_for_selector("#artifacts td:text('prune-report.json')")
    assert page.locator("#epochs-table tbody tr").count() == 3
    assert page.locator("#sparsity-summary tbody tr").count() >= 4  # per-tensor table from the job's result
    size_speed = page.inner_text("#size-speed")  # before/after parameters, MACs and CPU latency
    assert "parameters" in size_speed and "CPU latency (ms)" in size_speed
    assert page.locator("#size-speed tbody tr").count() == 3
    sparsity = page.inner_text("#overall-sparsity")
    assert float(sparsity.rstrip("%")) > 30
    shot(page, "prune-job")


def test_compare_two_jobs(page, server, sensitivity_job) -> None:
    other = _sensitivity_via_api(server, "0,0.5,0.9")
    goto(page, "#/jobs")
    page.check(f"tr[data-job='{sensitivity_job}'] input[type=checkbox]")
    page.check(f"tr[data-job='{other}'] input[type=checkbox]")
    shot(page, "jobs")
    page.click("#compare-selected")
    page.wait_for_function("location.hash.startsWith('#/compare') && document.body.dataset.hash === location.hash"
                           " && document.body.dataset.ready === '1'")
    ids = sorted([sensitivity_job, other])
    assert page.evaluate("location.hash") == f"#/compare?jobs={ids[0]},{ids[1]}"
    page.wait_for_function("document.getElementById('compare-chart').data?.length === 8")
    names = page.evaluate("document.getElementById('compare-chart').data.map(t => t.name)")
    assert {n.split(" ")[0] for n in names} == {f"#{i}" for i in ids}
    page.wait_for_selector("#compare-table tbody tr")
    assert page.locator("#compare-table thead th").count() == 5
    shot(page, "compare")


def test_bad_input_shows_the_api_message_and_creates_nothing(page, server) -> None:
    before = _job_count(server)
    goto(page, "#/new")
    page.fill("#f-spec-levels", "0:0.9:-0.1")
    page.fill("#f-spec-samples", "lots")
    page.click("#submit-job")
    levels_error = page.locator("[data-error-for='spec.levels']")
    levels_error.wait_for()
    assert "step must be positive" in levels_error.inner_text()
    assert page.locator("[data-error-for='spec.samples']").inner_text() != ""
    assert page.locator("#f-spec-levels").evaluate("e => e.classList.contains('invalid')")
    shot(page, "new-job-errors")
    # a name check made by the route (HTTPException detail "field: message")
    page.fill("#f-spec-levels", "0,0.5")
    page.fill("#f-spec-samples", "")
    page.select_option("#f-spec-dataset", "cifar10")
    page.click("#submit-job")
    root_error = page.locator("[data-error-for='spec.dataset_options']")
    root_error.wait_for()
    assert "root" in root_error.inner_text()
    assert page.evaluate("location.hash") == "#/new"
    assert _job_count(server) == before


def test_jobs_table_cancel_filter_delete(page, server) -> None:
    job = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
        "model": "digits-cnn", "dataset": "digits", "levels": "0:0.95:0.01", "device": "cpu"}})
    goto(page, "#/jobs")
    row = page.locator(f"tr[data-job='{job['id']}']")
    row.locator("[data-action=cancel]").click()
    page.wait_for_selector(f"tr[data-job='{job['id']}'] .badge[data-status=cancelled]", timeout=60_000)
    page.select_option("#filter-status", "cancelled")
    page.wait_for_function(
        "[...document.querySelectorAll('#jobs-body tr[data-job]')].every(r => r.dataset.status === 'cancelled')")
    assert "status=cancelled" in page.evaluate("location.hash")
    page.once("dialog", lambda d: d.accept())
    page.locator(f"tr[data-job='{job['id']}'] [data-action=delete]").click()
    page.wait_for_selector(f"tr[data-job='{job['id']}']", state="detached")
    assert server.get("/api/v1/jobs?status=cancelled")["total"] == 0


def test_jobs_table_progress_comes_from_the_list_stream(page, server) -> None:
    """The jobs table follows a running job through /jobs/events alone: its progress grows while the
    table fetches the list no more (a reload happens only when a job appears or changes status)."""
    goto(page, "#/jobs")
    page.wait_for_function("window.prunescope.jobsStream && window.prunescope.jobsStream.open")
    job = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
        "model": "digits-cnn", "dataset": "digits", "levels": "0:0.99:0.01", "device": "cpu"}})
    row = f"tr[data-job='{job['id']}']"
    try:
        page.wait_for_selector(f"{row}[data-status=running]", timeout=60_000)  # new row, then running: via events
        page.wait_for_function(
            f"(() => {{ const v = +document.querySelector(\"{row} .progress\").getAttribute('aria-valuenow');"
            " return v > 0 && v < 100; })()", timeout=120_000)
        fetches = page.evaluate("window.prunescope.jobsStream.listFetches")
        first = int(page.get_attribute(f"{row} .progress", "aria-valuenow"))
        page.wait_for_function(
            f"+document.querySelector(\"{row} .progress\").getAttribute('aria-valuenow') > {first}", timeout=120_000)
        live = page.evaluate("window.prunescope.jobsStream")
        assert live["messages"] >= 2 and not live["polling"], live
        assert live["listFetches"] == fetches or server.get(f"/api/v1/jobs/{job['id']}")["status"] != "running"
    finally:
        with contextlib.suppress(urllib.error.HTTPError):  # 409 if it finished meanwhile
            server.post(f"/api/v1/jobs/{job['id']}/cancel", {})
    page.wait_for_selector(f"{row}:is([data-status=cancelled], [data-status=succeeded])", timeout=60_000)


def test_models_and_datasets_pages(page, server, tmp_path: Path) -> None:
    goto(page, "#/models")
    page.wait_for_selector("#models-table")
    page.fill("#model-upload [name=name]", "no-file")
    page.click("#model-upload button[type=submit]")
    page.locator("#model-upload [data-error-for=checkpoint]").wait_for()
    # upload a real checkpoint: the one the prune job registered, when that test ran
    trained = [m for m in server.get("/api/v1/models") if m["artifact_id"]]
    if trained:
        ckpt = tmp_path / "model.pt"
        with urllib.request.urlopen(f"{server.url}/api/v1/artifacts/{trained[0]['artifact_id']}/download") as r:
            ckpt.write_bytes(r.read())
        page.fill("#model-upload [name=name]", "uploaded-copy")
        page.set_input_files("#model-upload [name=checkpoint]", str(ckpt))
        page.click("#model-upload button[type=submit]")
        page.wait_for_selector("#models-table td:text('uploaded-copy')")
    shot(page, "models")
    goto(page, "#/datasets")
    assert page.locator("#datasets-table tbody tr").count() >= 5
    shot(page, "datasets")
