"""`prunescope serve` on a fresh data dir: the first-start demo trains digits-cnn and finishes its
sensitivity job within a minute, says where to look, and a second start does not redo it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.seed import DEMO_MODEL
from tests.service.stack import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _serve(data: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNESCOPE_")}
    env["PRUNESCOPE_DATA_DIR"] = str(data)
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait_for(pattern: str, log: Path, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := re.search(pattern, log.read_text()):
            return match
        time.sleep(0.3)
    raise AssertionError(f"no {pattern!r} within {timeout}s in:\n{log.read_text()}")


def test_first_start_demo_finishes_and_is_not_redone(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve-1.log"
    started = time.monotonic()
    server = _serve(data, port, log)
    try:
        assert f"dashboard {base}/" in _wait_for(r"prunescope: dashboard .*\n", log, 20).group(0)
        job_id = int(_wait_for(r"demo: sensitivity job (\d+) submitted", log, 55).group(1))
        while (job := httpx.get(f"{base}/api/v1/jobs/{job_id}", timeout=5).json())["status"] in ("queued", "running"):
            assert time.monotonic() - started < 58, job
            time.sleep(0.3)
        assert job["status"] == "succeeded", job
        points = httpx.get(f"{base}/api/v1/jobs/{job_id}/points", timeout=5).json()
        assert len(points) == 4 * 19  # every conv/linear weight of digits-cnn x Distiller's 19 levels
        model = next(m for m in httpx.get(f"{base}/api/v1/models", timeout=5).json() if m["name"] == DEMO_MODEL)
        assert DEMO_MODEL != "digits-cnn" and job["spec"]["model_kind"] == "registered"  # the architecture stays fresh
        assert model["metrics"]["top1"] >= 97
    finally:
        server.kill()
        server.wait(10)
    log2 = tmp_path / "serve-2.log"
    server = _serve(data, port, log2)
    try:
        _wait_for(rf"demo: done at an earlier start: sensitivity job {job_id} \(succeeded\)", log2, 20)
        assert httpx.get(f"{base}/api/v1/jobs", timeout=5).json()["total"] == 2
    finally:
        server.kill()
        server.wait(10)
