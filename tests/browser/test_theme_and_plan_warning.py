"""Dark mode (the top bar's toggle, kept in localStorage across reloads) and the plan page's warning when
the baseline top1 is near chance for the model's class count (an untrained model's plan prunes everything)."""

from __future__ import annotations

import pytest
from dash_helpers import goto, insert_sensitivity_job

from api.store import repo
from api.store.models import utcnow


def test_dark_mode_toggles_and_persists(page) -> None:
    goto(page, "#/jobs")
    light = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark = page.evaluate("getComputedStyle(document.querySelector('main')).color")
    assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") != light
    assert page.evaluate("localStorage.getItem('prunescope.theme')") == "dark"
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate("getComputedStyle(document.querySelector('main')).color") == dark
    assert page.get_attribute("#theme-toggle", "aria-pressed") == "true"
    page.click("#theme-toggle")
    assert page.evaluate("localStorage.getItem('prunescope.theme')") == "light"
    assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == light


def untrained_sweep(store, top1: float) -> int:
    """A finished digits-cnn sweep whose unpruned top1 is ``top1`` (two layers, two levels)."""
    with store() as s:
        job = repo.create_job(s, kind="sensitivity", spec={"model": "digits-cnn", "dataset": "digits",
                                                           "group": "element", "levels": [0.0, 0.5]})
        job.status, job.started_at, job.finished_at = "succeeded", utcnow(), utcnow()
        for i, name in enumerate(("conv1.weight", "fc.weight")):
            for level in (0.0, 0.5):
                repo.upsert_point(s, job.id, {"parameter": name, "sparsity": level, "top1": top1 - level,
                                              "top5": 50.0, "loss": 2.3, "samples": 360, "nnz": 100},
                                  shard=0, worker="t", param_index=i)
        s.commit()
        return job.id


@pytest.mark.slow  # two plan pages with their charts: about 5 s
def test_plan_warns_near_chance_only(page, store, server) -> None:
    catalogue = server.get("/api/v1/architectures")["architectures"]
    classes = next(a["num_classes"] for a in catalogue if a["name"] == "digits-cnn")
    near = untrained_sweep(store, 100 / classes * 1.1)
    goto(page, f"#/plan/{near}")
    warning = page.inner_text("#plan-chance-warning")
    assert f"{classes} classes" in warning and "untrained" in warning
    trained = insert_sensitivity_job(store, 3, 4)
    goto(page, f"#/plan/{trained}")
    assert page.locator("#plan-chance-warning").count() == 0


@pytest.mark.slow  # a job page with its charts: about 3 s
def test_charts_follow_dark_mode(page, store) -> None:
    job = insert_sensitivity_job(store, 3, 4)
    goto(page, f"#/jobs/{job}")
    page.wait_for_selector(".js-plotly-plot .bg")
    fill = "getComputedStyle(document.querySelector('.js-plotly-plot .bg')).fill"
    light = page.evaluate(fill)
    page.click("#theme-toggle")
    dark = page.evaluate(fill)
    assert dark != light and dark == "rgb(22, 27, 38)"
    page.click("#theme-toggle")
    assert page.evaluate(fill) == light
