"""Previews and target plans answered in the API process from stored parameter shapes (issue 19).

Workers publish the shapes of architectures, registration stores those of each model, and the API
previews and plans on them with no child process and no torch: the answers equal the helper pool's
(which builds the model), a live server starts no process during a burst, and an upload's shapes are
read torch-free, stored, and checked against its architecture's.
"""

from __future__ import annotations

import io
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.compute import run_helper
from api.routes import planning
from api.shared.settings import Settings
from api.store import make_engine, make_session_factory, repo
from api.store.models import ModelEntry
from pruning_core.models import create_model
from tests.apps import make_app
from tests.live import Server, running_server
from tests.trust.hostile import send_hostile
from worker import facts
from worker.executor import Executor

# AGP on a glob and on a DataParallel-prefixed name (renamed), a fixed-level pruner, StepLR, thinning.
SCHEDULE = """version: 1
pruners:
  agp:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.6
    weights: [module.layer1.0.conv1.weight, "layer2.*.conv2.weight"]
  fixed:
    class: SparsityLevelParameterPruner
    levels: {fc.weight: 0.3}
lr_schedulers:
  step:
    class: StepLR
    step_size: 2
    gamma: 0.5
extensions:
  remover:
    class: FilterRemover
    thinning_func_str: remove_filters
    arch: resnet20_cifar
    dataset: cifar10
policies:
  - pruner: {instance_name: agp}
    starting_epoch: 0
    ending_epoch: 6
    frequency: 2
  - pruner: {instance_name: fixed}
    epochs: [1]
  - lr_scheduler: {instance_name: step}
    starting_epoch: 0
    ending_epoch: 8
    frequency: 1
  - extension: {instance_name: remover}
    epochs: [3]
"""
ARCH = "resnet20-cifar"
FILTERS = """version: 1
pruners:
  filters:
    class: L1RankedStructureParameterPruner
    group_type: Filters
    desired_sparsity: 0.5
    weights: [conv1.weight]
extensions:
  remover:
    class: FilterRemover
    thinning_func_str: remove_filters
    arch: digits-cnn
    dataset: digits
policies:
  - pruner: {instance_name: filters}
    epochs: [0]
  - extension: {instance_name: remover}
    epochs: [1]
"""


