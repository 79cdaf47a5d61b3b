"""A notebook's analysis sent with ``Client.log_sensitivity`` (issue 14) shows in the dashboard like a measured
job: listed as succeeded in the jobs list, its curves drawn one per parameter, and compared with a service job."""

from __future__ import annotations

import pytest
from dash_helpers import goto, shot

from api.client import Client
from pruning_core.points import SensitivityPoint

PARAMS = ("conv2.weight", "fc.weight")
LEVELS = (0.0, 0.3, 0.6, 0.9)


def notebook_points() -> list[SensitivityPoint]:
    """What analyze() would have returned in a notebook: top1 falling with sparsity, faster for fc."""
    return [SensitivityPoint(parameter=p, sparsity=s, top1=95.0 - 60 * s * (i + 1) / 2, top5=99.0 - 20 * s,
                             loss=0.2 + s * (i + 1), samples=360, nnz=1000 - int(1000 * s))
            for i, p in enumerate(PARAMS) for s in LEVELS]


@pytest.mark.slow
def test_logged_job_is_listed_drawn_and_compared(page, server) -> None:
    with Client(server.url, token="", progress=False) as client:
        logged = client.log_sensitivity(notebook_points(), model="digits-cnn", dataset="digits")
        served = client.sense("digits-cnn", "digits", levels="0,0.5", params=["conv2.weight"], samples=200,
                              device="cpu")
    assert logged.status == "succeeded" and served.status == "succeeded"

    goto(page, "#/jobs")
    row = f"tr[data-job='{logged.id}']"
    page.wait_for_selector(f"{row} .badge[data-status=succeeded]")
    shot(page, "imported-job-list")

    goto(page, f"#/jobs/{logged.id}")
    page.wait_for_selector("#job-status .badge[data-status=succeeded]")
    page.wait_for_function(f"window.prunescope.lastRender?.points === {len(PARAMS) * len(LEVELS)}")
    traces = page.evaluate("document.getElementById('curves').data.filter(t => t.meta === 'curve')"
                           ".map(t => ({name: t.name, y: t.y}))")
    assert sorted(t["name"] for t in traces) == sorted(PARAMS)
    by_name = {t["name"]: t["y"] for t in traces}
    expected = {p: [pt.top1 for pt in notebook_points() if pt.parameter == p] for p in PARAMS}
    assert {p: [round(v, 6) for v in ys] for p, ys in by_name.items()} == \
        {p: [round(v, 6) for v in ys] for p, ys in expected.items()}
    shot(page, "imported-job-curves")

    goto(page, "#/jobs")
    page.check(f"{row} input[type=checkbox]")
    page.check(f"tr[data-job='{served.id}'] input[type=checkbox]")
    page.click("#compare-selected")
    page.wait_for_function("location.hash.startsWith('#/compare') && document.body.dataset.hash === location.hash"
                           " && document.body.dataset.ready === '1'")
    # one line per (job, parameter): the service measured conv2.weight, the notebook both parameters
    page.wait_for_function("document.getElementById('compare-chart').data?.length === 3")
    names = page.evaluate("document.getElementById('compare-chart').data.map(t => t.name)")
    assert {n.split(" ")[0] for n in names} == {f"#{logged.id}", f"#{served.id}"}
    page.wait_for_selector("#compare-table tbody tr")
    shot(page, "imported-job-compare")
