"""Dashboard render time of a sensitivity job page in headless Chromium, by job size, in one run.

A live embedded server (``prunescope serve --no-demo`` on a temp data dir) gets synthetic succeeded jobs
of P parameters x 20 levels inserted straight into its store; for each, the page is opened and the
render (curves, heatmap, points table) is timed cold (figures purged first) with performance.now(),
median of ``--repeats``. The budget is one second for 60 x 20. The last line printed is
``{"60x20 cold render / 1 s budget": ratio, "200x20 vs 60x20": ratio, ...}``.

    .venv/bin/python bench/dashboard_render.py [--sizes 10,60,200] [--repeats 5] [--bands]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "browser")]

from dash_helpers import CHROMIUM_ARGS, chromium_path, free_port, insert_sensitivity_job, server_command  # noqa: E402

COLD = """async (bands) => {
    const box = document.getElementById('bands-toggle');
    if (box.checked !== bands) { box.checked = bands; box.dispatchEvent(new Event('change')); }
    await new Promise(r => setTimeout(r, 50));
    Plotly.purge(document.getElementById('curves'));
    Plotly.purge(document.getElementById('heatmap'));
    const t0 = performance.now();
    await window.prunescope.renderSensitivity();
    return performance.now() - t0;
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,60,200", help="parameter counts (x 20 levels)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bands", action="store_true", help="draw the 95%% bands of every parameter too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    exe = chromium_path()
    if exe is None:
        print("no Chromium (set PRUNESCOPE_CHROMIUM)", file=sys.stderr)
        return 2

    from playwright.sync_api import sync_playwright

    from api.shared.settings import Settings
    from api.store import make_engine, make_session_factory

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "PRUNESCOPE_DATA_DIR": tmp, "PYTHONPATH": str(ROOT)}
        env.pop("PRUNESCOPE_TOKEN", None)
        server = subprocess.Popen(server_command(port), cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            engine = make_engine(Settings(data_dir=Path(tmp)).db_url)
            factory = make_session_factory(engine)
            jobs = {n: insert_sensitivity_job(factory, n, 20) for n in sizes}
            engine.dispose()
            results: dict[int, float] = {}
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                for n, job in jobs.items():
                    page.goto(f"{url}/#/jobs/{job}")
                    page.wait_for_function("document.body.dataset.ready === '1'")
                    times = [page.evaluate(COLD, args.bands) for _ in range(args.repeats)]
                    results[n] = statistics.median(times)
                    print(f"{n:4d} parameters x 20 levels: cold render median {results[n]:7.1f} ms "
                          f"(min {min(times):.1f}, max {max(times):.1f})", flush=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=15)
    out: dict[str, float] = {}
    if 60 in results:
        out["60x20 cold render / 1 s budget"] = round(results[60] / 1000, 3)
    for n in sizes:
        if n != 60 and 60 in results:
            out[f"{n}x20 vs 60x20"] = round(results[n] / results[60], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
