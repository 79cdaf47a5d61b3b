"""Screenshots of every page of the dashboard at a desktop (1400x900) and a phone (390x844) viewport, in
light mode and the jobs list in dark mode too, saved under ``<screenshots>/pages/`` (``out/screenshots``,
gitignored, or ``$PRUNESCOPE_SCREENSHOTS``) for a person to look at; each page must render without a
JavaScript error or an error card."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from dash_helpers import TIMEOUT_MS, goto, insert_sensitivity_job, screenshot_dir

from api.store import repo
from api.store.models import utcnow

VIEWPORTS = {"desktop": (1400, 900), "phone": (390, 844)}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def seed_pages(store: Any, server: Any) -> dict[str, str]:
    """One of each thing a page shows: a sweep (and a second to compare), a prune job, an experiment."""
    exp = server.post("/api/v1/experiments", {"name": "screenshots", "tags": ["demo"], "description": "every page"})
    sweep, other = insert_sensitivity_job(store, 6, 5, seed=4), insert_sensitivity_job(store, 6, 5, seed=9)
    with store() as s:
        job = repo.create_job(s, kind="prune", experiment_id=exp["id"], spec={
            "model": "digits-cnn", "dataset": "digits", "epochs": 3, "schedule": "version: 1\n"})
        job.status, job.started_at, job.finished_at = "succeeded", utcnow(), utcnow()
        job.progress_done = job.progress_total = 3
        s.flush()
        for epoch in range(3):
            repo.upsert_epoch(s, job.id, epoch, {"train_loss": 0.5 - 0.1 * epoch, "top1": 95 + epoch, "top5": 99.5,
                                                 "loss": 0.2, "lr": 0.01, "sparsity": 0.2 * (epoch + 1)})
        lineage = {"sensitivity_job": sweep, "plan": {"max_drop": 1.0, "metric": "top1"}}
        repo.merge_result(s, job.id, {"baseline": {"top1": 97.0}, "final": {"top1": 97.5}, "sparsity": 0.6,
                                      "lineage": lineage})
        s.commit()
        pruned = job.id
    return {
        "jobs": "#/jobs", "job-sensitivity": f"#/jobs/{sweep}", "job-prune": f"#/jobs/{pruned}",
        "plan": f"#/plan/{sweep}", "compare": f"#/compare?jobs={sweep},{other}", "new-job": "#/new",
        "models": "#/models", "datasets": "#/datasets", "experiments": "#/experiments",
        "experiment": f"#/experiments/{exp['id']}",
    }


def capture(page: Any, folder: Any, name: str, route: str, size: tuple[int, int]) -> Any:
    """Wait for ``route`` to be drawn, check it drew no error card, save a full-page PNG of it."""
    page.wait_for_function("h => document.body.dataset.hash === h && document.body.dataset.ready === '1'", arg=route)
    assert page.locator("#view > .card.error:visible").count() == 0, f"{route}: {page.inner_text('#view')[:300]}"
    path = folder / f"{name}-{size[0]}x{size[1]}.png"
    page.screenshot(path=str(path), full_page=True)
    shot_w, shot_h = png_size(path.read_bytes())
    assert shot_w >= size[0] and shot_h >= size[1], (path, shot_w, shot_h)
    return path


@pytest.mark.slow  # 22 pages, four with plotly charts: about 10 s
def test_every_page_at_desktop_and_phone_size(browser, server, store) -> None:
    routes = seed_pages(store, server)
    folder = screenshot_dir() / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    # one page for all: plotly.js is loaded once, the viewport changes between the passes
    width, height = VIEWPORTS["desktop"]
    context = browser.new_context(base_url=server.url, viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    saved = []
    for width, height in VIEWPORTS.values():
        page.set_viewport_size({"width": width, "height": height})
        for name, route in routes.items():
            goto(page, route)
            saved.append(capture(page, folder, name, route, (width, height)))
    # dark mode, as a returning user who chose it opens the jobs list
    page.evaluate("localStorage.setItem('prunescope.theme', 'dark')")
    goto(page, "#/jobs")
    page.reload()
    for width, height in reversed(VIEWPORTS.values()):
        page.set_viewport_size({"width": width, "height": height})
        saved.append(capture(page, folder, "jobs-dark", "#/jobs", (width, height)))
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    context.close()
    assert not errors, f"JavaScript errors: {errors}"
    assert len(saved) == len(set(saved)) == 2 * (len(routes) + 1)