def _checkpoint(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def _sensitivity_job(factory: sessionmaker[Session], model: str, params: list[str]) -> int:
    """A succeeded sensitivity job with points for ``params`` at 0, 0.5 and 0.9, written as a worker would."""
    with factory() as s:
        job = repo.create_job(s, kind="sensitivity", spec={"model": model, "dataset": "synthetic",
                                                           "levels": "0,0.5,0.9"})
        s.flush()
        for i, param in enumerate(params):
            for level, drop in ((0.0, 0.0), (0.5, 0.2 + 0.1 * i), (0.9, 3.0 + i)):
                repo.upsert_point(s, job.id, {"parameter": param, "sparsity": level, "top1": 90.0 - drop,
                                              "top5": 99.0, "loss": 0.3 + drop / 100, "group": "element",
                                              "measured": True}, shard=0, worker="test", param_index=i)
        job.status = "succeeded"
        s.commit()
        return job.id


@pytest.fixture
def api(settings) -> Iterator[TestClient]:
    with TestClient(make_app(settings)) as client:
        yield client


def _no_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a preview or plan that reaches for the helper pool fails the test."""
    def refuse(name: str, payload: dict) -> dict:
        raise AssertionError(f"{name} went to the helper pool")

    monkeypatch.setattr(planning, "run_helper", refuse)


def test_describe_and_publish_are_the_models_own(session_factory) -> None:
    model = create_model(ARCH)
    shapes, prunable = facts.describe(model)
    assert shapes == [[n, list(p.shape)] for n, p in model.named_parameters()]
    assert "conv1.weight" in prunable and "bn1.weight" not in prunable and "fc.bias" not in prunable
    assert facts.missing_architectures(session_factory, [ARCH, "digits-cnn"]) == [ARCH, "digits-cnn"]
    assert facts.publish_architectures(session_factory, [ARCH, "digits-cnn"]) == [ARCH, "digits-cnn"]
    assert facts.publish_architectures(session_factory, [ARCH, "digits-cnn"]) == []  # published: skipped
    with session_factory() as s:
        stored = repo.architecture_facts(s, ARCH)
    assert stored is not None
    assert list(stored.shapes.items()) == [(n, tuple(d)) for n, d in shapes] and stored.prunable == prunable


def test_a_runner_publishes_only_fresh_architectures_at_their_catalogue_shape(session_factory) -> None:
    lenet = create_model("lenet-300-100", input_shape=(1, 8, 8))  # sized for digits: not the catalogue's
    facts.publish_from_runner(session_factory, "lenet-300-100", None, lenet, (1, 8, 8))
    facts.publish_from_runner(session_factory, "lenet5", "/some/checkpoint.pt", create_model("lenet5"), (1, 28, 28))
    with session_factory() as s:
        assert repo.architecture_facts(s, "lenet-300-100") is None
        assert repo.architecture_facts(s, "lenet5") is None
    facts.publish_from_runner(session_factory, "lenet5", None, create_model("lenet5"), (1, 28, 28))
    with session_factory() as s:
        assert repo.architecture_facts(s, "lenet5") is not None


def test_in_process_previews_and_plans_equal_the_pools(api: TestClient, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    factory = api.app.state.session_factory
    body = {"yaml": SCHEDULE, "model": ARCH, "lr": 0.2, "epochs": 8}
    pool_arch = run_helper("preview_schedule", {**body, "model": {"arch": ARCH, "checkpoint": None}})
    assert "error" not in pool_arch, pool_arch

    facts.publish_architectures(factory, [ARCH])
    trained = create_model(ARCH)
    with torch.no_grad():
        trained.fc.weight.mul_(3)  # weights of its own, shapes of the architecture
    r = api.post("/api/v1/models", data={"name": "r20", "architecture": "resnet20_cifar"},
                 files={"checkpoint": ("r20.pt", _checkpoint(trained))})
    assert r.status_code == 201, r.text
    with factory() as s:
        entry = s.scalar(select(ModelEntry).where(ModelEntry.name == "r20"))
        assert entry.shapes == facts.describe(trained)[0] and entry.prunable == facts.describe(trained)[1]
        checkpoint = str(api.app.state.settings.data_dir / repo.model_source(s, "r20", Path("."))[1])
    pool_model = run_helper("preview_schedule", {**body, "model": {"arch": ARCH, "checkpoint": checkpoint}})
    params = [n for n, _ in facts.describe(trained)[0] if n.endswith("conv1.weight")]
    job_id = _sensitivity_job(factory, "r20", params)
    plan_body = {"sensitivity_job": job_id, "target_sparsity": 0.05, "epochs": 4}
    with factory() as s:
        points = [dict(r._mapping) for r in s.execute(select(
            *(getattr(planning.SensitivityPointRow, c) for c in ("parameter", "sparsity", "top1", "top5", "loss",
                                                                 "group", "measured")))
            .where(planning.SensitivityPointRow.job_id == job_id).order_by(*planning.POINT_ORDER))]
    pool_plan = run_helper("make_plan", {"points": points, "max_drop": None, "metric": "top1", "epochs": 4,
                                         "one_shot": False, "target_sparsity": 0.05,
                                         "model": {"arch": ARCH, "checkpoint": checkpoint}})
    assert "error" not in pool_plan and pool_plan["overall_sparsity"] >= 0.05, pool_plan

    _no_pool(monkeypatch)
    in_arch = api.post("/api/v1/schedules/preview", json=body)
    in_model = api.post("/api/v1/schedules/preview", json={**body, "model": "r20"})
    in_plan = api.post("/api/v1/plans", json=plan_body)
    assert in_arch.status_code == in_model.status_code == in_plan.status_code == 200, (in_arch.text, in_plan.text)
    assert in_arch.json() == pool_arch and in_model.json() == pool_model
    assert ["module.layer1.0.conv1.weight", "layer1.0.conv1.weight"] in in_arch.json()["renames"]
    assert in_arch.json()["epochs"][-1]["sparsity"]["layer2.0.conv2.weight"] == pytest.approx(0.6)
    assert in_plan.json() == pool_plan
    # a schedule naming a parameter the stored shapes lack is the same located 422, without the pool
    bad = api.post("/api/v1/schedules/preview", json={**body, "yaml": SCHEDULE.replace("fc.weight", "fc9.weight")})
    assert bad.status_code == 422 and "fc9.weight" in bad.text and bad.json()["detail"].startswith("yaml:")


def test_without_torch_unknown_shapes_are_a_409_that_says_how(api: TestClient,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The slim API image: no torch to build with and nothing published -> 409 naming what is missing."""
    _no_pool(monkeypatch)
    monkeypatch.setattr(planning, "_torch_here", lambda: False)
    r = api.post("/api/v1/schedules/preview", json={"yaml": SCHEDULE, "model": "resnet20_cifar"})
    assert r.status_code == 409, r.text
    for needle in ("model:", "no worker has published the shapes of resnet20-cifar", "prunescope worker",
                   "register a model"):
        assert needle in r.json()["detail"], r.text
    job_id = _sensitivity_job(api.app.state.session_factory, ARCH, ["conv1.weight"])
    r = api.post("/api/v1/plans", json={"sensitivity_job": job_id, "target_sparsity": 0.1})
    assert r.status_code == 409 and r.json()["detail"].startswith("target_sparsity: no worker"), r.text
    tolerance = api.post("/api/v1/plans", json={"sensitivity_job": job_id, "max_drop": 1.0})
    assert tolerance.status_code == 200 and tolerance.json()["levels"] == {"conv1.weight": 0.5}, tolerance.text
    facts.publish_architectures(api.app.state.session_factory, [ARCH])
    assert api.post("/api/v1/schedules/preview", json={"yaml": SCHEDULE, "model": ARCH}).status_code == 200
    r = api.post("/api/v1/plans", json={"sensitivity_job": job_id, "target_sparsity": 0.001})
    assert r.status_code == 200 and r.json()["overall_sparsity"] >= 0.001, r.text


# -- a live embedded server ----------------------------------------------------------------------

def _published(server: Server, names: tuple[str, ...] = (ARCH, "digits-cnn")) -> None:
    """Wait for the executor's publisher to write the facts and exit (its process is not a helper)."""
    engine = make_engine(f"sqlite:///{server.data_dir / 'prunescope.db'}")
    factory = make_session_factory(engine)
    deadline = time.monotonic() + 120
    try:
        while True:
            with factory() as s:
                known = repo.published_architectures(s)
            children = psutil.Process(server.process.pid).children(recursive=True)
            if all(n in known for n in names) and not children:
                return
            assert time.monotonic() < deadline, (known, [c.cmdline() for c in children])
            time.sleep(0.3)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("torch-free")) as srv:
        _published(srv)
        yield srv


