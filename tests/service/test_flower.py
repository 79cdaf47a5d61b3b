"""Issue 18: workers send task events, so Flower (``celery -A worker.celery_app flower``) started against the
test Redis sees the worker and the shard it ran. Its own Redis database (14), so no other test's events or
queues reach it: Celery's fanout channels are per database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import free_port
from tests.service.stack import Stack
from tests.services import REDIS_HOST, REDIS_PORT, pg_schema_url

pytestmark = pytest.mark.slow  # Flower, an API and a worker as processes, one tiny job: ~20 s here
FLOWER_REDIS = f"redis://{REDIS_HOST}:{REDIS_PORT}/14"
SPEC = {"model": "digits-cnn", "dataset": "digits", "levels": "0,0.5", "params": ["conv1.weight"], "shards": 1}


@pytest.fixture
def stack(pg_database: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    queue = f"prunescope-flower-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PRUNESCOPE_DATABASE_URL": pg_schema_url(pg_database), "PRUNESCOPE_BROKER_URL": FLOWER_REDIS,
           "PRUNESCOPE_DATA_DIR": str(tmp_path / "data"), "PRUNESCOPE_QUEUE": queue,
           "FLOWER_UNAUTHENTICATED_API": "true", "PRUNESCOPE_LOG_FORMAT": "json"}
    stack = Stack(env, tmp_path, SPEC)
    yield stack
    stack.stop()
    import redis

    redis.Redis.from_url(FLOWER_REDIS).delete(queue)


def _flower(stack: Stack, port: int) -> subprocess.Popen:
    log = open(stack.tmp / "flower.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower", f"--port={port}",
                             "--address=127.0.0.1"], env=stack.env, stdout=log, stderr=log,
                            cwd=Path(__file__).resolve().parents[2])
    stack.procs.append(proc)  # killed with the stack
    return proc


def _get(url: str) -> object:
    try:
        r = httpx.get(url, timeout=2)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def test_flower_sees_the_workers_task(stack: Stack) -> None:
    port = free_port()
    _flower(stack, port)
    flower = f"http://127.0.0.1:{port}"
    stack.wait(lambda: _get(f"{flower}/api/tasks") is not None, 60, "Flower to answer")
    stack.serve()
    stack.start("worker")
    job_id = stack.submit()
    assert stack.finished(job_id, timeout=90)["status"] == "succeeded"

    def seen() -> dict | None:
        tasks = _get(f"{flower}/api/tasks") or {}
        done = [t for t in tasks.values() if t.get("name") == "prunescope.run_shard" and t.get("state") == "SUCCESS"]
        return done[0] if done else None

    task = stack.wait(seen, 30, "Flower to see the shard succeed")
    assert str(job_id) in task["args"] and task["worker"].startswith("prunescope-")
    workers = stack.wait(lambda: _get(f"{flower}/api/workers?refresh=1"), 30, "Flower to list the worker")
    assert any(name.startswith("prunescope-") for name in workers)

    # the worker's JSON logs: from the task's start (Celery's prerun) to its end, every record carries the job
    # (Celery's "received" line comes before, when the message arrives, and names the task id only)
    (log,) = stack.tmp.glob("worker-*.log")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    start = next(i for i, r in enumerate(records) if r.get("job_id") == job_id)
    end = next(i for i, r in enumerate(records) if "succeeded in" in r["message"] and task["uuid"] in r["message"])
    of_task = [r for r in records[start:end + 1] if r["thread"] == records[start]["thread"]]  # not other threads
    assert len(of_task) >= 3 and all(r.get("job_id") == job_id and r["shard"] == 0 for r in of_task)
    assert any(r["message"].startswith(f"job {job_id} shard 0") and r["worker"] for r in records[start:end])
