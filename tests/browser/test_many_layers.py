"""A ResNet-56 job (58 weight tensors) on the job page (issue 16): layer search, the N most sensitive layers,
one selection that the curves, heatmap and table share, colours grouped by stage, the heatmap of the drop
from the baseline, the per-layer summary for a tolerance, chart options, and the near-chance warning.

The points are made cheaply: a generated Distiller CSV over ResNet-56's real parameter names, sent through
the import route (no sweep runs)."""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dash_helpers import goto, jobs_cleaned_up, shot

LEVELS = (0.0, 0.3, 0.6, 0.8, 0.9)
RENDERED = "window.prunescope.lastRender"


@pytest.fixture(autouse=True)
def _own_jobs_removed(store, server) -> Iterator[None]:
    with jobs_cleaned_up(store, server.data_dir):
        yield


@pytest.fixture(scope="module")
def resnet56_names(server) -> list[str]:
    """ResNet-56's conv and linear weights in model order, as a runner would analyse them: what the server's
    worker published at start (GET /shapes), waited for a little on a busy machine."""
    deadline = time.monotonic() + 30
    while (r := httpx.get(f"{server.url}/api/v1/shapes", params={"model": "resnet56-cifar"}, timeout=10)).status_code \
            == 404 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert r.status_code == 200, r.text
    names = r.json()["prunable"]
    assert len(names) == 58 and names[0] == "conv1.weight" and names[-1] == "fc.weight"
    return names


def top1_of(index: int, sparsity: float, baseline: float) -> float:
    """A curve per layer: some layers (every 7th, and the first and last) much more fragile than the rest."""
    fragile = index % 7 == 0 or index in (0, 57)
    knee, steep = (0.35, 14.0) if fragile else (0.75 + 0.002 * index, 9.0)
    return round(baseline - (baseline - 10.0) / (1 + math.exp(-steep * (sparsity - knee))) +
                 (baseline - 10.0) / (1 + math.exp(steep * knee)), 4)


def distiller_csv(names: list[str], baseline: float) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["parameter", "sparsity", "top1", "top5", "loss"])
    for i, name in enumerate(names):
        for s in LEVELS:
            top1 = top1_of(i, s, baseline)
            writer.writerow([name, s, top1, min(100.0, top1 + 5), round(0.3 + (baseline - top1) / 20, 5)])
    return out.getvalue()


