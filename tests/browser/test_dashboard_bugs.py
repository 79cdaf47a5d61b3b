"""The dashboard bugs a new user hit in the first hour (issue 16), each shown fixed in Chromium.

Jobs are written straight into the live server's store (dash_helpers.insert_job): the page, watching them
over REST and the event stream, is what is under test, not a runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from dash_helpers import curve_point, goto, insert_job, insert_sensitivity_job, jobs_cleaned_up, shot, update_job

from api.store import repo

SENSE_SPEC = {"model": "digits-cnn", "model_kind": "architecture", "dataset": "digits", "dataset_options": {},
              "batch_size": 256, "device": "cpu", "split": "test", "group": "element", "levels": [0.0, 0.4, 0.8],
              "params": None, "samples": None, "coupled": False, "engine": "fast", "shards": 2}
PRUNE_SPEC = {"model": "digits-cnn", "dataset": "digits", "dataset_options": {}, "batch_size": 128, "device": "cpu",
              "schedule": "version: 1\npruners: {}\npolicies: []\n", "epochs": 5, "lr": 0.01}
RENDERED = "window.prunescope.lastRender"


@pytest.fixture(autouse=True)
def _own_jobs_removed(store, server) -> Iterator[None]:
    with jobs_cleaned_up(store, server.data_dir):
        yield


def _wait_render(page: Any, points: int) -> dict:
    page.wait_for_function(f"{RENDERED}?.points === {points}")
    return page.evaluate(RENDERED)


@pytest.mark.slow
def test_a_live_job_ends_drawn_as_a_reload_draws_it(page, store) -> None:
    """Bug 1: shards report out of model order and the first render has no points; the live view must still
    end in model order with the bands choice of a reload (off for more than 12 curves)."""
    names = [f"layer{i}.conv.weight" for i in range(13)] + ["fc.weight"]
    job = insert_job(store, "sensitivity", SENSE_SPEC, status="running", worker="w1", progress_total=42)
    goto(page, f"#/jobs/{job}")
    assert page.evaluate(f"{RENDERED}.points") == 0
    # shard 1 (the second half of the model, fc first) reports, and is drawn, before shard 0
    for shard, order in ((1, [13, *range(7, 13)]), (0, list(range(7)))):
        with store() as s:
            for i in order:
                for level in SENSE_SPEC["levels"]:
                    repo.upsert_point(s, job, curve_point(names[i], level, 4 + i % 5), shard=shard, worker="w1",
                                      param_index=i)
                s.commit()
        drawn = _wait_render(page, 3 * (7 if shard else 14))
        assert drawn["shown"]["curves"] == [n for i, n in enumerate(names) if shard == 0 or i in order]  # model order
    live = drawn
    assert page.evaluate("document.querySelector('#job-status .badge').dataset.status") == "running"
    assert live["shown"]["curves"] == names and live["shown"]["heatmap"] == names
    assert live["shown"]["table"] == names and live["bands"] is False
    heat_rows = page.evaluate("document.getElementById('heatmap').data[0].y")
    assert list(heat_rows) == names
    update_job(store, job, status="succeeded", progress_done=42)
    page.wait_for_selector("#job-status .badge[data-status=succeeded]")
    ended = _wait_render(page, 42)
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'")
    reloaded = page.evaluate(RENDERED)
    for view in (ended, reloaded):
        assert view["shown"] == live["shown"] and view["bands"] is False
    assert not page.is_checked("#bands-toggle")


def test_the_job_page_says_which_model_a_spec_means(page, store) -> None:
    """Bug 2: the spec names an architecture (fresh weights) or a registered model, and the page says which."""
    job = insert_sensitivity_job(store, 2, 3)
    update_job(store, job, spec={**SENSE_SPEC, "model_kind": "architecture"})
    goto(page, f"#/jobs/{job}")
    assert "digits-cnn (architecture, fresh weights)" in page.inner_text(".facts")


CONFIG_KEYS = "(({showLink, showSendToCloud, showEditInChartStudio, plotlyServerURL, toImageButtonOptions}) => " \
    "({showLink, showSendToCloud, showEditInChartStudio, plotlyServerURL, format: toImageButtonOptions.format}))"
CLOUD_WORDS = ("share", "cloud", "chart studio")


def _assert_stays_local(page: Any, chart: str) -> None:
    """The chart's config and its modebar (shown on hover) offer nothing that uploads."""
    page.wait_for_function(f"document.getElementById('{chart}')?._fullLayout !== undefined")
    page.hover(f"#{chart} .main-svg")
    config = page.evaluate(f"{CONFIG_KEYS}(document.getElementById('{chart}')._context)")
    assert not config["showLink"] and config["showSendToCloud"] is False, (chart, config)
    assert not config["showEditInChartStudio"] and config["plotlyServerURL"] == "", (chart, config)
    assert config["format"] == "svg", (chart, config)
    titles = page.eval_on_selector_all(f"#{chart} .modebar-btn", "bs => bs.map(b => b.dataset.title)")
    assert "Download plot" in titles and not [t for t in titles if any(w in t.lower() for w in CLOUD_WORDS)]


