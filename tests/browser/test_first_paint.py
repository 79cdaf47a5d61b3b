"""First paint of a fresh tab, and the API docs served offline.

A fresh tab is a new browser context (empty cache): the jobs page must paint in under a second, which
it cannot while every page loads plotly.js (4.8 MB) before anything is drawn. /docs (Swagger UI) and
/redoc must render from the server's own assets: every request the page makes stays on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from dash_helpers import TIMEOUT_MS, insert_sensitivity_job, screenshot_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# Records when the router first marks a page drawn (data-ready="1"), in the page's own clock.
READY_PROBE = """
new MutationObserver((_, obs) => {
  if (document.body && document.body.dataset.ready === '1') {
    window.__readyAt = performance.now();
    obs.disconnect();
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-ready']});
"""
TIMINGS = """() => {
  const paint = Object.fromEntries(performance.getEntriesByType('paint').map((e) => [e.name, e.startTime]));
  const nav = performance.getEntriesByType('navigation')[0];
  return {first_paint_ms: paint['first-paint'], first_contentful_paint_ms: paint['first-contentful-paint'],
          dom_content_loaded_ms: nav.domContentLoadedEventEnd, ready_ms: window.__readyAt,
          plotly_loaded: typeof window.Plotly !== 'undefined'};
}"""
LOCAL_SCHEMES = ("data", "blob", "about")


@dataclass
class Tab:
    page: Any
    requests: list[str] = field(default_factory=list)  # every request the page made
    left: list[str] = field(default_factory=list)  # those that reached the network for another host (aborted)


def _only_local(tab: Tab) -> Callable[[Any], None]:
    def handle(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).scheme in LOCAL_SCHEMES or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            tab.left.append(url)
            route.abort()

    return handle


@pytest.fixture
def fresh_tab(browser: Any, server: Any) -> Iterator[Tab]:
    """A page in a new context (nothing cached); requests to any other host are recorded and aborted."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    tab = Tab(page)
    errors: list[str] = []
    page.on("request", lambda r: tab.requests.append(r.url))
    context.route("**/*", _only_local(tab))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(READY_PROBE)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _paint(page: Any, route: str) -> dict[str, Any]:
    page.goto("/" + route)
    page.wait_for_function("document.body.dataset.ready === '1' && window.__readyAt !== undefined")
    page.wait_for_function("performance.getEntriesByType('paint').some(e => e.name === 'first-contentful-paint')")
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in page.evaluate(TIMINGS).items()}


def _record(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: {figures}")
    (screenshot_dir() / f"{name}.json").write_text(json.dumps(figures))


def test_jobs_page_first_paint_under_a_second_without_plotly(fresh_tab, store) -> None:
    page, requests = fresh_tab.page, fresh_tab.requests
    insert_sensitivity_job(store, 4, 10, seed=5)  # a row in the table, so the page draws real content
    figures = _paint(page, "#/jobs")
    _record("first_paint_jobs", figures)
    assert page.locator("#view table tbody tr").count() >= 1
    assert not any(u.endswith("/plotly.min.js") for u in requests), "the jobs list draws no chart: no plotly.js"
    assert not figures["plotly_loaded"]
    assert figures["first_contentful_paint_ms"] < 1000, figures


def test_chart_page_loads_plotly_on_demand(fresh_tab, store) -> None:
    page, requests = fresh_tab.page, fresh_tab.requests
    job = insert_sensitivity_job(store, 20, 10, seed=6)
    figures = _paint(page, f"#/jobs/{job}")
    _record("first_paint_job_with_charts", figures)
    assert figures["plotly_loaded"]
    assert sum(u.endswith("/static/plotly.min.js") for u in requests) == 1
    assert page.evaluate("document.getElementById('curves').data.filter(t => t.meta === 'curve').length") == 20
    assert page.locator("#heatmap .hm").count() == 1  # plotly drew the heatmap too


def test_demo_job_page_paints_under_a_second_and_stays_local(fresh_tab, store) -> None:
    """The first-start demo's job (digits-cnn: 4 parameters x Distiller's 19 levels) in a fresh tab: its header
    paints while plotly.js still loads (the charts follow); no request leaves 127.0.0.1."""
    page, requests = fresh_tab.page, fresh_tab.requests
    job = insert_sensitivity_job(store, 4, 19, seed=7)
    figures = _paint(page, f"#/jobs/{job}")
    _record("first_paint_demo_job", figures)
    assert figures["plotly_loaded"] and sum(u.endswith("/static/plotly.min.js") for u in requests) == 1
    assert page.evaluate("window.prunescope.lastRender.points") == 4 * 19
    page.wait_for_load_state("networkidle")
    assert not fresh_tab.left, f"requests that left the machine: {fresh_tab.left}"
    assert figures["first_contentful_paint_ms"] < 1000, figures


def test_swagger_ui_renders_with_no_request_leaving_the_machine(fresh_tab) -> None:
    page, requests = fresh_tab.page, fresh_tab.requests
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path")  # the operations, drawn from openapi.json
    page.wait_for_load_state("networkidle")
    assert page.locator(".swagger-ui .opblock").count() > 10
    assert any(u.endswith("/api/v1/openapi.json") for u in requests)
    assert not fresh_tab.left, f"requests that left the machine: {fresh_tab.left}"


def test_redoc_renders_with_no_request_leaving_the_machine(fresh_tab) -> None:
    page = fresh_tab.page
    page.goto("/redoc")
    page.wait_for_selector(".redoc-wrap .api-content h2")  # operation headings, drawn from openapi.json
    page.wait_for_load_state("networkidle")
    assert any(u.endswith("/api/v1/openapi.json") for u in fresh_tab.requests)
    assert not fresh_tab.left, f"requests that left the machine: {fresh_tab.left}"
