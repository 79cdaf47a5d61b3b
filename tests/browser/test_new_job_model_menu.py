"""Issue 16, bug 9 and bug 2 on the form: an unknown model in the link keeps the Model menu whole and the
API's message shown at the field; a model picked from the architectures is sent as an architecture."""

from __future__ import annotations

import pytest
from dash_helpers import goto

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_an_unknown_model_in_the_link_keeps_the_menu_and_says_why(page, server) -> None:
    before = server.get("/api/v1/jobs?limit=1")["total"]
    goto(page, "#/new?model=resnet-9000")
    assert page.eval_on_selector("#f-spec-model", "s => s.value") == "resnet-9000"
    architectures = page.eval_on_selector_all(
        "#f-spec-model optgroup[label='Architectures (fresh weights)'] option", "os => os.length")
    assert architectures > 50
    page.click("#submit-job")
    error = page.locator("[data-error-for='spec.model']")
    error.wait_for()
    page.wait_for_function("document.querySelector(\"[data-error-for='spec.model']\").textContent.length > 0")
    assert "unknown model 'resnet-9000'" in error.inner_text()
    assert server.get("/api/v1/jobs?limit=1")["total"] == before  # nothing was created


def test_a_model_from_the_architectures_is_sent_as_an_architecture(page, server) -> None:
    goto(page, "#/new?model=digits-cnn")
    page.fill("#f-spec-levels", "0,0.5")
    page.fill("#f-spec-params", "fc.weight")
    page.click("#submit-job")
    page.wait_for_function("/^#\\/jobs\\/\\d+$/.test(location.hash)")
    job_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])
    assert server.get(f"/api/v1/jobs/{job_id}")["spec"]["model_kind"] == "architecture"
    server.wait_job(job_id)