class ChildWatch:
    """Samples the server's child processes every 10 ms from a thread while a burst runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.seen: set[tuple[int, str]] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def children(self) -> set[tuple[int, str]]:
        found = set()
        for child in self.process.children(recursive=True):
            try:
                found.add((child.pid, " ".join(child.cmdline())))
            except psutil.Error:
                found.add((child.pid, "?"))
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.seen |= self.children()
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
@pytest.mark.slow
def test_30_concurrent_validate_preview_plan_start_no_process(server: Server) -> None:
    engine = make_engine(f"sqlite:///{server.data_dir / 'prunescope.db'}")
    job_id = _sensitivity_job(make_session_factory(engine), ARCH, ["conv1.weight", "layer1.0.conv1.weight",
                                                                   "layer3.2.conv2.weight"])
    engine.dispose()
    kinds = [("/api/v1/schedules/validate", {"yaml": SCHEDULE}),
             ("/api/v1/schedules/preview", {"yaml": SCHEDULE, "model": ARCH, "epochs": 8}),
             ("/api/v1/plans", {"sensitivity_job": job_id, "target_sparsity": 0.02, "epochs": 4}),
             ("/api/v1/plans", {"sensitivity_job": job_id, "max_drop": 1.0, "epochs": 4})]
    bodies = [kinds[i % len(kinds)] for i in range(30)]
    watch = ChildWatch(server.process.pid)
    before = watch.children()

    def timed(client: httpx.Client, path: str, body: dict) -> tuple[httpx.Response, float]:
        start = time.perf_counter()
        response = client.post(path, json=body)
        return response, time.perf_counter() - start

    with watch, httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(30) as ex:
        answers = list(ex.map(lambda b: timed(client, *b), bodies))
    after = watch.children()
    latencies = sorted(seconds for _, seconds in answers)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(f"30 concurrent validate/preview/plan requests, in-process: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; children sampled {watch.samples} times")
    assert [r.status_code for r, _ in answers] == [200] * 30, [r.text[:300] for r, _ in answers if r.status_code != 200]
    assert watch.samples > 0 and before == after == set() and watch.seen == set(), (before, watch.seen, after)
    for (path, body), (r, _) in zip(bodies, answers, strict=True):
        answer = r.json()
        if path.endswith("validate"):
            assert answer["valid"] is True, answer
        elif path.endswith("preview"):
            assert answer["epochs"][-1]["sparsity"]["layer2.0.conv2.weight"] == pytest.approx(0.6)
        elif "target_sparsity" in body:
            assert answer["overall_sparsity"] >= 0.02, answer
        else:
            assert answer["levels"]["conv1.weight"] == 0.5, answer


@pytest.mark.timing  # promises an answer within a time bound: run alone (make test's second phase)
def test_upload_shapes_are_stored_and_another_architecture_is_refused(server: Server) -> None:
    model = create_model(ARCH)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        ok = client.post("/api/v1/models", data={"name": "r20-upload", "architecture": ARCH},
                         files={"checkpoint": ("r20.pt", _checkpoint(model))})
    assert ok.status_code == 201, ok.text
    engine = make_engine(f"sqlite:///{server.data_dir / 'prunescope.db'}")
    with make_session_factory(engine)() as s:
        entry = s.scalar(select(ModelEntry).where(ModelEntry.name == "r20-upload"))
        assert (entry.shapes, entry.prunable) == facts.describe(model)
    engine.dispose()
    other = _checkpoint(create_model("resnet56-cifar"))  # same layer names up to layer1.2, more beyond
    out = send_hostile(server.url, lambda c: c.post("/api/v1/models", data={"name": "wrong", "architecture": ARCH},
                                                    files={"checkpoint": ("r56.pt", other)}))
    out.assert_refused(422, names=("checkpoint:", "resnet20-cifar", "unexpected parameters", "layer1.3.conv1.weight"))
    digits = _checkpoint(create_model("digits-cnn"))
    out = send_hostile(server.url, lambda c: c.post("/api/v1/models", data={"name": "wrong2", "architecture": ARCH},
                                                    files={"checkpoint": ("d.pt", digits)}))
    out.assert_refused(422, names=("checkpoint:", "missing", "layer1.0.conv1.weight", "other shapes",
                                   "conv1.weight"))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/api/v1/models/wrong").status_code == 404


@pytest.mark.slow
def test_a_trained_and_a_thinned_model_are_registered_with_their_own_shapes(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs register models with the shapes of the model they produced; a thinned one's are smaller, and its
    preview is answered on them in-process."""
    from tests.service.flow import finished, submit

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'store.db'}", torch_threads=1)
    with TestClient(create_app(settings, dispatcher=Executor), base_url="http://testserver/api/v1") as api:
        finished(api, submit(api, "train", model="digits-cnn", dataset="digits", epochs=1, batch_size=256,
                             register_as="d-trained"))
        finished(api, submit(api, "prune", model="d-trained", dataset="digits", epochs=2, batch_size=256,
                             schedule=FILTERS, thin=True, register_as="d-thin"), timeout=120)
        factory = api.app.state.session_factory
        with factory() as s:
            trained = repo.model_facts(s, "d-trained")
            thin = repo.model_facts(s, "d-thin")
        assert trained is not None and thin is not None
        fresh = dict((n, tuple(d)) for n, d in facts.describe(create_model("digits-cnn"))[0])
        assert trained.shapes == fresh
        assert list(thin.shapes) == list(fresh) and thin.shapes["conv1.weight"][0] < fresh["conv1.weight"][0]
        _no_pool(monkeypatch)
        r = api.post("/schedules/preview", json={"yaml": FILTERS, "model": "d-thin"})
        assert r.status_code == 200, r.text
        assert [e["sparsity"] for e in r.json()["epochs"]] == [{"conv1.weight": 0.5}] * 2
        assert r.json()["epochs"][1]["thinning"] == ["remover"]
        # uploaded again: a checkpoint that says it was thinned keeps its smaller shapes; one that does
        # not is refused naming them (the loader could not load it as the architecture either)
        facts.publish_architectures(factory, ["digits-cnn"])
        artifact = api.get("/models/d-thin").json()["artifact_id"]
        data = api.get(f"/artifacts/{artifact}/download").content
        refused = api.post("/models", data={"name": "d-thin-bare", "architecture": "digits-cnn"},
                           files={"checkpoint": ("t.pt", data)})
        assert refused.status_code == 422 and "conv1.weight [16, 1, 3, 3] (expected [32, 1, 3, 3])" in refused.text
        saved = torch.load(io.BytesIO(data), weights_only=True)
        saved["metadata"]["thinning_history"] = [["conv1", "filters", [0, 1]]]
        buf = io.BytesIO()
        torch.save(saved, buf)
        upload = api.post("/models", data={"name": "d-thin-again", "architecture": "digits-cnn"},
                          files={"checkpoint": ("t.pt", buf.getvalue())})
        assert upload.status_code == 201, upload.text
        with factory() as s:
            assert repo.model_facts(s, "d-thin-again").shapes == thin.shapes
