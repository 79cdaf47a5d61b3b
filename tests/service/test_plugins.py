"""Architectures from code the operator installs, known to the API through what workers publish (issue 14).

The plugin is a package made by the test (``myplug/__init__.py`` + ``myplug-0.1.dist-info`` with ``METADATA``
and ``entry_points.txt``). In-process tests check the store and the API's rule (a job naming a non-built-in
architecture is accepted only while a live worker publishes it); the live tests put the plugin on a
``prunescope worker``'s PYTHONPATH only (the API never sees it), and run plugin and timm jobs through the service.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api.store import repo
from api.store.models import WorkerCapabilities, utcnow
from pruning_core.names import catalogue
from tests.live import ROOT, running_server
from tests.plugins import TINY_NET, write_plugin
from tests.service.stack import Stack
from tests.services import REDIS_URL, pg_schema_url, require_redis
from tests.trust.hostile import send_hostile
from worker.facts import CapabilityPublisher, capabilities

PLUG = "tiny-plug"
SPEC = {"model": PLUG, "dataset": "synthetic", "dataset_options": {"n": 16}, "levels": "0,0.5", "batch_size": 16,
        "shards": 1}


DATA_PLUG = "tiny-blobs"
#: The plugin's dataset: seeded 1x8x8 samples of 3 classes, the TinyNet's input, with no options but ``n``.
BLOBS = """

def blobs(split, n=12):
    import torch
    from torch.utils.data import TensorDataset

    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    return TensorDataset(torch.randn(int(n), 1, 8, 8, generator=gen), torch.randint(0, 3, (int(n),), generator=gen))
"""


def write_tiny_plugin(root: Path) -> Path:
    """The plugin declaring one architecture, PLUG (TinyNet), and one dataset, DATA_PLUG."""
    return write_plugin(root, TINY_NET + BLOBS, f"[prunescope.models]\n{PLUG} = myplug:build\n\n"
                                                f"[prunescope.datasets]\n{DATA_PLUG} = myplug:blobs\n")


@pytest.fixture
def plugin_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(write_tiny_plugin(tmp_path / "plugin")))
    yield tmp_path / "plugin"
    sys.modules.pop("myplug", None)


def _age(factory: sessionmaker[Session], worker: str, seconds: float) -> None:
    """Make ``worker``'s last refresh ``seconds`` old (a worker that stopped refreshing)."""
    with factory() as s:
        s.execute(update(WorkerCapabilities).where(WorkerCapabilities.worker == worker)
                  .values(refreshed_at=utcnow() - timedelta(seconds=seconds)))
        s.commit()


def _publish(factory: sessionmaker[Session], worker: str, arch: str = PLUG, timm: tuple[str, ...] = ()) -> None:
    with factory() as s:
        repo.publish_capabilities(s, worker, fingerprint="f" * 64, devices=["cpu"], torch_version="2.x",
                                  timm_version=None, timm_models=list(timm),
                                  architectures=[{"name": arch, "source": "plugin", "input_shape": [1, 8, 8],
                                                  "num_classes": 3}])
        s.commit()


def test_published_capabilities_are_live_while_refreshed(session_factory: sessionmaker[Session]) -> None:
    _publish(session_factory, "w1", timm=("timm/resnet18",))
    _publish(session_factory, "w2", arch="other-plug")
    with session_factory() as s:
        assert repo.workers_publishing(s, PLUG, stale_s=30) == ["w1"]
        assert repo.workers_publishing(s, "timm/resnet18", stale_s=30) == ["w1"]
        summary = repo.published_models(s, stale_s=30)
    assert [(a["name"], a["workers"]) for a in summary["architectures"]] == [("other-plug", ["w2"]), (PLUG, ["w1"])]
    assert summary["timm"] == ["timm/resnet18"] and [w["worker"] for w in summary["workers"]] == ["w1", "w2"]
    _age(session_factory, "w1", 31)
    with session_factory() as s:
        assert repo.workers_publishing(s, PLUG, stale_s=30) == []  # stale: not live any more
        assert repo.refresh_capabilities(s, "w1") is True
        s.commit()
        assert repo.workers_publishing(s, PLUG, stale_s=30) == ["w1"]
        repo.withdraw_capabilities(s, "w1")
        s.commit()
        assert repo.workers_publishing(s, PLUG, stale_s=30) == []
        assert repo.refresh_capabilities(s, "w1") is False  # a stopped worker is not revived by a late refresh
        # ... but what it published stays, for a successor with the same fingerprint
        assert repo.capabilities_by_fingerprint(s, "f" * 64).timm_models == ["timm/resnet18"]
    _age(session_factory, "w1", 100)
    _age(session_factory, "w2", 100)
    with session_factory() as s:
        assert repo.forget_stale_capabilities(s, stale_s=50, keep="w3") == 2
        s.commit()
        assert repo.capabilities_by_fingerprint(s, "f" * 64) is None