def test_no_chart_offers_to_send_data_off_the_machine(browser, server, store) -> None:
    """Bug 5: plotly's cloud buttons are gone from every chart's modebar, and no request leaves 127.0.0.1."""
    sense = insert_sensitivity_job(store, 3, 4)
    prune = insert_job(store, "prune", PRUNE_SPEC, status="succeeded", progress_done=1, progress_total=1)
    with store() as s:
        repo.upsert_epoch(s, prune, 0, {"epoch": 0, "lr": 0.01, "top1": 90.0, "loss": 0.3, "train_loss": 0.4,
                                        "sparsity": 0.5})
        s.commit()
    context = browser.new_context(base_url=server.url)
    left: list[str] = []

    def only_local(route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob", "about") or url.hostname == "127.0.0.1":
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    charts = {f"#/jobs/{sense}": ["curves", "heatmap"], f"#/jobs/{prune}": ["epochs-top1", "epochs-loss"],
              f"#/compare?jobs={sense}": ["compare-chart"]}
    try:
        for route, ids in charts.items():
            goto(page, route)
            for chart in ids:
                _assert_stays_local(page, chart)
        page.wait_for_load_state("networkidle")
    finally:
        context.close()
    assert not left, f"requests that left the machine: {left}"


def test_a_running_prune_job_shows_its_epochs_as_they_end(page, store) -> None:
    """Bug 6: 'epoch 2/5' in the header meant rows in the table and points on the charts, while it runs."""
    job = insert_job(store, "prune", PRUNE_SPEC, status="running", worker="w1", progress_total=5)
    goto(page, f"#/jobs/{job}")
    assert "is running" in page.inner_text("#epochs-table")
    for epoch in range(2):
        with store() as s:
            repo.upsert_epoch(s, job, epoch, {"epoch": epoch, "lr": 0.01, "top1": 80.0 + epoch, "loss": 0.5,
                                              "train_loss": 0.6, "sparsity": 0.2 * (epoch + 1)})
            repo.set_progress(s, job, done=epoch + 1)
            s.commit()
        page.wait_for_function(f"document.querySelectorAll('#epochs-table tbody tr').length === {epoch + 1}")
    assert page.evaluate("document.getElementById('epochs-top1').data[0].y") == [80.0, 81.0]
    # prune epochs are the schedule's (from 0); shown from 1, as training's are
    assert page.evaluate("document.getElementById('epochs-top1').data[0].x") == [1, 2]
    assert page.inner_text("#epochs-table tbody tr:first-child td:first-child") == "1"


def test_a_failed_or_cancelled_job_does_not_wait_for_points(page, store) -> None:
    """Bug 7: no 'they appear as the job measures them', no CSV, report, compare or plan."""
    empty = insert_job(store, "sensitivity", SENSE_SPEC, status="failed", error="boom")
    update_job(store, empty, status="failed")
    goto(page, f"#/jobs/{empty}")
    assert page.inner_text("#no-points") == "No points: the job failed before it measured any."
    for action in ("#download-csv", "#download-html", "#plan-link", "#compare-link"):
        assert page.locator(action).count() == 0, action
    partial = insert_sensitivity_job(store, 2, 3)
    update_job(store, partial, status="cancelled")
    goto(page, f"#/jobs/{partial}")
    assert page.is_hidden("#no-points")
    assert "The job cancelled: these 6 points are all it measured" in page.inner_text("#ended-early")
    assert page.locator("#plan-link").count() == 0 and page.locator("#download-csv").count() == 0


def test_a_job_opened_while_queued_shows_its_worker_when_done(page, store) -> None:
    """Bug 8: the facts follow the job (no 'Worker –' after it ran on a worker)."""
    job = insert_job(store, "sensitivity", SENSE_SPEC, status="queued")
    goto(page, f"#/jobs/{job}")
    assert page.inner_text("#fact-worker") == "–"
    update_job(store, job, status="running", worker="gpu-box-1", device="cuda:0")
    page.wait_for_function("document.getElementById('fact-worker').textContent === 'gpu-box-1 · cuda:0'")
    update_job(store, job, status="succeeded")
    page.wait_for_selector("#job-status .badge[data-status=succeeded]")
    assert page.inner_text("#fact-worker") == "gpu-box-1 · cuda:0"


def test_a_compare_link_with_an_unknown_job_compares_the_rest(page, store) -> None:
    """Bug 9 (compare): an id that does not exist is named; the page and the known job still draw."""
    job = insert_sensitivity_job(store, 3, 4)
    goto(page, f"#/compare?jobs={job},999999")
    assert "#999999 does not exist" in page.inner_text("#compare-missing")
    page.wait_for_function("document.getElementById('compare-chart').data?.length === 3")


PAGES = ["#/jobs", "#/jobs/{job}", "#/compare?jobs={job}", "#/plan/{job}", "#/new", "#/models", "#/datasets",
         "#/experiments"]


@pytest.mark.slow
def test_every_page_fits_a_phone(page, store) -> None:
    """Bug 10: at 390 px nothing scrolls sideways (the navigation wraps). test_screenshots.py shoots every page
    at both sizes; the job page's many-layer tools are shot here."""
    job = insert_sensitivity_job(store, 6, 5)
    page.set_viewport_size({"width": 390, "height": 844})
    for route in PAGES:
        goto(page, route.format(job=job))
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{route} at 390 px scrolls sideways by {overflow} px"
    goto(page, f"#/jobs/{job}")
    shot(page, "job-many-layer-tools-390x844")


def test_hover_units_metric_in_the_url_and_experiment_names(page, store) -> None:
    """Bug 11: the hover says sparsity in % as the axis does, MACs read as 1.23 M, the chosen metric is in the
    URL (a reload keeps it), and the job's experiment shows by name."""
    job = insert_sensitivity_job(store, 4, 5, group="filter")
    with store() as s:
        from api.store.models import Experiment

        exp = Experiment(name="resnet-study", description="", tags=[])
        s.add(exp)
        s.commit()
        exp_id = exp.id
    update_job(store, job, experiment_id=exp_id)
    goto(page, f"#/jobs/{job}")
    hover = page.evaluate("document.getElementById('curves').data.find(t => t.meta === 'curve').hovertemplate")
    assert "sparsity %{customdata[0]:.1%}" in hover
    assert page.evaluate("document.getElementById('curves').layout.xaxis.tickformat") == ".0%"
    heads = page.eval_on_selector_all("#points-table thead th", "ths => ths.map(t => t.textContent)")
    macs_cell = page.inner_text(f"#points-table tbody tr:first-child td:nth-child({heads.index('MACs') + 1})")
    assert macs_cell == "1.00 M", macs_cell  # the dense model's 1,000,000 MACs
    page.wait_for_selector("#fact-experiment a")
    assert page.inner_text("#fact-experiment") == f"resnet-study (#{exp_id})"
    page.click("#metric-switch [data-metric=loss]")
    page.wait_for_function("location.hash.includes('metric=loss')")
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert page.evaluate("document.getElementById('curves').layout.yaxis.title.text").startswith("loss")
    assert page.evaluate("document.querySelector('#metric-switch .active').dataset.metric") == "loss"


def test_compare_filter_filters_its_table(page, store) -> None:
    """Bug 11: compare's parameter filter applies to the side-by-side table, not only the chart."""
    a, b = insert_sensitivity_job(store, 3, 3, seed=1), insert_sensitivity_job(store, 3, 3, seed=2)
    goto(page, f"#/compare?jobs={a},{b}")
    page.wait_for_selector("#compare-table tbody tr")
    assert page.locator("#compare-table tbody tr").count() == 9
    page.fill("#compare-filter", "layer0.1.")
    page.wait_for_function("document.querySelectorAll('#compare-table tbody tr').length === 3")
    cells = page.eval_on_selector_all("#compare-table tbody td:first-child", "tds => tds.map(t => t.textContent)")
    assert set(cells) == {"layer0.1.conv.weight"}
