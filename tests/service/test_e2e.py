"""End to end with native processes: the API, `prunescope worker`s, PostgreSQL and Redis (or the
embedded server on SQLite). Small on purpose: resnet20-cifar on 32 synthetic samples, two levels."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.stack import Stack, embedded_stack
from tests.services import pg_schema_url

pytestmark = pytest.mark.slow
PARAMS = ["conv1.weight", "layer1.*.conv*.weight", "layer3.2.conv2.weight", "fc.weight"]
SPEC = {"model": "resnet20-cifar", "dataset": "synthetic", "dataset_options": {"n": 32}, "levels": "0,0.5",
        "batch_size": 32, "params": PARAMS}
LAYERS = 9  # the weights PARAMS selects
EXPECTED = LAYERS * 2


@pytest.fixture
def distributed(pg_database: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    queue = f"prunescope-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PRUNESCOPE_DATABASE_URL": pg_schema_url(pg_database), "PRUNESCOPE_BROKER_URL": redis_url,
           "PRUNESCOPE_DATA_DIR": str(tmp_path / "data"), "PRUNESCOPE_HEARTBEAT_STALE_S": "4",
           "PRUNESCOPE_QUEUE": queue, "PRUNESCOPE_SENSITIVITY_SHARDS": "4"}
    stack = Stack(env, tmp_path, SPEC)
    yield stack
    stack.stop()
    import redis

    redis.Redis.from_url(redis_url).delete(queue)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    stack = embedded_stack(tmp_path, SPEC)
    yield stack
    stack.stop()


def _library_points() -> dict[tuple[str, float], tuple[float, float, float]]:
    """The same analysis straight from pruning_core, in this process."""
    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.models import create_model
    from pruning_core.sensitivity import analyze

    bundle = load_dataset("synthetic", split="test", n=32, shape="3x32x32", classes=10)
    result = analyze(create_model("resnet20-cifar"), make_loader(bundle, batch_size=32), levels=[0.0, 0.5],
                     params=PARAMS, device="cpu")
    return {(p.parameter, p.sparsity): (p.top1, p.top5, p.loss) for p in result.points}


def _assert_complete(points: list[dict]) -> None:
    keys = [(p["parameter"], p["sparsity"]) for p in points]
    assert len(keys) == EXPECTED and len(set(keys)) == EXPECTED


def test_two_workers_share_a_job_and_match_the_library(distributed: Stack) -> None:
    distributed.serve()
    workers = [distributed.start("worker") for _ in range(2)]
    job_id = distributed.submit()
    job = distributed.finished(job_id)
    assert job["status"] == "succeeded", job
    points = distributed.points(job_id)
    _assert_complete(points)
    shards = distributed.job(job_id)["shards"]
    pids = {int(s["worker"].split(":")[1]) for s in shards}
    assert pids == {w.pid for w in workers}, "both workers should have run shards"
    library = _library_points()
    assert {(p["parameter"], p["sparsity"]): (p["top1"], p["top5"], p["loss"]) for p in points} == library


def test_sigkill_a_worker_mid_job(distributed: Stack) -> None:
    distributed.serve()
    workers = {w.pid: w for w in (distributed.start("worker"), distributed.start("worker"))}
    job_id = distributed.submit(shards=2)

    def victim() -> int | None:
        running = [s for s in distributed.job(job_id)["shards"] if s["status"] == "running" and s["worker"]]
        return int(running[0]["worker"].split(":")[1]) if running and distributed.points(job_id) else None

    pid = distributed.wait(victim, 40, "a shard to be running with points stored")
    os.kill(pid, signal.SIGKILL)
    workers[pid].wait(10)
    job = distributed.finished(job_id, timeout=55)
    assert job["status"] == "succeeded", job
    _assert_complete(distributed.points(job_id))


def test_restart_embedded_server_mid_job(embedded: Stack) -> None:
    server = embedded.serve()
    job_id = embedded.submit()
    embedded.wait(lambda: len(embedded.points(job_id)) >= 3, 40, "some points")
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    embedded.serve()
    job = embedded.finished(job_id)
    assert job["status"] == "succeeded", job
    _assert_complete(embedded.points(job_id))


def test_cancel_a_running_job_keeps_its_points(embedded: Stack) -> None:
    embedded.serve()
    job_id = embedded.submit()
    embedded.wait(lambda: len(embedded.points(job_id)) >= 2, 40, "some points")
    started = time.monotonic()
    assert httpx.post(f"{embedded.url}/jobs/{job_id}/cancel", timeout=10).status_code == 200
    job = embedded.finished(job_id, timeout=10)
    assert job["status"] == "cancelled" and time.monotonic() - started < 5
    kept = embedded.points(job_id)
    assert 2 <= len(kept) < EXPECTED
    time.sleep(1)
    assert embedded.points(job_id) == kept
