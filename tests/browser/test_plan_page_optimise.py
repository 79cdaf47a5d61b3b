"""Issue 15 on the plan page: choose an objective and a target, see the optimiser's predicted drop beside the
baselines', measure them all in a plan job, and launch the prune job from the measured plan."""

from __future__ import annotations

import pytest
from dash_helpers import goto, shot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def trained_sweep(server) -> int:
    """A sweep of a briefly trained digits-cnn (a random one is at chance: its plans mean nothing)."""
    train = server.post("/api/v1/jobs", {"kind": "train", "spec": {
        "model": "digits-cnn", "dataset": "digits", "epochs": 2, "register_as": "digits-optimised", "device": "cpu"}})
    assert server.wait_job(train["id"])["status"] == "succeeded"
    sweep = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": {
        "model": "digits-optimised", "dataset": "digits", "levels": "0:0.9:0.15", "samples": 200, "device": "cpu"}})
    assert server.wait_job(sweep["id"])["status"] == "succeeded"
    return sweep["id"]


def test_optimise_measure_and_launch_from_the_plan_page(page, server, trained_sweep: int) -> None:
    goto(page, f"#/plan/{trained_sweep}")
    page.select_option("#opt-objective", "sparsity")
    page.select_option("#opt-mode", "target")
    page.fill("#opt-value", "0.5")
    page.click("#opt-plan")
    page.wait_for_selector("#opt-body tr[data-method=optimal]")
    methods = page.eval_on_selector_all("#opt-body tr", "rows => rows.map(r => r.dataset.method)")
    assert methods[0] == "optimal" and {"uniform", "equal-tolerance"} <= set(methods)
    predicted = page.inner_text("#opt-body tr[data-method=optimal] td[data-col=predicted]")
    assert predicted != "–" and page.inner_text("#opt-body tr[data-method=optimal] td[data-col=measured]") == "–"
    assert "AutomatedGradualPruner" in page.inner_text("#plan-yaml")

    page.click("#opt-measure")
    page.wait_for_function("document.querySelector('#opt-body tr[data-method=optimal] td[data-col=measured]')"
                           "?.textContent !== '–' && !document.querySelector('#opt-launch').disabled", timeout=120_000)
    measured = float(page.inner_text("#opt-body tr[data-method=optimal] td[data-col=measured]"))
    plan_job = int(page.get_attribute("#opt-status a", "href").rsplit("/", 1)[1])
    stored = server.get(f"/api/v1/jobs/{plan_job}")
    assert stored["kind"] == "plan" and stored["status"] == "succeeded"
    assert abs(stored["result"]["plan"]["measured_drop"] - measured) < 1e-3  # the page shows the stored number
    assert page.locator("#opt-body tr[data-method=global-magnitude]").count() == 1
    shot(page, "plan-optimised")

    page.click("#opt-launch")
    page.wait_for_function("/^#\\/jobs\\/\\d+$/.test(location.hash) && document.body.dataset.ready === '1'")
    prune_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])
    job = server.get(f"/api/v1/jobs/{prune_id}")
    assert job["kind"] == "prune" and job["spec"]["schedule"] == stored["result"]["yaml"]
    assert job["result"]["lineage"]["plan_job"] == plan_job and job["spec"]["epochs"] == stored["spec"]["epochs"]
    server.post(f"/api/v1/jobs/{prune_id}/cancel", {})
