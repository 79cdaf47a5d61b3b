"""A live embedded server for end-to-end tests (browser, client) and benches: ``prunescope serve
--no-demo`` on a free port over its own data dir, as users start it, torn down afterwards."""

from __future__ import annotations

import contextlib
import json
import os
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

ROOT = Path(__file__).resolve().parents[1]


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
    for key in ("PRUNESCOPE_DATABASE_URL", "PRUNESCOPE_BROKER_URL", "PRUNESCOPE_TOKEN", "PRUNESCOPE_URL"):
        env.pop(key, None)
    env.update(extra_env)
    data_dir.mkdir(parents=True, exist_ok=True)
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
