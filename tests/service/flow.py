"""Jobs through REST v1 in process (a TestClient whose base URL ends in ``/api/v1``): submit one, wait
for it to succeed, download an artifact checked against its stored sha256. Plain helpers for the flow
tests and any other test that runs real jobs on the embedded executor."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from fastapi.testclient import TestClient


def submit(api: TestClient, kind: str, **spec: object) -> int:
    """POST a job of ``kind`` with ``spec``; its id (a 201 is asserted, with the answer shown otherwise)."""
    r = api.post("/jobs", json={"kind": kind, "spec": spec})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def finished(api: TestClient, job_id: int, timeout: float = 50) -> dict:
    """The job once it ends, asserted ``succeeded``; an AssertionError with its state after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {api.get(f'/jobs/{job_id}').json()}")


def download(api: TestClient, artifact: dict, into: Path) -> Path:
    """Fetch an artifact and check its bytes against the sha256 the store recorded."""
    r = api.get(f"/artifacts/{artifact['id']}/download")
    assert r.status_code == 200
    digest = hashlib.sha256(r.content).hexdigest()
    assert digest == artifact["sha256"] == r.headers["x-checksum-sha256"]
    path = into / artifact["name"]
    path.write_bytes(r.content)
    return path