def _sense(client: TestClient, model: str) -> httpx.Response:
    return client.post("/api/v1/jobs", json={"kind": "sensitivity", "spec": {**SPEC, "model": model}})


def test_api_accepts_a_plugin_only_while_a_live_worker_publishes_it(client: TestClient, plugin_on_path: Path) -> None:
    factory = client.app.state.session_factory
    refused = _sense(client, PLUG)
    assert refused.status_code == 422
    assert all(s in refused.json()["detail"] for s in ("spec.model", repr(PLUG), "0 live worker", "prunescope.models"))
    timm_refused = _sense(client, "timm/resnet18").json()["detail"]
    assert "'timm/resnet18'" in timm_refused and "prunescope[timm]" in timm_refused

    # a real publisher on this process's packages (the plugin is on sys.path), refreshing every 0.2 s
    publisher = CapabilityPublisher(factory, "test-worker", 0.2, capabilities, stale_s=60)
    try:
        assert publisher.published.wait(60)
        assert _sense(client, PLUG).status_code == 201
        assert _sense(client, "timm/resnet18").status_code == 201  # timm is a dev extra: installed here
        served = client.get("/api/v1/architectures").json()
        assert {k: v for k, v in served.items() if k != "published"} == catalogue()  # the frontend's fields
        plug = next(a for a in served["published"]["architectures"] if a["name"] == PLUG)
        assert plug == {"name": PLUG, "source": "plugin", "input_shape": [1, 8, 8], "num_classes": 3,
                        "workers": ["test-worker"]}
        assert "timm/vit_tiny_patch16_224" in served["published"]["timm"]
        assert served["published"]["workers"][0]["devices"][0] == "cpu"
        _age(factory, "test-worker", 3600)  # the thread's next refresh makes it live again
        deadline = time.monotonic() + 10
        while _sense(client, PLUG).status_code != 201:
            assert time.monotonic() < deadline, "the publisher did not refresh its capabilities"
            time.sleep(0.1)
    finally:
        publisher.stop()
    assert _sense(client, PLUG).status_code == 422  # withdrawn at once
    assert len(client.app.state.dispatcher.sent) >= 3
    assert client.get("/api/v1/architectures").json()["published"] == {"architectures": [], "timm": [],
                                                                      "workers": []}


# -- live: serve --broker + a worker with the plugin on its path -----------------------------------------

STALE_S = "6"


def _worker_env(stack: Stack, plugin: Path) -> dict[str, str]:
    return {**stack.env, "PYTHONPATH": os.pathsep.join(p for p in (str(plugin), stack.env.get("PYTHONPATH")) if p)}


def _start_worker(stack: Stack, plugin: Path) -> object:
    api_env = stack.env
    stack.env = _worker_env(stack, plugin)
    try:
        return stack.start("worker")
    finally:
        stack.env = api_env


def _published(stack: Stack) -> dict:
    return httpx.get(f"{stack.url}/architectures", timeout=10).json()["published"]


@pytest.fixture(scope="module")
def plugged(pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """The API (without the plugin) on PostgreSQL + Redis and one worker with the plugin on its PYTHONPATH."""
    require_redis()
    tmp = tmp_path_factory.mktemp("plugged")
    plugin = write_tiny_plugin(tmp / "plugin")
    queue = f"prunescope-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PRUNESCOPE_DATABASE_URL": pg_schema_url(pg_database), "PRUNESCOPE_BROKER_URL": REDIS_URL,
           "PRUNESCOPE_DATA_DIR": str(tmp / "data"), "PRUNESCOPE_HEARTBEAT_STALE_S": STALE_S,
           "PRUNESCOPE_QUEUE": queue}
    stack = Stack(env, tmp, SPEC)
    try:
        stack.serve()
        _start_worker(stack, plugin)
        stack.wait(lambda: any(a["name"] == PLUG for a in _published(stack)["architectures"]), 120,
                   "the worker to publish its plugin architecture")
        yield stack, plugin
    finally:
        stack.stop()
        import redis

        redis.Redis.from_url(REDIS_URL).delete(queue)


