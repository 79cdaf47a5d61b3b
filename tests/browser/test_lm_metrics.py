"""A job whose points have no top1 (a language model's loss and perplexity, and a custom metric) in the
dashboard (issue 14): the metric selector lists what the points have and starts on their first metric, the
curves, the axis titles, the plan and the comparison follow the chosen one. The jobs come in through
``POST /api/v1/jobs/import``, so no language model is trained here."""

from __future__ import annotations

import math

from dash_helpers import goto, shot

PARAMS = ("embed.weight", "rnn.weight_ih_l0", "head.weight")
LEVELS = (0.0, 0.5, 0.9)


def lm_points(shift: float = 0.0) -> list[dict]:
    """Token loss rising with sparsity (faster for later parameters), its perplexity, and a custom ``mae``
    (lower is better) that rises in the other order."""
    return [{"parameter": p, "sparsity": s, "loss": 2.0 + (i + 1) * s + shift, "samples": 512,
             "nnz": 1000 - int(1000 * s),
             "metrics": {"perplexity": math.exp(2.0 + (i + 1) * s + shift), "mae": 0.1 + s * (3 - i)}}
            for i, p in enumerate(PARAMS) for s in LEVELS]


def _curves(page, chart: str = "curves") -> dict[str, list[float]]:
    return {t["name"]: t["y"] for t in page.evaluate(
        f"document.getElementById('{chart}').data.filter(t => String(t.meta).startsWith('curve'))"
        ".map(t => ({name: t.name, y: t.y}))")}


def _close(got: dict[str, list[float]], want: dict[str, list[float]]) -> bool:
    return got.keys() == want.keys() and all(
        all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(got[k], want[k], strict=True)) for k in want)


def test_a_job_without_top1_shows_its_own_metrics(page, server) -> None:
    body = {"model": "digits-cnn", "dataset": "synthetic", "points": lm_points()}
    job = server.post("/api/v1/jobs/import", body)["id"]
    other = server.post("/api/v1/jobs/import", {**body, "points": lm_points(shift=0.25)})["id"]
    by_param = {p: [pt for pt in lm_points() if pt["parameter"] == p] for p in PARAMS}

    goto(page, f"#/jobs/{job}")
    page.wait_for_function(f"window.prunescope.lastRender?.points === {len(PARAMS) * len(LEVELS)}")
    buttons = page.eval_on_selector_all("#metric-switch button", "bs => bs.map(b => [b.dataset.metric, "
                                        "b.classList.contains('active')])")
    assert buttons == [["loss", True], ["perplexity", False], ["mae", False]]  # no empty top1 plot
    assert _close(_curves(page), {p: [pt["loss"] for pt in pts] for p, pts in by_param.items()})

    page.click("#metric-switch [data-metric=perplexity]")
    page.wait_for_function("document.getElementById('curves').layout.yaxis.title.text === 'perplexity'")
    assert _close(_curves(page), {p: [pt["metrics"]["perplexity"] for pt in pts] for p, pts in by_param.items()})
    assert "perplexity" in page.inner_text("#points-table thead").lower()  # the header is upper-cased by CSS
    shot(page, "lm-job-perplexity")

    # the plan: the selector offers the points' metrics; a custom one asks its direction
    goto(page, f"#/plan/{job}")
    options = page.eval_on_selector_all("#plan-metric option", "os => os.map(o => o.value)")
    assert options == ["loss", "perplexity", "mae"]
    page.select_option("#plan-metric", "perplexity")
    page.fill("#tolerance-value", "11")
    plan = page.evaluate("window.prunescope.lastPlan")
    served = server.post("/api/v1/plans", {"sensitivity_job": job, "max_drop": 11, "metric": "perplexity"})
    assert plan["levels"] == served["levels"] == {"embed.weight": 0.9, "rnn.weight_ih_l0": 0, "head.weight": 0}
    assert page.evaluate("document.getElementById('plan-tradeoff').layout.xaxis.title.text") == \
        "tolerated perplexity rise"
    assert not page.locator("#plan-direction-field").is_visible()
    page.select_option("#plan-metric", "mae")
    assert page.locator("#plan-direction-field").is_visible()
    page.select_option("#plan-direction", "false")
    page.fill("#tolerance-value", "1")
    plan = page.evaluate("window.prunescope.lastPlan")
    served = server.post("/api/v1/plans", {"sensitivity_job": job, "max_drop": 1, "metric": "mae",
                                           "higher_is_better": False})
    assert plan["levels"] == served["levels"] == {"embed.weight": 0, "rnn.weight_ih_l0": 0.5, "head.weight": 0.9}
    page.click("#server-yaml")  # the service plans the custom metric the same way (its direction sent along)
    page.wait_for_function("document.getElementById('toast').textContent === 'YAML from the service'")
    shot(page, "lm-plan-mae")

    # the comparison: two language-model jobs side by side on perplexity
    goto(page, f"#/compare?jobs={job},{other}&metric=perplexity")
    page.wait_for_function("document.getElementById('compare-chart').data?.length === 6")
    assert page.eval_on_selector_all("#compare-metric button", "bs => bs.map(b => b.dataset.metric)") == \
        ["loss", "perplexity", "mae"]
    assert page.evaluate("document.getElementById('compare-chart').layout.yaxis.title.text") == "perplexity"
    page.wait_for_selector("#compare-table tbody tr")
    assert f"#{job} perplexity" in page.inner_text("#compare-table thead").lower()
    shot(page, "lm-compare")
