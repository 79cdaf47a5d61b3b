"""Helpers for the browser tests (and bench/dashboard_render.py): the live server, Chromium's path,
page navigation, screenshots, synthetic jobs written straight into the store (no runner involved)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.store import repo
from api.store.models import utcnow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
TIMEOUT_MS = 15_000


def chromium_path() -> str | None:
    for candidate in (os.environ.get("PRUNESCOPE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(port: int) -> list[str]:
    """The embedded server as users start it: ``prunescope serve --port N --no-demo``."""
    return [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo"]


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def post(self, path: str, body: dict) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def wait_job(self, job_id: int, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.get(f"/api/v1/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s}s")


@contextlib.contextmanager
def running_server(data_dir: Path, **extra_env: str) -> Iterator[Server]:
    """``prunescope serve --no-demo`` on a free port over ``data_dir``, up once /healthz answers."""
    port = free_port()
    env = {**os.environ, "PRUNESCOPE_DATA_DIR": str(data_dir), "PRUNESCOPE_SENSITIVITY_SHARDS": "1",
           "PYTHONPATH": str(ROOT)}
    for key in ("PRUNESCOPE_DATABASE_URL", "PRUNESCOPE_BROKER_URL", "PRUNESCOPE_TOKEN"):
        env.pop(key, None)
    env.update(extra_env)
    log_path = data_dir / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(server_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer /healthz within 90 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield Server(url, data_dir, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()



def screenshot_dir() -> Path:
    path = Path(os.environ.get("PRUNESCOPE_SCREENSHOTS") or ROOT / "out" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def goto(page: Any, route: str) -> None:
    """Open a hash route (``#/jobs``) and wait until the router says the page has rendered."""
    if page.url.startswith("http"):
        page.evaluate("""r => {
            document.body.dataset.ready = '0';
            if (location.hash === r) window.dispatchEvent(new HashChangeEvent('hashchange'));
            else location.hash = r;
        }""", route)
    else:
        page.goto("/" + route)
    page.wait_for_function("document.body.dataset.ready === '1'")


def shot(page: Any, name: str) -> Path:
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def insert_sensitivity_job(factory: Any, n_params: int = 60, n_levels: int = 20, *, group: str = "element",
                           model: str = "digits-cnn", seed: int = 0) -> int:
    """A succeeded sensitivity job with ``n_params`` x ``n_levels`` points that look like real curves."""
    levels = [round(i / n_levels, 10) for i in range(n_levels)]
    with factory() as session:
        job = repo.create_job(session, kind="sensitivity", shards=1, spec={
            "model": model, "dataset": "digits", "dataset_options": {}, "batch_size": 256, "device": "cpu",
            "split": "test", "group": group, "levels": levels, "params": None, "samples": None,
            "coupled": False, "engine": "fast", "shards": 1})
        now = utcnow()
        job.status, job.started_at, job.finished_at = "succeeded", now, now
        job.progress_done = job.progress_total = n_params * n_levels
        for i in range(n_params):
            name = f"layer{i // 3}.{i % 3}.conv.weight"
            size = 64 * 64 * 9 if i % 2 else 32 * 3 * 9
            fragility = 4 + ((i * 7 + seed) % 11)
            for s in levels:
                top1 = 98.0 - 90.0 / (1 + math.exp(-fragility * (s - 0.75)))
                half = 1.96 * math.sqrt(max(top1 * (100 - top1), 1.0) / 500) / 2
                point = {"parameter": name, "sparsity": s, "top1": top1, "top5": min(100.0, top1 + 1.5),
                         "loss": 0.05 + (98.0 - top1) / 20, "samples": 500, "nnz": size - int(s * size),
                         "top1_low": top1 - half, "top1_high": min(100.0, top1 + half),
                         "top5_low": min(100.0, top1 + 1.5) - half, "top5_high": min(100.0, top1 + 1.5 + half),
                         "group": group, "measured": True}
                if group != "element":
                    # the whole model's MACs with this layer's filters removed (each layer owns a share)
                    share = 1_000_000 * (2 * (i + 1)) / (n_params * (n_params + 1))
                    point["macs"] = int(1_000_000 - share * s)
                    point["params_left"] = int(50_000 - 10_000 * s)
                repo.upsert_point(session, job.id, point, shard=0, worker="synthetic", param_index=i)
        session.commit()
        return job.id