def _library_points(plugin: Path) -> dict[tuple[str, float], tuple[float, float, float]]:
    """The same analysis straight from pruning_core in this process (with the plugin importable here)."""
    from pruning_core.datasets import load_dataset, make_loader
    from pruning_core.models import create_model
    from pruning_core.sensitivity import analyze

    sys.path.insert(0, str(plugin))
    try:
        bundle = load_dataset("synthetic", split="test", n=16, shape="1x8x8", classes=3)
        result = analyze(create_model(PLUG), make_loader(bundle, batch_size=16), levels=[0.0, 0.5], device="cpu")
    finally:
        sys.path.remove(str(plugin))
        sys.modules.pop("myplug", None)
    return {(p.parameter, p.sparsity): (p.top1, p.top5, p.loss) for p in result.points}


@pytest.mark.slow
def test_plugin_architecture_is_listed_and_its_job_runs_on_the_worker(plugged: tuple[Stack, Path]) -> None:
    stack, plugin = plugged
    published = _published(stack)
    plug = next(a for a in published["architectures"] if a["name"] == PLUG)
    assert (plug["source"], plug["input_shape"], plug["num_classes"]) == ("plugin", [1, 8, 8], 3)
    assert published["workers"][0]["torch_version"] and "cpu" in published["workers"][0]["devices"]
    job = stack.finished(stack.submit(), timeout=120)
    assert job["status"] == "succeeded", job
    points = {(p["parameter"], p["sparsity"]): (p["top1"], p["top5"], p["loss"]) for p in stack.points(job["id"])}
    assert sorted(points) == [("conv.weight", 0.0), ("conv.weight", 0.5), ("head.weight", 0.0), ("head.weight", 0.5)]
    assert points == _library_points(plugin)


@pytest.mark.slow
@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_plugin_dataset_is_listed_and_its_job_runs_on_the_worker(plugged: tuple[Stack, Path]) -> None:
    stack, plugin = plugged
    listed = {d["name"]: d for d in httpx.get(f"{stack.url}/datasets", timeout=10).json()}
    assert listed[DATA_PLUG]["published_by"] and listed[DATA_PLUG]["task"] == "classification"
    assert listed["text"]["task"] == "language-model" and listed["digits"]["published_by"] is None
    job = stack.finished(stack.submit(dataset=DATA_PLUG, dataset_options={}), timeout=120)
    assert job["status"] == "succeeded", job
    points = {(p["parameter"], p["sparsity"]): (p["top1"], p["samples"]) for p in stack.points(job["id"])}
    from pruning_core.datasets import load_dataset

    sys.path.insert(0, str(plugin))
    try:  # the same samples, loaded here through the same entry point
        assert len(load_dataset(DATA_PLUG, split="test").dataset) == 12
    finally:
        sys.path.remove(str(plugin))
        sys.modules.pop("myplug", None)
    assert sorted(points) == [("conv.weight", 0.0), ("conv.weight", 0.5), ("head.weight", 0.0), ("head.weight", 0.5)]
    assert all(samples == 12 for _, samples in points.values())
    body = {"kind": "sensitivity", "spec": {**SPEC, "dataset": "ghost-data", "dataset_options": {}}}
    outcome = send_hostile(stack.url, lambda c: c.post("/jobs", json=body))
    outcome.assert_refused(422, names=("spec.dataset", "'ghost-data'", "prunescope.datasets"))


