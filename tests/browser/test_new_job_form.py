"""The new-job form offers what the API and the CLI offer, read from the spec's schema (OpenAPI of
api/shared/specs.py): seed, early stop, engine, amp labelled approximate, coupled, latency; what it
submits is the spec the job then has, and a model-level refusal lands beside the field it names."""

from __future__ import annotations

import httpx
from dash_helpers import goto


def test_sensitivity_fields_come_from_the_spec_and_reach_the_job(page, server) -> None:
    schema = server.get("/api/v1/openapi.json")["components"]["schemas"]["SensitivitySpec"]["properties"]
    goto(page, "#/new?kind=sensitivity")
    engines = page.eval_on_selector_all("#f-spec-engine option", "os => os.map(o => o.value)")
    assert engines == schema["engine"]["enum"]
    assert page.input_value("#f-spec-engine") == schema["engine"]["default"]
    amp = page.locator("[data-for='spec.amp']")
    assert "approximate" in amp.locator("label").inner_text().lower()
    assert schema["amp"]["description"] in amp.inner_text()
    assert schema["samples"]["description"] in page.inner_text("[data-for='spec.samples']")
    for control in ("#f-spec-seed", "#f-spec-early_stop", "#f-spec-coupled", "#f-spec-latency"):
        assert page.locator(control).is_visible(), control
    assert not page.locator("#f-spec-seed-fit").is_visible()

    # latency on an element sweep: the spec refuses it, and the message sits beside the latency box
    page.select_option("#f-spec-model", "digits-cnn")
    page.fill("#f-spec-levels", "0,0.5")
    page.check("#f-spec-latency")
    page.click("#submit-job")
    page.wait_for_function("document.querySelector('[data-error-for=\"spec.latency\"]').textContent.length > 0")
    assert "structured" in page.inner_text("[data-error-for='spec.latency']")

    page.uncheck("#f-spec-latency")
    page.fill("#f-spec-params", "fc*")
    page.fill("#f-spec-samples", "32")
    page.fill("#f-spec-seed", "7")
    page.fill("#f-spec-early_stop", "12.5")
    page.select_option("#f-spec-engine", "plain")
    page.check("#f-spec-amp")
    page.fill("#f-name", "amp sweep")
    page.fill("#f-tags", "fc, quick")
    page.click("#submit-job")
    page.wait_for_function("/^#\\/jobs\\/\\d+$/.test(location.hash)")
    job_id = int(page.url.rsplit("/", 1)[1])
    job = server.get(f"/api/v1/jobs/{job_id}")
    # clean-up only: a sweep this small may already have finished (409), which is fine
    assert httpx.post(f"{server.url}/api/v1/jobs/{job_id}/cancel", timeout=10).status_code in (200, 409)
    spec = job["spec"]
    assert (job["result"]["name"], job["result"]["tags"]) == ("amp sweep", ["fc", "quick"])
    sent = (spec["seed"], spec["early_stop"], spec["engine"], spec["amp"], spec["samples"])
    assert sent == (7, 12.5, "plain", True, 32)
    assert spec["latency"] is False and spec["coupled"] is False


def test_prune_and_train_take_seed_and_optimizer(page, server) -> None:
    schema = server.get("/api/v1/openapi.json")["components"]["schemas"]["PruneSpec"]["properties"]
    goto(page, "#/new?kind=prune")
    assert page.locator("#f-spec-seed-fit").is_visible() and not page.locator("#f-spec-seed").is_visible()
    optimizers = page.eval_on_selector_all("#f-spec-optimizer option", "os => os.map(o => o.value)")
    assert optimizers == schema["optimizer"]["enum"] and page.locator("#f-spec-optimizer").is_visible()
    page.fill("#f-spec-seed-fit", "-1")  # out of the spec's bounds: the API's 422 beside the prune seed
    page.fill("#f-spec-schedule", "version: 1")
    page.click("#submit-job")
    slot = "#f-spec-seed-fit >> xpath=.. >> [data-error-for='spec.seed']"
    page.wait_for_function("document.querySelector('#f-spec-seed-fit').classList.contains('invalid')")
    assert "greater than or equal to 0" in page.inner_text(slot)
    assert page.locator("#f-spec-seed").get_attribute("class") in (None, "")  # the hidden sweep seed is untouched