def import_csv(server, text: str) -> int:
    r = httpx.post(f"{server.url}/api/v1/jobs/import/csv", files={"csv": ("sensitivity.csv", text.encode())},
                   data={"model": "resnet56-cifar", "dataset": "synthetic"}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def resnet56_job(server, resnet56_names) -> int:
    return import_csv(server, distiller_csv(resnet56_names, 93.0))


def shown(page) -> dict:
    return page.evaluate(f"{RENDERED}.shown")


@pytest.mark.slow
def test_resnet56_layers_searched_ranked_selected_summarised(page, resnet56_job, resnet56_names,
                                                             tmp_path: Path) -> None:
    """One page load, every many-layer view in turn (each check leaves the page as it found it)."""
    page.set_viewport_size({"width": 1400, "height": 900})
    goto(page, f"#/jobs/{resnet56_job}")
    assert page.evaluate(f"{RENDERED}.parameters") == 58
    assert shown(page)["curves"] == resnet56_names  # model order
    assert not page.is_checked("#bands-toggle")  # 58 bands would hide the curves
    assert page.is_hidden("#chance-warning")  # 93 % on 10 classes is a trained model
    shot(page, "resnet56-job-1400x900")

    # colours: one hue per stage, no two layers alike
    colours = page.evaluate("Object.fromEntries(document.getElementById('curves').data"
                            ".filter(t => t.meta === 'curve').map(t => [t.name, t.line.color]))")
    assert len(set(colours.values())) == 58
    hue = {n: int(re.match(r"hsl\((\d+)", c).group(1)) for n, c in colours.items()}
    for stage in ("layer1.", "layer2.", "layer3."):
        assert len({hue[n] for n in resnet56_names if n.startswith(stage)}) == 1, stage
    assert len({hue[n] for n in resnet56_names if n.startswith("layer")}) == 3

    # the per-layer summary: the highest level whose drop stays within the tolerance, sizes from the shapes
    page.fill("#summary-tolerance", "1")
    page.wait_for_function("window.prunescope.lastSummary.tolerance === 1")
    rows = page.evaluate("window.prunescope.lastSummary.rows")
    assert [r["name"] for r in rows] == resnet56_names
    for i, r in enumerate(rows):
        assert r["level"] == max(s for s in LEVELS if 93.0 - top1_of(i, s, 93.0) <= 1 + 1e-9), r
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert {r["name"]: r["size"] for r in rows}["fc.weight"] == 64 * 10
    page.click("#layer-summary th[data-sort=level]")
    levels = [float(t.rstrip("%")) for t in page.eval_on_selector_all(
        "#layer-summary tbody td:nth-child(2)", "tds => tds.map(t => t.textContent)")]
    assert levels == sorted(levels, reverse=True) and levels[0] > levels[-1]
    page.fill("#summary-tolerance", "20")
    page.wait_for_function("window.prunescope.lastSummary.tolerance === 20")
    by_name = {r["name"]: r["level"] for r in rows}
    looser = page.evaluate("window.prunescope.lastSummary.rows")
    assert all(r["level"] >= by_name[r["name"]] for r in looser) and \
        sum(r["level"] for r in looser) > sum(by_name.values())

    # the search: a substring, then a wildcard; curves, heatmap and table show the same layers
    page.fill("#layer-search", "layer2.")
    page.wait_for_function(f"{RENDERED}.parameters === 19")
    wanted = [n for n in resnet56_names if "layer2." in n]
    assert shown(page) == {"curves": wanted, "heatmap": wanted, "table": wanted}
    assert page.evaluate("document.getElementById('heatmap').data[0].y") == wanted
    assert page.inner_text("#shown-count") == "19 of 58 layers shown"
    page.fill("#layer-search", "layer3.*.conv1")
    page.wait_for_function(f"{RENDERED}.parameters === 9")
    assert shown(page)["table"] == [n for n in resnet56_names if re.fullmatch(r"layer3\.\d+\.conv1\.weight", n)]
    page.fill("#layer-search", "")

    # the N most sensitive (mean drop over the levels), then a legend click that hides one in every view
    page.select_option("#top-n", "5")
    page.wait_for_function(f"{RENDERED}.parameters === 5")
    mean_drop = {n: sum(93.0 - top1_of(i, s, 93.0) for s in LEVELS) / len(LEVELS) for i, n in enumerate(resnet56_names)}
    top5 = sorted(resnet56_names, key=lambda n: -mean_drop[n])[:5]
    view = shown(page)
    assert set(view["curves"]) == set(top5) and view["curves"] == view["heatmap"] == view["table"]
    assert "top=5" in page.evaluate("location.hash")
    hidden = view["curves"][0]
    page.locator("#curves .legend .traces").first.click()
    page.wait_for_function(f"!{RENDERED}.shown.heatmap.includes({hidden!r})")
    view = shown(page)
    assert hidden not in view["table"] and hidden not in view["curves"] and len(view["heatmap"]) == 4
    assert page.evaluate(f"document.getElementById('curves').data.find(t => t.name === {hidden!r}).visible") == \
        "legendonly"  # still in the legend, to bring back
    assert page.locator(f"#points-table tbody tr[data-param='{hidden}']").count() == 0
    page.select_option("#top-n", "0")

    # the heatmap of the drop from the baseline
    page.fill("#layer-search", "layer2.0.")
    page.wait_for_function(f"{RENDERED}.parameters === 3")
    page.click("#heat-mode [data-mode=drop]")
    page.wait_for_function("document.getElementById('heatmap').data[0].meta === 'drop'")
    z = page.evaluate("document.getElementById('heatmap').data[0].z")
    names = page.evaluate("document.getElementById('heatmap').data[0].y")
    assert all(row[0] == 0 for row in z)  # no drop at the dense level
    i = resnet56_names.index(names[0])
    assert z[0][3] == pytest.approx(93.0 - top1_of(i, 0.8, 93.0), abs=1e-6)
    assert "drop" in page.evaluate("document.getElementById('heatmap').data[0].colorbar.title.text")
    assert "heat=drop" in page.evaluate("location.hash")

    # chart options: a fixed 0-100 % axis, a log axis for loss, the shown data and the SVG exported
    page.check("#fixed-axis")
    page.wait_for_function("document.getElementById('curves').layout.yaxis.range?.[1] === 100")
    assert page.evaluate("document.getElementById('curves').layout.yaxis.range") == [0, 100]
    page.click("#metric-switch [data-metric=loss]")
    page.check("#log-y")
    page.wait_for_function("document.getElementById('curves').layout.yaxis.type === 'log'")
    with page.expect_download() as info:
        page.click("#export-data")
    path = tmp_path / "shown.csv"
    info.value.save_as(path)
    exported = list(csv.DictReader(path.open()))
    assert {r["parameter"] for r in exported} == set(names) and len(exported) == 3 * len(LEVELS)
    with page.expect_download() as info:
        page.click("#export-svg")
    svg = tmp_path / "curves.svg"
    info.value.save_as(svg)
    assert svg.read_text().lstrip().startswith("<svg")


def test_a_baseline_near_chance_is_called_out(page, server, resnet56_names) -> None:
    """A random-weight model (7 % top1 on 10 classes) gets a warning; a trained one (93 %) none."""
    random_weights = import_csv(server, distiller_csv(resnet56_names[:4], 7.0))
    goto(page, f"#/jobs/{random_weights}")
    page.wait_for_selector("#chance-warning:not([hidden])")
    text = page.inner_text("#chance-warning")
    assert "7.0 %" in text and "10 classes" in text and "meaningless" in text
    trained = import_csv(server, distiller_csv(resnet56_names[:4], 93.0))
    goto(page, f"#/jobs/{trained}")
    assert page.is_hidden("#chance-warning")
    page.set_viewport_size({"width": 390, "height": 844})
    goto(page, f"#/jobs/{random_weights}")
    shot(page, "chance-warning-390x844")