@pytest.mark.slow
def test_weights_for_a_plugin_architecture_are_uploaded_and_used(plugged: tuple[Stack, Path]) -> None:
    import io

    import torch

    from pruning_core.models import create_model

    stack, plugin = plugged
    sys.path.insert(0, str(plugin))
    try:
        state = create_model(PLUG, seed=7).state_dict()
    finally:
        sys.path.remove(str(plugin))
        sys.modules.pop("myplug", None)
    buf = io.BytesIO()
    torch.save(state, buf)
    r = httpx.post(f"{stack.url}/models", data={"name": "tiny-weights", "architecture": PLUG},
                   files={"checkpoint": ("tiny.pt", buf.getvalue())}, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["architecture"] == PLUG
    job = stack.finished(stack.submit(model="tiny-weights"), timeout=120)
    assert job["status"] == "succeeded", job
    r = httpx.post(f"{stack.url}/models", data={"name": "ghost-weights", "architecture": "ghost-plug"},
                   files={"checkpoint": ("tiny.pt", buf.getvalue())}, timeout=60)
    assert r.status_code == 422 and "'ghost-plug'" in r.json()["detail"], r.text


@pytest.mark.slow
@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_architecture_no_live_worker_publishes_is_refused_naming_it(plugged: tuple[Stack, Path]) -> None:
    stack, _ = plugged
    body = {"kind": "sensitivity", "spec": {**SPEC, "model": "ghost-plug"}}
    outcome = send_hostile(stack.url, lambda c: c.post("/jobs", json=body))
    outcome.assert_refused(422, names=("spec.model", "'ghost-plug'", "1 live worker", "prunescope.models"))


@pytest.mark.slow
def test_timm_resnet18_and_a_small_vit_run_through_the_service(plugged: tuple[Stack, Path]) -> None:
    pytest.importorskip("timm")
    stack, _ = plugged
    # a worker publishes its plugins and its timm names as it learns them: the fixture waited for the plugin
    stack.wait(lambda: "timm/resnet18" in _published(stack)["timm"], 120, "the worker to publish timm's names")
    cases = {"timm/resnet18": ["conv1.weight", "fc.weight"],
             "timm/vit_tiny_patch16_224": ["patch_embed.proj.weight", "head.weight"]}
    jobs = {model: stack.submit(model=model, params=params, dataset_options={"n": 8, "shape": "3x32x32"},
                                batch_size=8) for model, params in cases.items()}
    for model, job_id in jobs.items():
        job = stack.finished(job_id, timeout=240)
        assert job["status"] == "succeeded", (model, job)
        points = stack.points(job_id)
        assert sorted((p["parameter"], p["sparsity"]) for p in points) == sorted(
            (name, level) for name in cases[model] for level in (0.0, 0.5))
        assert all(p["samples"] == 8 and p["top1"] is not None for p in points), points


@pytest.mark.slow
def test_a_stopping_worker_withdraws_what_it_published(plugged: tuple[Stack, Path]) -> None:
    stack, plugin = plugged
    second = _start_worker(stack, plugin)
    stack.wait(lambda: len(_published(stack)["workers"]) == 2, 120, "the second worker to publish")
    second.send_signal(signal.SIGTERM)  # Celery's warm shutdown
    second.wait(60)
    workers = [w["worker"] for w in _published(stack)["workers"]]
    assert len(workers) == 1 and not workers[0].endswith(f":{second.pid}")  # withdrawn, not left to go stale


@pytest.mark.slow
def test_embedded_server_publishes_what_it_can_build_the_same_way(tmp_path: Path) -> None:
    """The embedded executor learns its capabilities from a child process (the API process imports no torch)
    and refreshes them itself: its plugin is listed, a job on it runs, and a restart publishes again."""
    plugin = write_tiny_plugin(tmp_path / "plugin")
    path = os.pathsep.join((str(ROOT), str(plugin)))
    for attempt in range(2):
        with running_server(tmp_path / "data", PYTHONPATH=path, PRUNESCOPE_HEARTBEAT_STALE_S=STALE_S) as server:
            worker = f"embedded@{socket.gethostname()}:{server.process.pid}"
            deadline = time.monotonic() + 120
            while not any(a["name"] == PLUG and a["workers"] == [worker]
                          for a in server.get("/api/v1/architectures")["published"]["architectures"]):
                assert time.monotonic() < deadline, (server.data_dir / "server.log").read_text()[-3000:]
                time.sleep(0.3)
            if attempt == 0:
                job = server.post("/api/v1/jobs", {"kind": "sensitivity", "spec": SPEC})
                assert server.wait_job(job["id"], timeout_s=120)["status"] == "succeeded"
            published = server.get("/api/v1/architectures")["published"]
            assert [w["worker"] for w in published["workers"]] == [worker]  # the stopped predecessor is not live
            assert "timm/resnet18" in published["timm"]
