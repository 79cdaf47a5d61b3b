"""Native processes for end-to-end and fault tests: `prunescope serve` / `worker` subprocesses, each
logged to a file (shown when a wait times out) and killed by its own pid at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.live import free_port


class Stack:
    """Processes started for one test; each is killed (by its own pid) at the end."""

    def __init__(self, env: dict[str, str], tmp: Path, spec: dict) -> None:
        self.env, self.tmp, self.spec = env, tmp, spec
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{args[0]}-{len(self.procs)}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", *args], env=self.env, stdout=log, stderr=log,
                                cwd=Path(__file__).resolve().parents[2])
        self.procs.append(proc)
        return proc

    def serve(self, *extra: str) -> subprocess.Popen:
        proc = self.start("serve", "--port", str(self.port), "--no-demo", *extra)
        self.wait(lambda: self._up(), 30, "the API to answer")
        return proc

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(self, check: Callable[[], object], timeout: float, what: str) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := check():
                return value
            time.sleep(0.2)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def job(self, job_id: int) -> dict:
        return httpx.get(f"{self.url}/jobs/{job_id}", timeout=10).json()

    def points(self, job_id: int) -> list[dict]:
        return httpx.get(f"{self.url}/jobs/{job_id}/points", timeout=10).json()

    def submit(self, **spec: object) -> int:
        r = httpx.post(f"{self.url}/jobs", json={"kind": "sensitivity", "spec": {**self.spec, **spec}}, timeout=30)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def finished(self, job_id: int, timeout: float = 50) -> dict:
        return self.wait(lambda: (j := self.job(job_id))["status"] in ("succeeded", "failed", "cancelled") and j,
                         timeout, f"job {job_id} to finish")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def embedded_stack(tmp_path: Path, spec: dict) -> Stack:
    """A stack of one embedded server (SQLite under ``tmp_path``, one shard per sweep), whatever this shell's
    environment says about a database, broker or token."""
    env = {**os.environ, "PRUNESCOPE_DATA_DIR": str(tmp_path / "data"), "PRUNESCOPE_SENSITIVITY_SHARDS": "1"}
    for key in ("PRUNESCOPE_DATABASE_URL", "PRUNESCOPE_BROKER_URL", "PRUNESCOPE_TOKEN"):
        env.pop(key, None)
    return Stack(env, tmp_path, spec)
